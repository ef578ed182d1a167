"""Broker loss: Redis cut for 30 s under ingestion and serving; nothing lost, nothing 5xx, scoring catches up."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from django.db.models import Sum

from engagement.models import Engagement, InteractionEvent
from recsite.celery import app
from tests.celery_worker import start_worker, stop_process
from tests.faults.conftest import (
    Load,
    batches_of,
    make_catalog,
    make_events,
    make_version,
    needs_postgres_and_redis,
    session_for,
    start_beat,
    stop,
    wait_until_every_worker_serves,
)
from training.services import model_version_promote

# The number. The whole module takes about this plus 25 s.
BROKER_OUTAGE_SECONDS = 30
FOLD_EVERY_SECONDS = 2  # beat's fold period here (production: 60 s)
CATCH_UP_TIMEOUT_SECONDS = 60
QUEUE = "faults-broker"
CUSTOMERS, PRODUCTS = 300, 120

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.worker,
    needs_postgres_and_redis("a Redis server to cut"),
    pytest.mark.usefixtures("transactional_db"),
]


def folded_everything() -> bool:
    folded = Engagement.objects.aggregate(n=Sum("event_count"))["n"] or 0
    return folded == InteractionEvent.objects.count()


def wait_for(condition, *, timeout: float, what: str, logs=()) -> float:
    """Poll ``condition`` (another process's work); return the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            tails = "\n\n".join(f"{path.name}:\n{path.read_text()[-3000:]}" for path in logs)
            pytest.fail(f"Timed out after {timeout} s waiting for {what}.\n{tails}")
        time.sleep(0.2)
    return time.monotonic() - started


class Ingest(threading.Thread):
    """Send new batches back to back until stopped; record each answer."""

    def __init__(self, url: str, key: str, batches: list[list[dict]]) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.batches = url, key, batches
        self.answers: list[tuple[int | None, int]] = []  # (status, accepted)
        self.sent: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with session_for(self.key) as session:
            for batch in self.batches:
                if self.stop.is_set():
                    return
                self.sent += batch
                try:
                    response = session.post(self.url, json={"events": batch}, timeout=60)
                except requests.ConnectionError:
                    self.answers.append((None, 0))
                    continue
                accepted = response.json().get("accepted", 0) if response.status_code == 200 else 0
                self.answers.append((response.status_code, accepted))
                time.sleep(0.05)


def test_a_redis_outage_loses_no_event_keeps_the_api_answering_and_scoring_catches_up(
    app_server, app_env, redis_proxy, shop_key, tmp_path, figure
):
    customers, products = make_catalog(customers=CUSTOMERS, products=PRODUCTS)
    version = make_version(customer_ids=customers, product_ids=products, seed=5)
    model_version_promote(version_id=version.pk, actor="faults")
    app.control.purge()
    worker_log, beat_log = tmp_path / "worker.log", tmp_path / "beat.log"
    worker = start_worker(log_path=worker_log, queues=f"celery,{QUEUE}", hostname=f"{QUEUE}@%h", env=app_env())
    beat = start_beat(
        log_path=beat_log,
        env=app_env(RECSITE_FOLD_EVERY_SECONDS=str(FOLD_EVERY_SECONDS), RECSITE_SWEEP_EVERY_SECONDS="3600"),
    )
    try:
        url = f"{app_server.url}/api/v1/events/"
        with session_for(shop_key) as session:
            assert session.post(url, json={"events": make_events(500, seed=50)}, timeout=60).status_code == 200
        wait_for(folded_everything, timeout=60, what="beat and the worker to fold the first events",
                 logs=(worker_log, beat_log))  # fmt: skip

        ingest = Ingest(url, shop_key, batches_of(make_events(200 * 400, seed=51), 200))
        urls = [f"{app_server.url}/api/v1/recommendations/c-{i}/" for i in range(0, CUSTOMERS, 7)]
        wait_until_every_worker_serves(app_server, urls, shop_key, version.pk)
        urls += [f"{app_server.url}/api/v1/products/popular/", f"{app_server.url}/api/v1/recommendations/nobody/"]
        with Load(urls, shop_key, clients=2, rate=40) as serving:
            ingest.start()
            time.sleep(2)
            redis_proxy.cut()
            cut_at = time.monotonic()
            time.sleep(1)
            readyz = requests.get(f"{app_server.url}/readyz", timeout=10)
            time.sleep(BROKER_OUTAGE_SECONDS - (time.monotonic() - cut_at))
            restored_at = time.monotonic()
            redis_proxy.restore()
            time.sleep(3)
            ingest.stop.set()
            ingest.join()
        catch_up_s = wait_for(folded_everything, timeout=CATCH_UP_TIMEOUT_SECONDS, what="the fold to catch up",
                              logs=(worker_log, beat_log))  # fmt: skip
        probe = app.tasks["celery.accumulate"].apply_async(args=["back"], queue=QUEUE)
        probe_answer = probe.get(timeout=30)  # this worker, through the proxy, reconnected
    finally:
        stop(beat)
        stop_process(worker)

    during = [a for a in serving.answers if cut_at <= a.started < restored_at]
    statuses = serving.statuses()
    ingest_statuses = [status for status, _ in ingest.answers]
    stored = InteractionEvent.objects.count()
    sent = 500 + len(ingest.sent)
    strategies = {}
    for answer in serving.answers:
        if answer.body and "strategy" in answer.body:
            strategies[answer.body["strategy"]] = strategies.get(answer.body["strategy"], 0) + 1
    figure(
        "broker_loss", outage_s=round(restored_at - cut_at, 1), events_sent=sent, stored=stored, lost=sent - stored,
        ingest_requests=len(ingest_statuses), ingest_non_200=sum(s != 200 for s in ingest_statuses),
        serving_requests=len(serving.answers), serving_during_outage=len(during),
        serving_non_200=sum(n for s, n in statuses.items() if s != "200"),
        **{"5xx": sum(n for s, n in statuses.items() if s.startswith("5")) + sum(
            s is not None and s >= 500 for s in ingest_statuses)},
        model_answers=strategies.get("model", 0), popular_answers=strategies.get("popular", 0),
        serving_p99_ms=serving.latency_ms(0.99), readyz_during=readyz.status_code,
        catch_up_s=round(catch_up_s, 1), fold_every_s=FOLD_EVERY_SECONDS,
    )  # fmt: skip
    assert set(ingest_statuses) == {200}, app_server.log_tail()
    assert stored == sent  # ingestion never needed the broker
    assert statuses == {"200": len(serving.answers)}, (statuses, app_server.log_tail())
    assert len(during) > BROKER_OUTAGE_SECONDS  # the API was asked, and answered, all through the outage
    model_answers = [a for a in serving.answers if (a.body or {}).get("strategy") == "model"]
    assert all(a.body["model_version"] == version.pk for a in model_answers)
    assert probe_answer == ["back"]
    # Still ready (the API serves without the broker), and says what is missing.
    assert readyz.status_code == 200 and readyz.json()["status"] == "degraded" and readyz.json()["broker"] != "ok"
