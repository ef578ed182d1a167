"""Replay: the same 10,000 events sent again, and again from 8 clients at once, store 10,000 rows."""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from engagement.models import Engagement, InteractionEvent
from engagement.services import engagement_fold
from tests.faults.conftest import batches_of, make_events, session_for

EVENTS = 10_000
BATCH = 500
CLIENTS = 8

pytestmark = pytest.mark.usefixtures("transactional_db")


def send_all(url: str, key: str, bodies: list[bytes], *, seed: int | None = None) -> list[tuple[int, dict | None]]:
    """POST every body once (in a shuffled order if ``seed``); return (status, answer) per request."""
    order = list(range(len(bodies)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    answers = []
    with session_for(key) as session:
        session.headers["Content-Type"] = "application/json"
        for index in order:
            response = session.post(url, data=bodies[index], timeout=120)
            answers.append((response.status_code, response.json() if response.status_code == 200 else None))
    return answers


def engagement_snapshot() -> dict:
    return {
        (row.customer_id, row.product_id): (
            row.hover_ms_total, row.dwell_ms_total, row.clicks, row.event_count, row.last_event_at,
            row.hover_decayed, row.dwell_decayed, row.clicks_decayed, row.score,
        )  # fmt: skip
        for row in Engagement.objects.all()
    }


def test_replayed_and_concurrently_resent_events_are_stored_once_and_leave_engagement_unchanged(
    app_server, shop_key, figure
):
    url = f"{app_server.url}/api/v1/events/"
    bodies = [json.dumps({"events": batch}).encode() for batch in batches_of(make_events(EVENTS, seed=1), BATCH)]
    started = time.monotonic()

    first = send_all(url, shop_key, bodies)
    engagement_fold()
    before = engagement_snapshot()
    replay = send_all(url, shop_key, bodies)
    with ThreadPoolExecutor(CLIENTS) as pool:
        concurrent = [a for client in pool.map(lambda n: send_all(url, shop_key, bodies, seed=n), range(CLIENTS))
                      for a in client]  # fmt: skip
    engagement_fold()
    after = engagement_snapshot()

    answers = first + replay + concurrent
    statuses = [status for status, _ in answers]
    stored = InteractionEvent.objects.count()
    changed = sum(before.get(pair) != values for pair, values in after.items()) + len(before.keys() - after.keys())
    figure(
        "replay", sent=EVENTS * (2 + CLIENTS), distinct=EVENTS, stored=stored, lost=EVENTS - stored,
        requests=len(answers), **{"5xx": sum(s >= 500 for s in statuses)}, non_200=sum(s != 200 for s in statuses),
        engagement_rows=len(after), engagement_rows_changed=changed, seconds=round(time.monotonic() - started, 1),
    )  # fmt: skip
    assert set(statuses) == {200}, app_server.log_tail()
    assert sum(a["accepted"] for _, a in first) == EVENTS
    assert sum(a["accepted"] for _, a in replay + concurrent) == 0
    assert sum(a["duplicates"] for _, a in replay + concurrent) == EVENTS * (1 + CLIENTS)
    assert all(a["conflicts"] == [] and a["rejected"] == [] for _, a in answers)
    assert stored == EVENTS
    assert before and after == before
