"""Promote and roll back; a corrupt or tampered artifact never serves."""

import threading

import pytest

from training.models import ModelPromotion, ModelVersion
from training.services import (
    PromotionRefused,
    artifact_abspath,
    model_version_promote,
    model_version_promoted,
    model_version_rollback,
)

CUSTOMERS = ["c-1", "c-2"]
PRODUCTS = ["p-1", "p-2", "p-3"]


@pytest.fixture
def two_versions(make_version):
    return (
        make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=1),
        make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=2),
    )


def test_promoting_retires_the_previous_version_and_audits_both(two_versions):
    v1, v2 = two_versions

    model_version_promote(version_id=v1.pk, actor="user:ann")
    model_version_promote(version_id=v2.pk, actor="user:bob")

    v1.refresh_from_db()
    assert model_version_promoted() == v2 and v1.status == ModelVersion.Status.RETIRED
    assert [(p.model_version_id, p.previous_id, p.actor) for p in ModelPromotion.objects.order_by("id")] == [
        (v1.pk, None, "user:ann"),
        (v2.pk, v1.pk, "user:bob"),
    ]


def test_promoting_the_promoted_version_changes_nothing(two_versions):
    v1, _ = two_versions
    model_version_promote(version_id=v1.pk, actor="a")

    model_version_promote(version_id=v1.pk, actor="a")

    assert ModelPromotion.objects.count() == 1


def test_rollback_promotes_the_version_that_served_before(two_versions):
    v1, v2 = two_versions
    model_version_promote(version_id=v1.pk, actor="a")
    model_version_promote(version_id=v2.pk, actor="a")

    back = model_version_rollback(actor="user:ops")

    assert back == v1 and model_version_promoted() == v1
    assert ModelPromotion.objects.order_by("-id").first().action == ModelPromotion.Action.ROLLBACK


def test_rollback_with_nothing_before_is_refused(two_versions):
    with pytest.raises(PromotionRefused, match="nothing to roll back"):
        model_version_rollback(actor="a")
    model_version_promote(version_id=two_versions[0].pk, actor="a")
    with pytest.raises(PromotionRefused, match="first promoted"):
        model_version_rollback(actor="a")


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete"])
def test_a_corrupt_artifact_is_refused_and_the_promoted_model_stays(two_versions, damage):
    v1, v2 = two_versions
    model_version_promote(version_id=v1.pk, actor="a")
    path = artifact_abspath(v2)
    data = path.read_bytes()
    if damage == "flip a byte":
        path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()

    with pytest.raises(PromotionRefused, match=f"Model version {v2.pk} cannot be loaded"):
        model_version_promote(version_id=v2.pk, actor="a")

    assert model_version_promoted() == v1
    assert ModelPromotion.objects.count() == 1


def test_rolling_back_twice_walks_back_through_promotions(make_version):
    v1, v2, v3 = (make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=s) for s in (1, 2, 3))
    for version in (v1, v2, v3):
        model_version_promote(version_id=version.pk, actor="a")

    assert model_version_rollback(actor="a") == v2
    assert model_version_rollback(actor="a") == v1
    with pytest.raises(PromotionRefused, match="first promoted"):
        model_version_rollback(actor="a")


@pytest.mark.usefixtures("transactional_db")
def test_concurrent_promotions_of_different_versions_all_succeed_and_leave_one_promoted(make_version):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    versions = [make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=s) for s in range(5)]
    model_version_promote(version_id=versions[0].pk, actor="a")
    barrier = threading.Barrier(4)

    def promote(version):
        try:
            barrier.wait()
            return model_version_promote(version_id=version.pk, actor="race").pk
        finally:
            connections.close_all()

    with ThreadPoolExecutor(4) as pool:
        promoted = list(pool.map(promote, versions[1:]))

    assert promoted == [v.pk for v in versions[1:]]  # no IntegrityError, no refusal
    assert ModelVersion.objects.filter(status=ModelVersion.Status.PROMOTED).count() == 1
    assert ModelPromotion.objects.count() == 5
