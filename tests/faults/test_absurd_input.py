"""Oversize and absurd input: 400 or 413 (411 for a chunked body), never a 500, and nothing from the request stored."""

from __future__ import annotations

import json
import uuid

import pytest
import requests

from engagement.models import InteractionEvent
from tests.faults.conftest import make_events, session_for

pytestmark = pytest.mark.usefixtures("transactional_db")

MB = 1_000_000


def event(**overrides) -> dict:
    return {**make_events(1, seed=uuid.uuid4().int)[0], **overrides}


def body(events) -> bytes:
    return json.dumps({"events": events}).encode()


def chunked(data: bytes):
    """A generator body: requests sends it with Transfer-Encoding: chunked and no Content-Length."""
    for start in range(0, len(data), 64 * 1024):
        yield data[start : start + 64 * 1024]


# name -> request body; every one is wrong as a whole, or in every event it holds.
CASES = {
    # too much
    "1001 events": lambda: body([event() for _ in range(1001)]),
    "body over 1 MB": lambda: json.dumps({"events": [event() for _ in range(1000)], "padding": "x" * MB}).encode(),
    "body over 1 MB, chunked": lambda: chunked(json.dumps({"events": [event()], "padding": "x" * 2 * MB}).encode()),
    # values beyond the bounds
    "negative hover": lambda: body([event(hover_ms=-1)]),
    "dwell over an hour": lambda: body([event(dwell_ms=3_600_001)]),
    "dwell of 10**30": lambda: body([event(dwell_ms=10**30)]),
    "integer of 5000 digits": lambda: b'{"events": [{"hover_ms": ' + b"9" * 5000 + b"}]}",
    "NaN and Infinity": lambda: b'{"events": [{"event_id": "%s", "customer": "c", "product": "p", "hover_ms": NaN, '
    b'"dwell_ms": Infinity}]}' % str(uuid.uuid4()).encode(),
    "occurred_at next year": lambda: body([event(occurred_at="2999-01-01T00:00:00Z")]),
    "occurred_at before year 1 in UTC": lambda: body([event(occurred_at="0001-01-01T00:00:00+01:00")]),
    "customer id of 101 characters": lambda: body([event(customer="c" * 101)]),
    "customer id with a NUL": lambda: body([event(customer="c\x00x")]),
    "product id with a lone surrogate": lambda: b'{"events": [%s]}'
    % json.dumps(event(product="p")).replace('"product": "p"', '"product": "\\ud800"').encode(),
    # wrong types
    "event_id a number": lambda: body([event(event_id=42)]),
    "clicked a string": lambda: body([event(clicked="yes")]),
    "dwell a string": lambda: body([event(dwell_ms="45000")]),
    "customer an object": lambda: body([event(customer={"id": 1})]),
    "events an object": lambda: b'{"events": {"0": {}}}',
    "events null": lambda: b'{"events": null}',
    "event a list": lambda: body([[1, 2, 3]]),
    "a bare list": lambda: json.dumps([event()]).encode(),
    "no events key": lambda: b'{"items": []}',
    # not JSON
    "not JSON": lambda: b"not json",
    "truncated JSON": lambda: body([event()])[:-7],
    "empty body": lambda: b"",
    "invalid UTF-8": lambda: b'{"events": [{"customer": "\xff\xfe"}]}',
    "nested 100,000 deep": lambda: b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


def post(url: str, key: str, data, **kwargs) -> tuple[int | None, str]:
    """POST and return (status, body); status None when the server hung up without answering."""
    with session_for(key) as session:
        try:
            response = session.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=60, **kwargs)
        except requests.ConnectionError as exc:
            return None, repr(exc)
    return response.status_code, response.text


def test_absurd_input_gets_400_or_413_and_stores_nothing_while_a_partly_valid_batch_keeps_its_valid_events(
    app_server, shop_key, figure
):
    url = f"{app_server.url}/api/v1/events/"
    answers = {name: post(url, shop_key, make_body()) for name, make_body in CASES.items()}
    stored_by_bad = InteractionEvent.objects.count()

    good = [event(), event()]
    mixed_status, mixed_body = post(url, shop_key, body([good[0], event(hover_ms=-1), event(clicked="yes"), good[1]]))
    stored = set(map(str, InteractionEvent.objects.values_list("event_id", flat=True)))

    statuses = [status for status, _ in answers.values()]
    figure(
        "absurd_input", cases=len(CASES), answered_400=statuses.count(400), answered_411=statuses.count(411),
        answered_413=statuses.count(413),
        **{"5xx": sum(s is not None and s >= 500 for s in statuses)}, no_answer=statuses.count(None),
        stored_from_bad_requests=stored_by_bad, partly_valid_batch_status=mixed_status,
        partly_valid_batch_stored=len(stored),
    )  # fmt: skip
    # A chunked body is not read at all (WSGI reads up to Content-Length): 411 says so.
    allowed = {name: {411} if "chunked" in name else {400, 413} for name in CASES}
    wrong = {name: (status, text[:300]) for name, (status, text) in answers.items() if status not in allowed[name]}
    assert not wrong, (wrong, app_server.log_tail(30))
    assert stored_by_bad == 0
    assert mixed_status == 200, mixed_body
    assert [r["index"] for r in json.loads(mixed_body)["rejected"]] == [1, 2]
    assert stored == {e["event_id"] for e in good}
