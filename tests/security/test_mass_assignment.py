"""What a request may set, and how much it may ask for (OWASP API3 and API4).

Request bodies name their fields: a field a body does not take (``score``, ``is_staff``,
``status``, another row's id) is answered 400 naming it, and nothing of that item is
stored. Action endpoints that take no body (promote, cancel, rollback) ignore one: who
acted and what changed come from the key and the URL. Sizes are capped: ``k``, batch
lengths, the training-run and model-version lists; past the per-key rate the API answers
429 with ``Retry-After``, checked over HTTP on a real gunicorn.
"""

from __future__ import annotations

import uuid

import pytest
import requests
from django.utils import timezone
from rest_framework.test import APIClient

from engagement.models import Customer, Engagement, InteractionEvent, Product
from tests.security.conftest import SERVER_RATE_PER_MINUTE, make_key
from tests.training.conftest import _fresh_serving_and_models, make_version  # noqa: F401
from training.models import ModelPromotion, ModelVersion, TrainingRun
from training.serving import MAX_K

# The caps of the two admin lists (training/apis.py): newest first, at most this many.
LIST_CAP = 50

# Fields a client might try to set that no body takes.
FORGED = {"score": 1.0, "is_staff": True, "id": 1, "customer_id": 1, "received_at": "2000-01-01T00:00:00Z",
          "engagement": 99}  # fmt: skip


def _event(**extra) -> dict:
    return {"event_id": str(uuid.uuid4()), "customer": "c-1", "product": "p-1", "dwell_ms": 1000, **extra}


@pytest.fixture
def shop(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {make_key('security shop', 'ingest', 'recommend')}")
    return client


@pytest.fixture
def admin(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {make_key('security admin', 'ingest', 'recommend', 'admin')}")
    return client


def test_extra_fields_in_bodies_are_rejected_by_name_and_nothing_of_them_is_stored(shop, admin, figure):
    other = Product.objects.create(external_id="p-other", name="Other")
    answers = {
        "event with forged fields": shop.post("/api/v1/events/", {"events": [_event(**FORGED)]}, format="json"),
        "batch with a forged field": shop.post(
            "/api/v1/events/", {"events": [_event()], "is_staff": True}, format="json"
        ),
        "product with forged fields": shop.put(
            "/api/v1/products/",
            [{"product": "p-new", "name": "New", "is_stub": True, "id": other.pk, "score": 9}],
            format="json",
        ),
        "training run with forged fields": admin.post(
            "/api/v1/training-runs/",
            {"options": {}, "status": "succeeded", "model_version": 1, "triggered_by": "user:ada", "is_staff": True},
            format="json",
        ),
    }

    def named(response) -> set[str]:
        body = response.json()
        errors = body["rejected"][0]["errors"] if "rejected" in body else body
        return set(errors)

    rejected = {name: (r.status_code, named(r)) for name, r in answers.items()}
    stored = {
        "events": InteractionEvent.objects.count(), "customers": Customer.objects.count(),
        "engagement": Engagement.objects.count(), "products": Product.objects.exclude(pk=other.pk).count(),
        "training_runs": TrainingRun.objects.count(),
    }  # fmt: skip
    figure("mass_assignment", bodies=len(answers), rejected_400=sum(s == 400 for s, _ in rejected.values()),
           forged_fields_named=sum(len(n) for _, n in rejected.values()), rows_stored=sum(stored.values()))  # fmt: skip
    assert rejected == {
        "event with forged fields": (400, set(FORGED)),
        "batch with a forged field": (400, {"is_staff"}),
        "product with forged fields": (400, {"is_stub", "id", "score"}),
        "training run with forged fields": (400, {"status", "model_version", "triggered_by", "is_staff"}),
    }
    assert stored == dict.fromkeys(stored, 0)
    assert Product.objects.get(pk=other.pk).name == "Other"


def test_a_valid_event_next_to_a_forged_one_is_stored_and_the_forged_one_is_not(shop):
    good, forged = _event(), _event(score=1.0)

    response = shop.post("/api/v1/events/", {"events": [good, forged]}, format="json")

    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert [r["index"] for r in response.json()["rejected"]] == [1]
    assert list(InteractionEvent.objects.values_list("event_id", flat=True)) == [uuid.UUID(good["event_id"])]


def test_a_body_sent_to_an_action_that_takes_none_changes_nothing_it_names(admin, make_version):
    version = make_version(customer_ids=["c-1"], product_ids=["p-1", "p-2"])

    response = admin.post(
        f"/api/v1/model-versions/{version.pk}/promote/",
        {"actor": "user:mallory", "status": "retired", "promoted_at": "2000-01-01T00:00:00Z", "sha256": "0" * 64},
        format="json",
    )

    assert response.status_code == 200
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.PROMOTED
    assert version.promoted_at.year == timezone.now().year
    assert version.sha256 != "0" * 64
    assert ModelPromotion.objects.get().actor == "api-key:security admin"


def test_sizes_are_capped_k_batches_and_the_admin_lists(shop, admin, figure):
    TrainingRun.objects.bulk_create(
        [TrainingRun(triggered_by="test", status=TrainingRun.Status.SUCCEEDED) for _ in range(LIST_CAP + 10)]
    )
    ModelVersion.objects.bulk_create(
        [ModelVersion(artifact_path=f"v{i}.pt", sha256="0" * 64) for i in range(LIST_CAP + 5)]
    )
    too_many = {"events": [_event() for _ in range(1001)]}

    over = {
        "recommendations k=MAX_K+1": shop.get(f"/api/v1/recommendations/c-1/?k={MAX_K + 1}"),
        "recommendations k=10**30": shop.get(f"/api/v1/recommendations/c-1/?k={10**30}"),
        "recommendations k=0": shop.get("/api/v1/recommendations/c-1/?k=0"),
        "popular k=101": shop.get("/api/v1/products/popular/?k=101"),
        "events 1001": shop.post("/api/v1/events/", too_many, format="json"),
        "products 1001": shop.put("/api/v1/products/", [{"product": f"p-{i}"} for i in range(1001)], format="json"),
    }
    at_cap = {
        "recommendations k=MAX_K": shop.get(f"/api/v1/recommendations/c-1/?k={MAX_K}"),
        "popular k=100": shop.get("/api/v1/products/popular/?k=100"),
    }
    listed = {
        "training runs": len(admin.get("/api/v1/training-runs/").json()),
        "model versions": len(admin.get("/api/v1/model-versions/").json()),
    }

    figure("bounds", over_cap_requests=len(over), answered_400=sum(r.status_code == 400 for r in over.values()),
           training_runs_listed=f"{listed['training runs']}/{LIST_CAP + 10}",
           model_versions_listed=f"{listed['model versions']}/{LIST_CAP + 5}")  # fmt: skip
    assert {name: r.status_code for name, r in over.items()} == dict.fromkeys(over, 400)
    assert {name: r.status_code for name, r in at_cap.items()} == dict.fromkeys(at_cap, 200)
    assert listed == {"training runs": LIST_CAP, "model versions": LIST_CAP}
    assert InteractionEvent.objects.count() == 0 and Product.objects.count() == 0


@pytest.mark.usefixtures("transactional_db")
def test_past_its_rate_a_key_gets_429_with_retry_after_over_http(security_server, figure):
    key = make_key("security throttle", "ingest", "recommend")
    url = f"{security_server.url}/api/v1/products/popular/"
    # A fixed window lets a key send up to twice its rate across a window boundary: the
    # first 429 comes within that many requests, wherever in the minute the test starts.
    statuses = []
    with requests.Session() as session:
        session.headers["Authorization"] = f"Api-Key {key}"
        for _ in range(2 * SERVER_RATE_PER_MINUTE + 1):
            response = session.get(url, timeout=30)
            statuses.append(response.status_code)
            if response.status_code == 429:
                break
        other = requests.get(url, headers={"Authorization": f"Api-Key {make_key('other', 'recommend')}"}, timeout=30)

    figure("throttle_http", rate=f"{SERVER_RATE_PER_MINUTE}/min", requests=len(statuses),
           allowed_before_429=statuses.count(200), retry_after_s=response.headers.get("Retry-After"),
           other_key_status=other.status_code)  # fmt: skip
    assert statuses[-1] == 429, statuses
    assert set(statuses[:-1]) == {200} and len(statuses) > SERVER_RATE_PER_MINUTE
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "throttled" in response.json()["detail"].lower()
    assert other.status_code == 200  # each key has its own count
