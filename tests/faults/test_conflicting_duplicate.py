"""Conflicting duplicates: an event_id resent with another payload keeps its first version, reported and logged."""

from __future__ import annotations

import threading

import pytest

from engagement.models import InteractionEvent
from tests.faults.conftest import make_events, session_for

EVENTS = 500
CHANGED_EVERY = 5  # one resent event in 5 carries another payload

pytestmark = pytest.mark.usefixtures("transactional_db")


def stored_payloads() -> dict[str, tuple]:
    rows = InteractionEvent.objects.values_list(
        "event_id", "customer__external_id", "product__external_id", "hover_ms", "dwell_ms", "clicked"
    )
    return {str(event_id): tuple(payload) for event_id, *payload in rows}


def payload(event: dict) -> tuple:
    return (event["customer"], event["product"], event["hover_ms"], event["dwell_ms"], event["clicked"])


def changed(event: dict) -> dict:
    return {**event, "dwell_ms": event["dwell_ms"] + 1, "customer": event["customer"] + "-other"}


def test_an_event_id_resent_with_another_payload_keeps_the_first_version_and_is_reported(app_server, shop_key, figure):
    url = f"{app_server.url}/api/v1/events/"
    events = make_events(EVENTS, seed=2)
    resent = [changed(e) if i % CHANGED_EVERY == 0 else e for i, e in enumerate(events)]
    expected = [{"index": i, "event_id": e["event_id"]} for i, e in enumerate(events) if i % CHANGED_EVERY == 0]
    logged_before = app_server.log_path.read_text().count("conflicting duplicate")

    with session_for(shop_key) as session:
        first = session.post(url, json={"events": events}, timeout=60)
        stored_first = stored_payloads()
        again = session.post(url, json={"events": resent}, timeout=60)

    # Two clients send two versions of the same new ids at the same time: one version
    # of each is stored, and the other client is told which of its events lost.
    racing = make_events(EVENTS, seed=3)
    versions = {"a": racing, "b": [changed(e) for e in racing]}
    answers: dict[str, dict] = {}
    barrier = threading.Barrier(2)

    def send(name: str) -> None:
        with session_for(shop_key) as session:
            barrier.wait()
            answers[name] = session.post(url, json={"events": versions[name]}, timeout=60).json()

    threads = [threading.Thread(target=send, args=(name,)) for name in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = stored_payloads()
    logged = app_server.log_path.read_text().count("conflicting duplicate") - logged_before

    won = {name: sum(stored[e["event_id"]] == payload(e) for e in versions[name]) for name in versions}
    lost = {name: {c["index"] for c in answers[name]["conflicts"]} for name in versions}
    figure(
        "conflicting_duplicate", sent=EVENTS * 4, stored=InteractionEvent.objects.count(), conflicts_sent=len(expected),
        conflicts_reported=len(again.json()["conflicts"]), first_version_kept=sum(
            stored[e["event_id"]] == stored_first[e["event_id"]] for e in events),
        race_conflicts_reported=len(lost["a"]) + len(lost["b"]), race_stored_a=won["a"], race_stored_b=won["b"],
        log_lines=logged,
    )  # fmt: skip
    assert first.status_code == again.status_code == 200
    assert again.json() == {"accepted": 0, "duplicates": EVENTS, "conflicts": expected, "rejected": []}
    assert all(stored[e["event_id"]] == payload(e) for e in events)  # the first version, every one
    assert won["a"] + won["b"] == EVENTS  # each id stored once, in one of the two versions
    assert answers["a"]["accepted"] + answers["b"]["accepted"] == EVENTS
    for name, other in (("a", "b"), ("b", "a")):
        assert answers[name]["accepted"] == won[name]
        # A client's conflicts are exactly its events whose id the other client stored first.
        assert lost[name] == {i for i, e in enumerate(versions[name]) if stored[e["event_id"]] != payload(e)}
        assert len(lost[name]) == answers[name]["duplicates"] == won[other]
    assert logged >= 2  # counted where an operator sees it: one WARNING line per batch with conflicts
