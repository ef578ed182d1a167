"""The unique index, not a read-then-write, decides duplicates: concurrent clients store each event once."""

import random
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from engagement.models import InteractionEvent, ShopApiKey

EVENTS = 10_000
BATCH = 1_000
CLIENTS = 4


def make_batches() -> list[list[dict]]:
    rng = random.Random(3)
    events = [
        {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "customer": f"c-{rng.randrange(300)}",
            "product": f"p-{rng.randrange(120)}",
            "hover_ms": rng.randrange(5_000),
            "dwell_ms": rng.randrange(60_000),
            "clicked": rng.random() < 0.1,
            "occurred_at": "2026-11-01T12:00:00Z",
        }
        for _ in range(EVENTS)
    ]
    return [events[i : i + BATCH] for i in range(0, EVENTS, BATCH)]


def send_all(url: str, key: str, batches: list[list[dict]], seed: int) -> list[dict]:
    order = list(range(len(batches)))
    random.Random(seed).shuffle(order)  # each client sends the batches in its own order
    answers = []
    with requests.Session() as session:
        session.headers["Authorization"] = f"Api-Key {key}"
        for index in order:
            response = session.post(url, json={"events": batches[index]}, timeout=60)
            assert response.status_code == 200, response.text
            answers.append(response.json())
    return answers


def test_it_stores_10000_events_once_when_4_clients_send_them_all_at_the_same_time(live_server, transactional_db):
    _, key = ShopApiKey.objects.create_key(name="concurrency")
    url = f"{live_server.url}/api/v1/events/"
    batches = make_batches()

    with ThreadPoolExecutor(CLIENTS) as pool:
        rounds = list(pool.map(lambda seed: send_all(url, key, batches, seed), range(CLIENTS)))
    answers = [answer for client in rounds for answer in client]
    resent = send_all(url, key, batches, seed=99)

    assert sum(a["accepted"] for a in answers) == EVENTS
    assert sum(a["duplicates"] for a in answers) == EVENTS * (CLIENTS - 1)
    assert all(a["rejected"] == [] for a in answers)
    assert sum(a["accepted"] for a in resent) == 0
    assert sum(a["duplicates"] for a in resent) == EVENTS
    assert InteractionEvent.objects.count() == EVENTS
