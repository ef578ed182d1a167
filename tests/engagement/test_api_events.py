"""POST /api/v1/events/: the shop's event stream, stored exactly once."""

import json
import uuid
from datetime import datetime, timedelta
from unittest import mock

import pytest
from django.db import OperationalError
from django.utils import timezone

from engagement.models import Customer, InteractionEvent, Product

URL = "/api/v1/events/"


def make_event(**overrides) -> dict:
    event = {
        "event_id": str(uuid.uuid4()),
        "customer": "c-1",
        "product": "p-1",
        "hover_ms": 1200,
        "dwell_ms": 45000,
        "clicked": True,
        "occurred_at": (timezone.now() - timedelta(minutes=1)).isoformat(),
    }
    event.update(overrides)
    return event


def post(client, events):
    return client.post(URL, {"events": events}, format="json")


def test_it_stores_a_valid_batch_and_reports_the_counts(shop_client):
    events = [make_event(customer=f"c-{i % 3}", product=f"p-{i % 5}") for i in range(10)]

    response = post(shop_client, events)

    assert response.status_code == 200, response.content
    assert response.json() == {"accepted": 10, "duplicates": 0, "conflicts": [], "rejected": []}
    stored = InteractionEvent.objects.get(event_id=events[0]["event_id"])
    assert (stored.hover_ms, stored.dwell_ms, stored.clicked) == (1200, 45000, True)
    assert stored.customer.external_id == "c-0" and stored.product.external_id == "p-0"


def test_it_counts_a_resent_event_once(shop_client):
    event = make_event(dwell_ms=1000)
    post(shop_client, [event])

    response = post(shop_client, [event])

    assert response.json() == {"accepted": 0, "duplicates": 1, "conflicts": [], "rejected": []}
    assert InteractionEvent.objects.count() == 1


def test_it_counts_an_event_id_repeated_within_one_batch_as_a_duplicate(shop_client):
    event = make_event()

    response = post(shop_client, [event, event, make_event()])

    assert response.json() == {"accepted": 2, "duplicates": 1, "conflicts": [], "rejected": []}
    assert InteractionEvent.objects.count() == 2


@pytest.mark.parametrize(
    "change",
    [
        {"dwell_ms": 999_999},
        {"hover_ms": 0},
        {"clicked": False},
        {"customer": "c-other"},
        {"product": "p-other"},
        {"occurred_at": (timezone.now() - timedelta(hours=1)).isoformat()},
    ],
)
def test_it_reports_an_event_id_resent_with_another_payload_as_a_conflict_and_keeps_the_first_version(
    shop_client, change
):
    first = make_event(dwell_ms=1000)
    post(shop_client, [first])
    other = make_event()

    response = post(shop_client, [other, {**first, **change}])

    assert response.status_code == 200
    assert response.json() == {
        "accepted": 1, "duplicates": 1, "conflicts": [{"index": 1, "event_id": first["event_id"]}], "rejected": [],
    }  # fmt: skip
    stored = InteractionEvent.objects.get(event_id=first["event_id"])
    assert (stored.customer.external_id, stored.product.external_id) == ("c-1", "p-1")
    assert (stored.hover_ms, stored.dwell_ms, stored.clicked) == (1200, 1000, True)
    assert stored.occurred_at == datetime.fromisoformat(first["occurred_at"])


def test_it_reports_a_conflict_within_one_batch_by_the_index_of_the_later_copy(shop_client):
    event = make_event(dwell_ms=1000)

    response = post(shop_client, [event, make_event(hover_ms=-1), {**event, "dwell_ms": 5}])

    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (1, 1)
    assert body["conflicts"] == [{"index": 2, "event_id": event["event_id"]}]
    assert [r["index"] for r in body["rejected"]] == [1]
    assert InteractionEvent.objects.get().dwell_ms == 1000


def test_it_does_not_call_a_resent_event_without_occurred_at_a_conflict(shop_client):
    event = make_event()
    del event["occurred_at"]
    post(shop_client, [event])

    response = post(shop_client, [event])

    assert response.json()["conflicts"] == []


def test_it_logs_each_batch_with_conflicts_for_the_shop_to_find_its_id_bug(shop_client, caplog):
    event = make_event()
    post(shop_client, [event])

    with caplog.at_level("WARNING", logger="engagement.services.events"):
        post(shop_client, [{**event, "clicked": False}])

    [record] = [r for r in caplog.records if r.name == "engagement.services.events"]
    assert "1 conflicting duplicate" in record.getMessage() and event["event_id"] in record.getMessage()


def test_the_schema_describes_conflicts(client):
    schema = client.get("/api/schema/?format=json").json()

    result = schema["components"]["schemas"]["EventBatchResult"]
    assert "conflicts" in result["required"]
    conflict = schema["components"]["schemas"]["Conflict"]
    assert set(conflict["properties"]) == {"index", "event_id"}


def test_it_stores_the_valid_events_of_a_mixed_batch_and_rejects_the_rest_by_index(shop_client):
    good_first, good_last = make_event(), make_event()
    events = [good_first, make_event(hover_ms=-5), make_event(event_id="not-a-uuid"), good_last]

    response = post(shop_client, events)

    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (2, 0)
    assert [r["index"] for r in body["rejected"]] == [1, 2]
    assert "hover_ms" in body["rejected"][0]["errors"]
    assert "event_id" in body["rejected"][1]["errors"]
    stored = set(InteractionEvent.objects.values_list("event_id", flat=True))
    assert stored == {uuid.UUID(good_first["event_id"]), uuid.UUID(good_last["event_id"])}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hover_ms", -1),
        ("hover_ms", 3_600_001),
        ("dwell_ms", 86_400_000),
        ("dwell_ms", "45000"),
        ("dwell_ms", 12.5),
        ("hover_ms", True),
        ("clicked", "yes"),
        ("clicked", 1),
        ("event_id", 42),
        ("customer", ""),
        ("customer", "x" * 101),
        ("product", None),
        ("product", ["p-1"]),
        ("occurred_at", "yesterday"),
        ("occurred_at", timedelta(minutes=6)),  # from now, when the test runs (not when it was collected)
    ],
)
def test_it_rejects_an_out_of_bounds_or_wrongly_typed_value(shop_client, field, value):
    if isinstance(value, timedelta):
        value = (timezone.now() + value).isoformat()
    response = post(shop_client, [make_event(**{field: value})])

    assert response.status_code == 400
    body = response.json()
    assert body["accepted"] == 0
    assert list(body["rejected"][0]["errors"]) == [field]
    assert InteractionEvent.objects.count() == 0


@pytest.mark.parametrize("missing", ["event_id", "customer", "product"])
def test_it_requires_the_ids(shop_client, missing):
    event = make_event()
    del event[missing]

    response = post(shop_client, [event])

    assert response.status_code == 400
    assert missing in response.json()["rejected"][0]["errors"]


def test_it_accepts_occurred_at_within_the_clock_skew_and_defaults_it_to_now(shop_client):
    skewed = make_event(occurred_at=(timezone.now() + timedelta(minutes=4)).isoformat())
    undated = make_event()
    del undated["occurred_at"]
    before = timezone.now()

    response = post(shop_client, [skewed, undated])

    assert response.json()["accepted"] == 2
    stored = InteractionEvent.objects.get(event_id=undated["event_id"])
    assert before <= stored.occurred_at <= timezone.now()


def test_it_defaults_missing_signals_to_nothing(shop_client):
    event = {"event_id": str(uuid.uuid4()), "customer": "c-1", "product": "p-1", "clicked": True}

    post(shop_client, [event])

    stored = InteractionEvent.objects.get()
    assert (stored.hover_ms, stored.dwell_ms, stored.clicked) == (0, 0, True)


def test_it_creates_unknown_customers_and_stub_products(shop_client):
    Product.objects.create(external_id="known", name="Known lamp", category="lighting")

    post(shop_client, [make_event(customer="new-c", product="known"), make_event(customer="new-c", product="new-p")])

    assert Customer.objects.filter(external_id="new-c").count() == 1
    assert Product.objects.get(external_id="new-p").is_stub is True
    assert Product.objects.get(external_id="known").is_stub is False


def test_it_answers_400_and_stores_nothing_for_a_batch_over_the_limit(shop_client):
    response = post(shop_client, [make_event() for _ in range(1001)])

    assert response.status_code == 400
    assert "events" in response.json()
    assert InteractionEvent.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"events": ', b"[]", b'{"events": {}}', b'{"items": []}', b"null", b'"events"'],
)
def test_it_answers_400_for_a_body_that_is_not_a_batch(shop_client, body):
    response = shop_client.generic("POST", URL, body, content_type="application/json")

    assert response.status_code == 400
    assert InteractionEvent.objects.count() == 0


def test_it_answers_413_and_stores_nothing_for_a_body_over_1_mb(shop_client):
    events = [make_event(customer="c" * 100, product=f"p-{i}") for i in range(1000)]
    body = json.dumps({"events": events, "padding": "x" * 1_000_000}).encode()

    response = shop_client.generic("POST", URL, body, content_type="application/json")

    assert response.status_code == 413
    assert InteractionEvent.objects.count() == 0


def test_it_answers_415_for_a_form_body(shop_client):
    response = shop_client.post(URL, {"events": "x"}, format="multipart")

    assert response.status_code == 415


def test_it_answers_401_without_a_key(anonymous_client, db):
    response = post(anonymous_client, [make_event()])

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"
    assert InteractionEvent.objects.count() == 0


def test_it_answers_401_for_a_wrong_or_revoked_key(anonymous_client, shop_key):
    from engagement.models import ShopApiKey

    anonymous_client.credentials(HTTP_AUTHORIZATION=f"Api-Key {shop_key}x")
    assert post(anonymous_client, [make_event()]).status_code == 401

    ShopApiKey.objects.update(revoked=True)
    anonymous_client.credentials(HTTP_AUTHORIZATION=f"Api-Key {shop_key}")
    assert post(anonymous_client, [make_event()]).status_code == 401
    assert InteractionEvent.objects.count() == 0


def test_it_throttles_each_key_with_429_and_retry_after(shop_client, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api_key": "2/min"},
    }

    statuses = [post(shop_client, [make_event()]).status_code for _ in range(3)]
    throttled = post(shop_client, [make_event()])

    assert statuses == [200, 200, 429]
    assert throttled.status_code == 429
    assert 0 < int(throttled["Retry-After"]) <= 60
    assert InteractionEvent.objects.count() == 2


def test_it_answers_503_with_retry_after_when_the_database_is_unavailable(shop_client):
    with mock.patch("engagement.apis.events_ingest", side_effect=OperationalError("server closed")):
        response = post(shop_client, [make_event()])

    assert response.status_code == 503
    assert response["Retry-After"] == "5"


def test_it_rejects_an_event_with_fields_the_contract_does_not_name_saying_which(shop_client):
    event = make_event(score=1.0, is_staff=True, engagement=99)

    response = post(shop_client, [event])

    assert response.json()["accepted"] == 0
    assert set(response.json()["rejected"][0]["errors"]) == {"score", "is_staff", "engagement"}


def test_it_answers_400_for_json_nested_too_deeply_to_parse(shop_client):
    body = b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    response = shop_client.generic("POST", URL, body, content_type="application/json")

    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


def test_it_answers_411_for_a_chunked_body_it_cannot_read(shop_client):
    response = shop_client.generic(
        "POST", URL, b"", content_type="application/json", HTTP_TRANSFER_ENCODING="chunked"
    )

    assert response.status_code == 411
    assert InteractionEvent.objects.count() == 0
