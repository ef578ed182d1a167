"""A customer's products as they are this moment: folded engagement and the events the fold has not reached."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from engagement.models import Customer, InteractionEvent, Product
from engagement.selectors import customer_engaged_now
from engagement.services import engagement_fold

pytestmark = pytest.mark.django_db


def _event(customer: Customer, product: Product, minutes_ago: float, **signals) -> InteractionEvent:
    return InteractionEvent.objects.create(
        event_id=uuid.uuid4(), customer=customer, product=product,
        occurred_at=timezone.now() - timedelta(minutes=minutes_ago), **signals,
    )  # fmt: skip


@pytest.fixture
def shop():
    products = {name: Product.objects.create(external_id=name) for name in ("lamp", "desk", "chair", "sofa", "rug")}
    alice, bob = Customer.objects.create(external_id="alice"), Customer.objects.create(external_id="bob")
    return products, alice, bob


def test_it_reads_folded_and_unfolded_events_newest_first(shop):
    p, alice, bob = shop
    _event(alice, p["lamp"], 30, clicked=True)
    _event(alice, p["desk"], 20, dwell_ms=4000)
    _event(alice, p["chair"], 25)  # an impression: seen, but no signal to fold
    _event(bob, p["sofa"], 1, clicked=True)
    engagement_fold()
    # Not folded yet: a click a moment ago on a new product, and one on a folded one.
    _event(alice, p["rug"], 0.5, clicked=True)
    _event(alice, p["lamp"], 0.1, hover_ms=500)

    now = customer_engaged_now("alice")

    assert now.seen == [p[n].pk for n in ("lamp", "rug", "desk", "chair")]
    assert now.engaged == [p[n].pk for n in ("lamp", "rug", "desk")]
    assert now.events_since == 0
    assert customer_engaged_now("nobody").seen == []


def test_it_counts_the_events_after_a_given_one(shop):
    p, alice, bob = shop
    first = _event(alice, p["lamp"], 30, clicked=True)
    engagement_fold()
    _event(alice, p["desk"], 2, clicked=True)  # folded later
    engagement_fold()
    _event(alice, p["chair"], 1, clicked=True)  # not folded
    _event(bob, p["sofa"], 1, clicked=True)  # someone else's

    assert customer_engaged_now("alice", since=first.pk).events_since == 2
    assert customer_engaged_now("alice", since=first.pk - 1).events_since == 3
    assert customer_engaged_now("bob", since=first.pk).events_since == 1
    assert customer_engaged_now("nobody", since=0).events_since == 0


def test_an_event_counts_once_whether_folded_or_not(shop):
    p, alice, _ = shop
    _event(alice, p["lamp"], 5, clicked=True)
    before = customer_engaged_now("alice")
    engagement_fold()

    assert customer_engaged_now("alice") == before
