"""Database loss: PostgreSQL cut under ingestion answers 503 with Retry-After; retried batches lose nothing."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from engagement.models import InteractionEvent
from tests.faults.conftest import batches_of, make_events, needs_postgres_and_redis, session_for

CLIENTS = 4
BATCHES_PER_CLIENT = 15
BATCH = 200
OUTAGE_SECONDS = 6
RETRY_PAUSE_SECONDS = 0.2  # the client's pause before resending (Retry-After says 5 s; compressed here)

pytestmark = [
    pytest.mark.postgres,
    needs_postgres_and_redis("a database server to cut"),
    pytest.mark.usefixtures("transactional_db"),
]


class RetryingClient(threading.Thread):
    """Send each batch until it gets a 200, resending the same batch on a 503 or a dropped connection."""

    def __init__(self, url: str, key: str, batches: list[list[dict]], log: list) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.batches, self.log = url, key, batches, log

    def run(self) -> None:
        with session_for(self.key) as session:
            for batch in self.batches:
                while True:
                    at = time.monotonic()
                    try:
                        response = session.post(self.url, json={"events": batch}, timeout=60)
                    except requests.ConnectionError as exc:
                        self.log.append((at, None, None, len(batch), repr(exc), time.monotonic()))
                        time.sleep(RETRY_PAUSE_SECONDS)
                        continue
                    body = response.json() if response.headers.get("Content-Type") == "application/json" else None
                    self.log.append(
                        (at, response.status_code, response.headers.get("Retry-After"), len(batch), body, time.monotonic())
                    )
                    if response.status_code == 200:
                        break
                    time.sleep(RETRY_PAUSE_SECONDS)


def test_a_database_cut_during_ingestion_answers_503_with_retry_after_and_retried_batches_lose_nothing(
    app_server, db_proxy, shop_key, figure
):
    url = f"{app_server.url}/api/v1/events/"
    events = make_events(CLIENTS * BATCHES_PER_CLIENT * BATCH, seed=4)
    batches = batches_of(events, BATCH)
    log: list[tuple] = []
    clients = [RetryingClient(url, shop_key, batches[n::CLIENTS], log) for n in range(CLIENTS)]
    for client in clients:
        client.start()
    while sum(1 for entry in log if entry[1] == 200) < CLIENTS * 2:  # ingesting for real first
        time.sleep(0.05)

    db_proxy.cut()
    cut_at = time.monotonic()
    with session_for(shop_key) as session:
        time.sleep(1)
        readyz = requests.get(f"{app_server.url}/readyz", timeout=10)
        recommendations = session.get(f"{app_server.url}/api/v1/recommendations/c-1/", timeout=10)
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - cut_at)))
    restored_at = time.monotonic()  # before: a request sent while restore() runs may already get through
    db_proxy.restore()
    for client in clients:
        client.join(timeout=120)

    stored = InteractionEvent.objects.count()
    statuses = [status for _, status, *_ in log]
    # Sent after the cut and answered before the restore: the database was away for the
    # whole request. (A request sent just before the restore may reach the database after
    # it, under load hundreds of ms later, and rightly succeed.)
    during = [status for at, status, *_, done in log if cut_at <= at and done < restored_at]
    first_200 = min((at for at, status, *_ in log if status == 200 and at >= restored_at), default=None)
    short_200 = [b for _, status, _, size, b, _ in log if status == 200 and b["accepted"] + b["duplicates"] != size]
    figure(
        "database_loss", sent=len(events), distinct=len(events), stored=stored, lost=len(events) - stored,
        requests=len(log), answered_503=statuses.count(503), no_answer=statuses.count(None),
        **{"5xx_not_503": sum(s is not None and s >= 500 and s != 503 for s in statuses)},
        other=sum(s not in (200, 503, None) for s in statuses), requests_during_outage=len(during),
        ok_during_outage=during.count(200), outage_s=round(restored_at - cut_at, 1),
        recovery_s=round(first_200 - restored_at, 2) if first_200 else None,
        readyz_during=readyz.status_code, recommendations_during=recommendations.status_code,
    )  # fmt: skip
    assert not any(client.is_alive() for client in clients), "a client never got its batch stored"
    assert set(statuses) <= {200, 503, None}, app_server.log_tail()
    assert statuses.count(503) > 0 and during.count(200) == 0  # the cut was felt, and nothing claimed success
    assert all(retry == "5" for _, status, retry, *_ in log if status == 503)
    assert short_200 == []  # no 200-with-loss: a 200 counts every event of its batch
    assert stored == len(events)  # after retries: every distinct event, once
    assert readyz.status_code == 503 and readyz.json()["database"] != "ok"
    assert recommendations.status_code == 503 and recommendations.headers["Retry-After"] == "5"
