"""From Engagement rows to training arrays: one query, contiguous ids, the score's own numbers."""

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from engagement.models import Customer, Engagement, InteractionEvent, Product
from engagement.services import EventIn, engagement_fold, events_ingest
from engagement.scoring import DecayedSums, EngagementWeights, round_score, score_at
from training.services import channel_targets, training_data_load

WEIGHTS = EngagementWeights(
    hover_cap_ms=10_000, dwell_cap_ms=300_000, hover_scale=3.0, dwell_scale=1.0, click_scale=1.0,
    hover_weight=0.2, dwell_weight=0.4, click_weight=0.4, half_life_days=30.0,
)  # fmt: skip
sums = st.floats(min_value=0, max_value=50, allow_nan=False)


@hsettings(max_examples=200, deadline=None)
@given(sums, sums, sums, st.floats(min_value=0, max_value=400 * 86_400))
def test_its_channel_targets_mix_into_the_engagement_score(hover, dwell, clicks, age):
    last = datetime(2026, 1, 1, tzinfo=UTC)
    expected = score_at(DecayedSums(hover, dwell, clicks), last, last + timedelta(seconds=age), weights=WEIGHTS)

    targets = channel_targets(
        hover=np.array([hover]), dwell=np.array([dwell]), clicks=np.array([clicks]), age_seconds=np.array([age]),
        weights=WEIGHTS,
    )[0]  # fmt: skip
    mixed = 0.2 * targets[0] + 0.4 * targets[1] + 0.4 * targets[2]

    assert np.all((targets >= 0) & (targets <= 1))
    assert abs(round_score(float(mixed)) - expected) <= 0.001  # float32 targets vs float64 score


def _engage(customer: str, product: str, *, days_ago: float, dwell: float, now: datetime) -> None:
    Engagement.objects.create(
        customer=Customer.objects.get_or_create(external_id=customer)[0],
        product=Product.objects.get_or_create(external_id=product)[0],
        last_event_at=now - timedelta(days=days_ago),
        hover_decayed=0.5, dwell_decayed=dwell, clicks_decayed=1.0, dwell_ms_total=int(dwell * 300_000),
    )  # fmt: skip


def test_it_reads_engagement_in_one_query_into_contiguous_ids(db, django_assert_num_queries):
    Product.objects.create(external_id="p-new")  # in the catalog, nobody has touched it yet
    now = datetime(2026, 6, 1, tzinfo=UTC)
    _engage("c-b", "p-2", days_ago=0, dwell=0.5, now=now)
    _engage("c-a", "p-9", days_ago=30, dwell=0.5, now=now)
    _engage("c-b", "p-9", days_ago=2, dwell=0.1, now=now)

    # The fold's watermark (read first: the data holds every event up to it), the engaged
    # pairs, and the active catalog's ids.
    with django_assert_num_queries(3):
        data = training_data_load(weights=WEIGHTS)

    x = data.interactions
    assert data.customer_ids == ["c-a", "c-b"] and data.product_ids == ["p-2", "p-9", "p-new"]
    assert x.num_customers == 2 and x.num_products == 3 and data.as_of == now
    pairs = {(data.customer_ids[c], data.product_ids[p]) for c, p in zip(x.customer_idx, x.product_idx, strict=False)}
    assert pairs == {("c-b", "p-2"), ("c-a", "p-9"), ("c-b", "p-9")}


def _dwell_targets(data) -> dict[tuple[str, str], float]:
    x = data.interactions
    return {
        (data.customer_ids[c], data.product_ids[p]): float(t[1])
        for c, p, t in zip(x.customer_idx, x.product_idx, x.targets, strict=False)
    }


@pytest.mark.parametrize(
    "recency, month_old_factor, two_days_factor",
    [
        # Each customer's pairs decay to that customer's newest event: c-a's only pair,
        # a month old, keeps its value; c-b's pair two days older than c-b's newest decays.
        ("customer", 1.0, 0.5 ** (2 / 30)),
        # All decay to the shop's newest event (one half-life halves the month-old sums).
        ("shop", 0.5, 0.5 ** (2 / 30)),
        ("none", 1.0, 1.0),
    ],
)
def test_it_decays_targets_to_the_chosen_moment(db, recency, month_old_factor, two_days_factor):
    now = datetime(2026, 6, 1, tzinfo=UTC)
    _engage("c-b", "p-2", days_ago=0, dwell=0.5, now=now)
    _engage("c-a", "p-9", days_ago=30, dwell=0.5, now=now)
    _engage("c-b", "p-9", days_ago=2, dwell=0.5, now=now)

    targets = _dwell_targets(training_data_load(weights=WEIGHTS, recency=recency))

    assert np.isclose(targets[("c-b", "p-2")], 1 - np.exp(-0.5), atol=1e-6)
    assert np.isclose(targets[("c-a", "p-9")], 1 - np.exp(-0.5 * month_old_factor), atol=1e-6)
    assert np.isclose(targets[("c-b", "p-9")], 1 - np.exp(-0.5 * two_days_factor), atol=1e-6)


def test_it_gives_empty_arrays_for_an_empty_shop(db):
    data = training_data_load(weights=WEIGHTS)

    assert data.interactions.num_customers == 0 and data.as_of is None and data.customer_ids == []



def test_it_leaves_out_pairs_without_any_signal(db):
    now = datetime(2026, 6, 1, tzinfo=UTC)
    _engage("c-a", "p-1", days_ago=0, dwell=0.5, now=now)
    Engagement.objects.create(
        customer=Customer.objects.get(external_id="c-a"),
        product=Product.objects.create(external_id="p-glimpsed"),
        last_event_at=now,
    )  # an impression: 0 ms, no click

    data = training_data_load(weights=WEIGHTS)

    assert len(data.interactions.customer_idx) == 1
    assert data.product_ids[data.interactions.product_idx[0]] == "p-1"


def test_it_says_which_events_the_data_holds_by_the_folds_watermark(db):
    assert training_data_load(weights=WEIGHTS).folded_through == 0  # nothing folded yet
    events_ingest(events=[EventIn(event_id=uuid.uuid4(), customer="c-a", product="p-1", hover_ms=0, dwell_ms=900,
                           clicked=True, occurred_at=datetime(2026, 6, 1, tzinfo=UTC)) for _ in range(3)])  # fmt: skip
    engagement_fold()
    newest = InteractionEvent.objects.order_by("-pk").first()

    assert training_data_load(weights=WEIGHTS).folded_through == newest.pk
