"""seed_demo and the planted-taste generator behind it (engagement/demo.py)."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from engagement import demo
from engagement.apis import EventInputSerializer
from engagement.models import Customer, InteractionEvent, Product

SMALL = {"customers": 200, "products": 60, "events": 6000, "seed": 3, "days": 30}
NOW = datetime(2025, 3, 14, 15, 9, 26, tzinfo=UTC)


def seed(**overrides) -> str:
    out = StringIO()
    call_command("seed_demo", **{**SMALL, **overrides}, stdout=out, stderr=StringIO())
    return out.getvalue()


def draw(**overrides) -> demo.DemoEvents:
    args = {"n_customers": 200, "n_products": 60, "n_events": 6000, "seed": 3, "days": 30, "now": NOW}
    return demo.demo_events(**{**args, **overrides})


def test_it_draws_the_same_events_for_the_same_seed_and_others_for_another():
    first, again, other = draw(), draw(), draw(seed=4)
    for name in ("customer", "product", "hover_ms", "dwell_ms", "clicked", "occurred_at"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.product, other.product)
    assert [e.event_id for e in next(first.batches(50))] == [e.event_id for e in next(again.batches(50))]
    assert demo.demo_products(n_products=60, seed=3) == demo.demo_products(n_products=60, seed=3)


def test_it_puts_most_of_each_customers_events_in_their_taste_categories():
    events = draw()
    category = np.array([demo.CATEGORIES[p % len(demo.CATEGORIES)] for p in events.product])
    shares = []
    for c in range(200):
        mine = category[events.customer == c]
        taste = demo.demo_taste_categories(demo.demo_customer_id(c))
        shares.append(np.isin(mine, list(taste)).mean())
    assert 0.75 < np.mean(shares) < 0.85
    assert np.mean(np.array(shares) >= 0.5) > 0.95


def test_it_plants_disjoint_two_category_tastes_by_customer_id():
    assert demo.demo_taste_categories("demo-c00000") == {"books", "stationery"}
    assert demo.demo_taste_categories("demo-c00006") == {"electronics", "games"}
    tastes = [set(cats) for cats in demo.TASTE_GROUPS.values()]
    assert all(len(t) == 2 for t in tastes)
    assert set().union(*tastes) == set(demo.CATEGORIES)
    with pytest.raises(ValueError):
        demo.demo_taste_categories("ml-1")


def test_it_draws_mostly_hovers_some_dwells_and_few_clicks_within_the_api_bounds():
    events = draw()
    clicks = events.clicked.sum()
    dwells = ((events.dwell_ms > 0) & ~events.clicked).sum()
    hovers_only = (events.dwell_ms == 0).sum()
    assert hovers_only > dwells > clicks > 0
    assert (events.dwell_ms[events.clicked] > 0).all()
    assert events.hover_ms.min() >= 0 and events.hover_ms.max() <= 3_600_000
    assert events.dwell_ms.max() <= 3_600_000
    serializer = EventInputSerializer()
    for event in next(events.batches(200)):
        serializer.run_validation(
            {
                "event_id": str(event.event_id), "customer": event.customer, "product": event.product,
                "hover_ms": event.hover_ms, "dwell_ms": event.dwell_ms, "clicked": event.clicked,
                "occurred_at": event.occurred_at.isoformat(),
            }
        )  # raises ValidationError if the generator strays outside what the API accepts


def test_it_spreads_events_over_the_window_with_more_recently_and_none_in_the_future():
    events = draw(n_events=20_000)
    age_days = (NOW.timestamp() - events.occurred_at) / 86_400
    assert age_days.min() >= 0 and age_days.max() < 30
    assert (age_days < 15).sum() > 1.3 * (age_days >= 15).sum()
    weekday = Counter(datetime.fromtimestamp(t, UTC).weekday() for t in events.occurred_at.tolist())
    assert weekday[5] + weekday[6] > 2 / 7 * sum(weekday.values()) * 1.1  # busier weekends


@pytest.mark.django_db
def test_it_seeds_a_named_catalog_customers_and_events():
    output = seed()
    assert Product.objects.count() == 60
    assert not Product.objects.filter(is_stub=True).exists()
    assert Product.objects.values("category").distinct().count() == 10
    assert not Product.objects.filter(name="").exists() and not Product.objects.filter(price=None).exists()
    assert Customer.objects.count() == 200
    assert InteractionEvent.objects.count() == 6000
    assert "6000 new, 0 duplicates" in output


@pytest.mark.django_db
def test_it_stores_events_that_follow_each_customers_planted_taste():
    seed()
    rows = InteractionEvent.objects.values_list("customer__external_id", "product__category")
    in_taste = Counter(cat in demo.demo_taste_categories(cust) for cust, cat in rows)
    assert in_taste[True] / len(rows) > 0.75


@pytest.mark.django_db
def test_it_refuses_a_non_empty_database_without_force_and_reseeds_idempotently_with_it():
    seed()
    with pytest.raises(CommandError, match="--force"):
        seed()
    output = seed(force=True)
    assert InteractionEvent.objects.count() == 6000
    assert Product.objects.count() == 60 and Customer.objects.count() == 200
    assert "0 new, 6000 duplicates" in output


def test_it_rejects_too_small_a_catalog():
    with pytest.raises(ValueError):
        draw(n_products=5)


def test_it_gives_today_only_the_hours_that_have_passed():
    now = NOW.replace(hour=3, minute=0, second=0)
    events = draw(n_events=20_000, now=now)
    assert events.occurred_at.max() <= now.timestamp()
    assert (events.occurred_at > (now - timedelta(hours=3)).timestamp()).any()
