"""Once a model serves, the promoted-version and catalog check runs in the background: no request waits for it."""

from __future__ import annotations

import threading
import time

import pytest

from engagement.models import Product
from training import serving
from training.services import model_version_promote

PRODUCTS = [f"p-{i}" for i in range(20)]
CUSTOMERS = [f"c-{i}" for i in range(5)]


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)  # polling the background thread of this process
    return False


@pytest.fixture
def every_50_ms(settings):
    settings.RECSITE_TRAINING = {**settings.RECSITE_TRAINING, "SERVING_REFRESH_SECONDS": 0.05}


@pytest.mark.usefixtures("transactional_db", "every_50_ms")
def test_a_promotion_is_picked_up_in_the_background_while_requests_go_on_with_the_old_model(make_version):
    Product.objects.bulk_create([Product(external_id=p) for p in PRODUCTS])
    old = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=1)
    new = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=2)
    model_version_promote(version_id=old.pk, actor="test")
    assert serving.served_model().version_id == old.pk  # the first load happens in the request

    model_version_promote(version_id=new.pk, actor="test")
    time.sleep(0.06)  # the check is due

    assert serving.served_model().version_id == old.pk  # not waited for
    assert _wait_for(lambda: serving.served_model().version_id == new.pk)
    assert serving.recommendations_for(customer="c-1", k=3).model_version == new.pk


@pytest.mark.usefixtures("transactional_db", "every_50_ms")
def test_a_request_does_not_wait_for_a_slow_check(make_version, monkeypatch):
    Product.objects.bulk_create([Product(external_id=p) for p in PRODUCTS])
    model_version_promote(version_id=make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS).pk, actor="test")
    first = serving.served_model()
    checking, release = threading.Event(), threading.Event()

    def slow_refresh(current, cache):
        checking.set()
        release.wait(10)
        return current

    monkeypatch.setattr(serving, "_refresh", slow_refresh)
    time.sleep(0.06)
    serving.served_model()
    assert checking.wait(10)

    started = time.monotonic()
    assert serving.served_model() is first
    assert time.monotonic() - started < 0.5
    release.set()


@pytest.mark.usefixtures("transactional_db", "every_50_ms")
def test_a_failing_check_keeps_the_model_serving_and_is_tried_again(make_version, monkeypatch):
    Product.objects.bulk_create([Product(external_id=p) for p in PRODUCTS])
    model_version_promote(version_id=make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS).pk, actor="test")
    first = serving.served_model()
    calls = []

    def broken_refresh(current, cache):
        calls.append(1)
        raise RuntimeError("database went away")

    monkeypatch.setattr(serving, "_refresh", broken_refresh)
    for _ in range(3):
        time.sleep(0.06)
        assert serving.served_model() is first
        assert _wait_for(lambda: len(calls) >= 1)

    assert _wait_for(lambda: len(calls) >= 2)  # the thread lived on and checked again


@pytest.mark.usefixtures("transactional_db", "every_50_ms")
def test_reset_stops_the_background_check(make_version):
    Product.objects.bulk_create([Product(external_id=p) for p in PRODUCTS])
    model_version_promote(version_id=make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS).pk, actor="test")
    serving.served_model()
    time.sleep(0.06)
    serving.served_model()
    refresher = serving._cache.refresher
    assert refresher is not None and refresher.is_alive()

    serving.serving_reset()

    assert not refresher.is_alive()
    assert serving._cache.served is None


@pytest.mark.usefixtures("transactional_db", "every_50_ms")
def test_an_idle_process_answers_its_next_request_from_the_version_promoted_while_it_was_idle(make_version):
    Product.objects.bulk_create([Product(external_id=p) for p in PRODUCTS])
    old = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=1)
    new = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=2)
    model_version_promote(version_id=old.pk, actor="test")
    assert serving.served_model().version_id == old.pk
    time.sleep(0.06)
    serving.served_model()  # the background check is running from here on
    assert _wait_for(lambda: serving._cache.refresher is not None and serving._cache.refresher.is_alive())

    # Nobody asks while a new version is promoted; the process checks by itself.
    model_version_promote(version_id=new.pk, actor="test")
    promoted_at = time.monotonic()
    assert _wait_for(lambda: serving._cache.checked_at > promoted_at)

    # The first request after the idle spell gets the new version, not the one it last served.
    assert serving.served_model().version_id == new.pk
