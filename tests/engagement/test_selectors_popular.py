"""Popular products (engagement.selectors.products_popular) and their cache."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from engagement import selectors
from engagement.models import Customer, Engagement, Product
from engagement.selectors import PopularProduct, popular_cache_clear, products_popular

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fresh_popular_cache():
    """The cache outlives each test's database transaction: start every test without it."""
    popular_cache_clear()
    yield
    popular_cache_clear()


def product(external_id: str, *, category: str = "", active: bool = True) -> Product:
    return Product.objects.create(external_id=external_id, category=category, active=active)


def engage(customer: str, product_id: str, score: str, *, at: datetime | None = None) -> Engagement:
    """Store one customer x product engagement as the fold would have left it."""
    return Engagement.objects.create(
        customer=Customer.objects.get_or_create(external_id=customer)[0],
        product=Product.objects.get_or_create(external_id=product_id)[0],
        score=Decimal(score),
        event_count=1,
        last_event_at=at or timezone.now(),
    )


def ranking(popular: list[PopularProduct]) -> list[tuple[str, float, int]]:
    return [(p.product, p.score, p.customers) for p in popular]


def test_it_ranks_products_by_summed_engagement(db):
    engage("c1", "p-a", "0.500")
    engage("c2", "p-a", "0.400")
    engage("c1", "p-b", "0.800")
    engage("c3", "p-c", "0.300")

    assert ranking(products_popular()) == [("p-a", 0.9, 2), ("p-b", 0.8, 1), ("p-c", 0.3, 1)]


def test_it_breaks_ties_by_more_customers_then_by_product_id(db):
    # 0.7 + 0.1 is 0.7999999999999999 in floating point (SQLite's SUM): still a tie at 0.8.
    engage("c1", "p-x", "0.700")
    engage("c2", "p-x", "0.100")
    engage("c1", "p-y", "0.800")
    engage("c1", "p-b", "0.800")
    engage("c2", "p-a", "0.800")

    assert ranking(products_popular()) == [
        ("p-x", 0.8, 2),
        ("p-a", 0.8, 1),
        ("p-b", 0.8, 1),
        ("p-y", 0.8, 1),
    ]


def test_it_leaves_out_inactive_products(db):
    product("p-gone", active=False)
    engage("c1", "p-gone", "0.900")
    engage("c1", "p-here", "0.100")

    assert ranking(products_popular()) == [("p-here", 0.1, 1)]


def test_it_filters_by_category(db):
    product("p-lamp", category="lighting")
    product("p-bulb", category="lighting")
    product("p-rug", category="textiles")
    engage("c1", "p-lamp", "0.200")
    engage("c1", "p-bulb", "0.400")
    engage("c1", "p-rug", "0.900")

    assert [p.product for p in products_popular(category="lighting")] == ["p-bulb", "p-lamp"]
    assert [p.product for p in products_popular(category="garden")] == []


def test_it_counts_only_customers_active_within_the_window(db):
    engage("c1", "p-a", "0.500", at=NOW - timedelta(days=1))
    engage("c2", "p-a", "0.500", at=NOW - timedelta(days=8))
    engage("c1", "p-b", "0.600", at=NOW - timedelta(days=7))  # on the edge: counted
    engage("c1", "p-old", "0.900", at=NOW - timedelta(days=30))

    assert ranking(products_popular(days=7, now=NOW)) == [("p-b", 0.6, 1), ("p-a", 0.5, 1)]
    assert ranking(products_popular(now=NOW)) == [("p-a", 1.0, 2), ("p-old", 0.9, 1), ("p-b", 0.6, 1)]


def test_it_drops_excluded_products_and_still_returns_k(db):
    for i, score in enumerate(["0.900", "0.800", "0.700", "0.600"]):
        engage("c1", f"p-{i}", score)

    popular = products_popular(k=2, exclude={"p-0", "p-2"})

    assert [p.product for p in popular] == ["p-1", "p-3"]


def test_it_returns_at_most_k_products(db):
    for i in range(5):
        engage("c1", f"p-{i}", "0.500")

    assert len(products_popular(k=3)) == 3
    assert products_popular(k=0) == []


def test_it_reads_past_the_cached_depth_when_exclusion_uses_it_up(db, monkeypatch):
    monkeypatch.setattr(selectors, "POPULAR_CACHE_DEPTH", 3)
    for i, score in enumerate(["0.900", "0.800", "0.700", "0.600", "0.500"]):
        engage("c1", f"p-{i}", score)

    popular = products_popular(k=2, exclude=["p-0", "p-1"])

    assert [p.product for p in popular] == ["p-2", "p-3"]


def test_it_ranks_in_one_query(db, django_assert_num_queries):
    for i in range(5):
        engage(f"c{i}", f"p-{i}", "0.500")

    with django_assert_num_queries(1):
        assert len(products_popular(now=NOW, days=3650)) == 5


def test_it_answers_a_repeated_call_from_the_cache(db, django_assert_num_queries):
    engage("c1", "p-a", "0.500")
    first = products_popular(k=5, category=None)

    with django_assert_num_queries(0):
        again = products_popular(k=1)

    assert again == first[:1] == [PopularProduct(product="p-a", score=0.5, customers=1)]


def test_it_caches_each_window_and_category_apart(db, django_assert_num_queries):
    engage("c1", "p-a", "0.500")
    products_popular()

    with django_assert_num_queries(1):
        products_popular(days=7)
    with django_assert_num_queries(1):
        products_popular(category="lighting")
    with django_assert_num_queries(1):
        products_popular(category="")


def test_popular_cache_clear_makes_the_next_call_read_the_database(db, django_assert_num_queries):
    engage("c1", "p-a", "0.500")
    products_popular()
    engage("c1", "p-b", "0.900")
    stale = products_popular()

    popular_cache_clear()
    with django_assert_num_queries(1):
        fresh = products_popular()

    assert [p.product for p in stale] == ["p-a"]
    assert [p.product for p in fresh] == ["p-b", "p-a"]


def test_it_reads_the_cache_time_from_settings(db, settings, django_assert_num_queries):
    settings.RECSITE_POPULAR_CACHE_SECONDS = 0  # 0: Django's cache keeps nothing
    engage("c1", "p-a", "0.500")
    products_popular()

    with django_assert_num_queries(1):
        products_popular()


def test_an_empty_shop_has_no_popular_products(db):
    assert products_popular() == []
