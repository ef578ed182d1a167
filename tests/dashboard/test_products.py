"""The product pages: the popularity ranking, one product's activity and customers, its reach."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from dashboard.selectors.products import product_reach_counts
from engagement.models import Customer, Engagement, Product, ProductDay
from training.services.versions import model_version_promote
from training.serving import recommendations_for

HTMX = {"HX-Request": "true"}
LIST = reverse("dashboard:product_list")


def _detail(product: str) -> str:
    return reverse("dashboard:product_detail", args=[product])


def _reach(product: str) -> str:
    return reverse("dashboard:product_reach", args=[product])


def _similar(product: str) -> str:
    return reverse("dashboard:product_similar", args=[product])


def _ranked(html: str) -> list[str]:
    table = re.search(r'<table id="product-ranking">(.*?)</table>', html, re.S)
    assert table, "no #product-ranking table"
    return re.findall(r'<tr data-product="([^"]+)"', table.group(1))


def _cells(html: str, product: str) -> list[str]:
    row = re.search(rf'<tr data-product="{product}">(.*?)</tr>', html, re.S).group(1)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]


def _engage(customer: Customer, product: Product, score: str, *, days_ago: float = 1, **fields) -> Engagement:
    return Engagement.objects.create(
        customer=customer,
        product=product,
        score=Decimal(score),
        last_event_at=timezone.now() - timedelta(days=days_ago),
        **fields,
    )


def _days(product: Product, *entries: tuple[int, int, int, int]) -> None:
    """Store (days ago, events, clicks, dwell ms) rows for ``product``."""
    today = timezone.now().date()
    ProductDay.objects.bulk_create(
        ProductDay(product=product, day=today - timedelta(days=ago), events=events, clicks=clicks, dwell_ms=dwell)
        for ago, events, clicks, dwell in entries
    )


@pytest.fixture
def shop(db):
    """Four products whose rank depends on the window, the category and the sort key.

    Last 7 days: engagement fresh > steady > books-only; clicks books-only first; dwell steady first.
    Last 30 days adds old-hit, which then leads on engagement.
    """
    customers = Customer.objects.bulk_create(Customer(external_id=f"c-{i}") for i in range(4))
    fresh = Product.objects.create(external_id="p-fresh", name="Fresh", category="games")
    steady = Product.objects.create(external_id="p-steady", name="Steady", category="games")
    books = Product.objects.create(external_id="p-books", name="Books only", category="books")
    old = Product.objects.create(external_id="p-old-hit", name="Old hit", category="games")
    Product.objects.create(external_id="p-retired", category="games", active=False)
    retired = Product.objects.get(external_id="p-retired")
    for customer in customers[:3]:
        _engage(customer, fresh, "0.500")
    _engage(customers[0], steady, "0.600", days_ago=2)
    _engage(customers[1], steady, "0.300", days_ago=3)
    _engage(customers[0], books, "0.400", days_ago=1)
    for customer in customers:
        _engage(customer, old, "0.900", days_ago=20)
        _engage(customer, retired, "0.990", days_ago=1)
    _days(fresh, (0, 10, 1, 5_000), (1, 5, 1, 1_000))
    _days(steady, (2, 8, 2, 90_000), (20, 100, 50, 900_000))
    _days(books, (1, 3, 9, 2_000))
    _days(old, (20, 40, 30, 100_000))
    _days(retired, (1, 500, 500, 9_000_000))
    return customers


# --- access ---


@pytest.mark.parametrize("url", [LIST, _detail("p-fresh"), _reach("p-fresh"), _similar("p-fresh")])
def test_anonymous_visitors_are_sent_to_log_in(url, anonymous_web):
    response = anonymous_web.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(f"/accounts/login/?next={url}")


@pytest.mark.parametrize("url", [LIST, _detail("p-fresh"), _reach("p-fresh"), _similar("p-fresh")])
def test_a_signed_in_user_outside_both_groups_is_refused(url, outsider_web, shop):
    assert outsider_web.get(url).status_code == 403


@pytest.mark.parametrize("url", [LIST, _detail("p-fresh"), _reach("p-fresh"), _similar("p-fresh")])
def test_merchandisers_and_admins_may_read_the_product_pages(url, merchandiser_web, admin_web, shop):
    assert merchandiser_web.get(url).status_code == 200
    assert admin_web.get(url).status_code == 200


@pytest.mark.parametrize("url", [_detail("nothing"), _reach("nothing"), _similar("nothing")])
def test_an_unknown_product_is_not_found(url, merchandiser_web):
    assert merchandiser_web.get(url).status_code == 404


# --- ranking ---


def test_the_ranking_sums_engagement_of_pairs_active_in_the_window(merchandiser_web, shop):
    week = merchandiser_web.get(LIST, {"days": 7}).text
    month = merchandiser_web.get(LIST).text  # 30 days by default
    assert _ranked(week) == ["p-fresh", "p-steady", "p-books"]
    assert _ranked(month) == ["p-old-hit", "p-fresh", "p-steady", "p-books"]
    # rank, id, name, category, engagement, customers, events, clicks, dwell (s)
    assert _cells(week, "p-steady") == ["2", "p-steady", "Steady", "games", "0.900", "2", "8", "2", "90.0"]
    assert _cells(month, "p-steady") == ["3", "p-steady", "Steady", "games", "0.900", "2", "108", "52", "990.0"]


def test_the_ranking_filters_by_category(merchandiser_web, shop):
    assert _ranked(merchandiser_web.get(LIST, {"days": 30, "category": "books"}).text) == ["p-books"]
    games = merchandiser_web.get(LIST, {"days": 7, "category": "games"}).text
    assert _ranked(games) == ["p-fresh", "p-steady"]


@pytest.mark.parametrize(
    ("days", "sort", "expected"),
    [
        (7, "clicks", ["p-books", "p-fresh", "p-steady"]),  # 9, 2 (15 events), 2 (8 events)
        (90, "clicks", ["p-steady", "p-old-hit", "p-books", "p-fresh"]),
        (7, "dwell", ["p-steady", "p-fresh", "p-books"]),
        (90, "dwell", ["p-steady", "p-old-hit", "p-fresh", "p-books"]),
    ],
)
def test_the_ranking_sorts_by_clicks_or_dwell_over_the_windows_days(days, sort, expected, merchandiser_web, shop):
    html = merchandiser_web.get(LIST, {"days": days, "sort": sort}).text
    assert _ranked(html) == expected


def test_a_days_row_on_the_windows_first_day_counts_and_the_day_before_does_not(merchandiser_web, db):
    edge = Product.objects.create(external_id="p-edge")
    outside = Product.objects.create(external_id="p-outside")
    _days(edge, (6, 1, 1, 1))
    _days(outside, (7, 1, 5, 1))
    assert _ranked(merchandiser_web.get(LIST, {"days": 7, "sort": "clicks"}).text) == ["p-edge"]


def test_inactive_products_are_never_ranked(merchandiser_web, shop):
    for sort in ("engagement", "clicks", "dwell"):
        assert "p-retired" not in _ranked(merchandiser_web.get(LIST, {"sort": sort}).text)


def test_the_category_choices_are_those_of_active_products(merchandiser_web, shop):
    Product.objects.create(external_id="p-gone", category="garden", active=False)
    html = merchandiser_web.get(LIST).text
    select = re.search(r'<select name="category">(.*?)</select>', html, re.S).group(1)
    assert re.findall(r'<option value="([a-z]+)"', select) == ["books", "games"]


def test_the_ranking_pages_25_products_at_a_time(merchandiser_web, db):
    customer = Customer.objects.create(external_id="c-1")
    products = Product.objects.bulk_create(Product(external_id=f"p-{i:02d}") for i in range(30))
    for i, product in enumerate(products):
        _engage(customer, product, f"0.{i + 10:02d}")
        _days(product, (0, 1, i, 100 * (30 - i)))
    by_engagement = [f"p-{i:02d}" for i in reversed(range(30))]
    first = merchandiser_web.get(LIST).text
    second = merchandiser_web.get(LIST, {"page": 2}).text
    assert _ranked(first) == by_engagement[:25]
    assert _ranked(second) == by_engagement[25:]
    assert _cells(second, "p-04")[0] == "26"
    assert "Page 2 of 2" in second
    by_dwell = [f"p-{i:02d}" for i in range(30)]
    assert _ranked(merchandiser_web.get(LIST, {"sort": "dwell", "page": 2}).text) == by_dwell[25:]


def test_page_links_keep_the_filters(merchandiser_web, db):
    customer = Customer.objects.create(external_id="c-1")
    for product in Product.objects.bulk_create(Product(external_id=f"p-{i:02d}", category="books") for i in range(30)):
        _engage(customer, product, "0.5")
    html = merchandiser_web.get(LIST, {"days": 90, "category": "books", "sort": "engagement"}).text
    link = "?days=90&amp;category=books&amp;sort=engagement&amp;page=2"
    assert f'<a href="{link}" hx-get="{link}" hx-target="#ranking"' in html


@pytest.mark.parametrize(
    "params",
    [
        {"days": "abc"},
        {"days": "14"},
        {"days": "-7"},
        {"sort": "price"},
        {"category": "no such category"},
        {"page": "x"},
        {"page": "0"},
        {"page": "999"},
        {"days": "7", "sort": "clicks", "page": "-1"},
    ],
)
def test_bad_parameters_fall_back_to_the_defaults(params, merchandiser_web, shop):
    response = merchandiser_web.get(LIST, params)
    assert response.status_code == 200
    assert _ranked(response.text)


def test_a_changed_filter_gets_only_the_ranking_over_htmx(merchandiser_web, shop):
    response = merchandiser_web.get(LIST, {"days": 7, "sort": "clicks"}, headers={**HTMX, "HX-Target": "ranking"})
    assert response.text.lstrip().startswith('<section id="ranking">')
    assert "<form" not in response.text
    assert _ranked(response.text) == ["p-books", "p-fresh", "p-steady"]


def test_the_filter_form_submits_without_js(merchandiser_web, shop):
    html = merchandiser_web.get(LIST).text
    assert f'<form method="get" action="{LIST}" id="ranking-filters"' in html
    assert '<option value="30" selected>' in html and '<button type="submit">' in html


# --- product page ---


def test_the_product_page_shows_the_catalog_facts_and_window_totals(merchandiser_web, shop):
    Product.objects.filter(external_id="p-steady").update(price=Decimal("12.50"))
    html = merchandiser_web.get(_detail("p-steady")).text
    assert "Steady" in html and "games" in html and "12.50" in html and "active" in html
    totals = re.search(r'id="product-totals">(.*?)</section>', html, re.S).group(1)
    assert re.findall(r'class="value">([^<]+)<', totals) == ["108", "52", "990", "2"]


def test_the_product_page_charts_events_per_day_over_90_days(merchandiser_web, shop):
    html = merchandiser_web.get(_detail("p-steady")).text
    charts = re.search(r'id="engagement-over-time">(.*?)</div>', html, re.S).group(1)
    assert "Events per day, last 90 days" in charts
    assert charts.count("<polyline") == 1 and charts.count('<rect class="bar"') == 90


def test_the_top_customers_are_the_most_engaged_ten(merchandiser_web, db):
    product = Product.objects.create(external_id="p-1")
    customers = Customer.objects.bulk_create(Customer(external_id=f"c-{i:02d}") for i in range(12))
    for i, customer in enumerate(customers):
        _engage(customer, product, f"0.{(i * 7) % 12 + 10}")
    expected = list(
        Engagement.objects.filter(product=product).order_by("-score").values_list("customer__external_id", flat=True)
    )[:10]
    html = merchandiser_web.get(_detail("p-1")).text
    table = re.search(r'<table id="top-customers">(.*?)</table>', html, re.S).group(1)
    assert re.findall(r'<tr data-customer="([^"]+)"', table) == expected
    assert f'href="{reverse("dashboard:customer_detail", args=[expected[0]])}"' in table


def test_the_reach_is_loaded_after_the_page_and_linked_without_js(merchandiser_web, shop):
    html = merchandiser_web.get(_detail("p-fresh")).text
    placeholder = re.search(r'<span id="product-reach"[^>]*>(.*?)</span>', html, re.S)
    assert f'hx-get="{_reach("p-fresh")}"' in placeholder.group(0)
    assert 'hx-trigger="load"' in placeholder.group(0) and 'hx-swap="outerHTML"' in placeholder.group(0)
    assert f'<a href="{_reach("p-fresh")}">' in placeholder.group(1)


def test_without_a_model_the_reach_says_none_is_serving(merchandiser_web, shop):
    response = merchandiser_web.get(_reach("p-fresh"), headers={**HTMX, "HX-Target": "product-reach"})
    assert response.text.strip().startswith('<span id="product-reach"')
    assert "No model is serving" in response.text
    assert product_reach_counts() is None


def _reach_shop(make_version):
    """8 customers (one new since training) x 24 products (two inactive), some seen; a model promoted."""
    customers = Customer.objects.bulk_create(Customer(external_id=f"c-{i}") for i in range(8))
    products = Product.objects.bulk_create(
        Product(external_id=f"p-{i:02d}", category="books" if i % 3 else "games", active=i not in (4, 17))
        for i in range(24)
    )
    for i, customer in enumerate(customers):
        for j in range(i % 4 + 1):
            _engage(customer, products[(i * 5 + j * 3) % 24], f"0.{j + 1}00")
    version = make_version(
        customer_ids=[c.external_id for c in customers[:7]], product_ids=[p.external_id for p in products], seed=11
    )
    model_version_promote(version_id=version.pk, actor="test")
    return customers, products, version


def test_reach_counts_equal_a_brute_force_count_of_every_customers_top_ten(make_version):
    customers, products, version = _reach_shop(make_version)
    expected = Counter(
        item.product for customer in customers for item in recommendations_for(customer=customer.external_id).items
    )
    reach = product_reach_counts()
    assert reach.version_id == version.pk
    assert (reach.customers, reach.model_customers) == (8, 7)
    assert reach.counts == dict(expected)
    assert sum(reach.counts.values()) >= 70  # 10 each for the model's customers
    assert reach.of("p-04") == 0  # inactive


def test_reach_counts_the_small_shop_exactly(small_shop, make_version):
    """500 customers x 500 products, 25,000 events; the model knows 450 of the customers."""
    customer_ids = sorted(Customer.objects.values_list("external_id", flat=True))
    product_ids = list(Product.objects.order_by("?").values_list("external_id", flat=True))
    Product.objects.filter(external_id__in=product_ids[:20]).update(active=False)
    version = make_version(customer_ids=customer_ids[50:], product_ids=product_ids, seed=5)
    model_version_promote(version_id=version.pk, actor="test")
    expected = Counter(item.product for c in customer_ids for item in recommendations_for(customer=c).items)
    assert product_reach_counts().counts == dict(expected)


def test_the_reach_fragment_shows_the_count_and_the_page_without_js_too(merchandiser_web, make_version):
    customers, products, version = _reach_shop(make_version)
    count = product_reach_counts().of("p-01")
    fragment = merchandiser_web.get(_reach("p-01"), headers={**HTMX, "HX-Target": "product-reach"}).text
    assert fragment.strip().startswith(f'<span id="product-reach" data-customers="{count}">')
    assert f"version {version.pk}" in fragment and "of 8" in fragment
    page = merchandiser_web.get(_reach("p-01")).text
    assert "<html" in page and 'id="top-customers"' in page
    assert f'<span id="product-reach" data-customers="{count}">' in page


def test_reach_is_computed_once_per_model_version(make_version, django_assert_max_num_queries):
    customers, products, version = _reach_shop(make_version)
    first = product_reach_counts()
    with django_assert_max_num_queries(2):  # the serving refresh only: promoted version, catalog stamp
        assert product_reach_counts() == first
    newer = make_version(
        customer_ids=[c.external_id for c in customers], product_ids=[p.external_id for p in products], seed=12
    )
    model_version_promote(version_id=newer.pk, actor="test")
    again = product_reach_counts()
    assert again.version_id == newer.pk and again.model_customers == 8


# --- queries ---


@pytest.mark.parametrize("sort", ["engagement", "clicks", "dwell"])
def test_the_ranking_takes_a_fixed_number_of_queries(sort, merchandiser_web, db, django_assert_max_num_queries):
    customers = Customer.objects.bulk_create(Customer(external_id=f"c-{i}") for i in range(3))
    for i, product in enumerate(Product.objects.bulk_create(Product(external_id=f"p-{i:02d}") for i in range(60))):
        _days(product, (0, 2, 1, 10), (3, 1, 1, 10))
        for customer in customers:
            _engage(customer, product, f"0.{i + 10}")
    # session, user, two group checks, categories, then the sort key's count and page
    # (engagement: one cached ranking), the other figures for the page, its products.
    with django_assert_max_num_queries(9):
        response = merchandiser_web.get(LIST, {"sort": sort, "page": 2})
    assert len(_ranked(response.text)) == 25
    with django_assert_max_num_queries(9):
        merchandiser_web.get(LIST, {"sort": sort, "page": 3}, headers={**HTMX, "HX-Target": "ranking"})


# --- similar products ---


def test_the_similar_products_are_loaded_after_the_page_and_linked_without_js(merchandiser_web, shop):
    html = merchandiser_web.get(_detail("p-fresh")).text
    placeholder = re.search(r'<div id="product-similar"[^>]*>(.*?)</div>', html, re.S)
    assert f'hx-get="{_similar("p-fresh")}"' in placeholder.group(0) and 'hx-trigger="load"' in placeholder.group(0)
    assert f'<a href="{_similar("p-fresh")}">' in placeholder.group(1)


def test_without_a_model_the_similar_panel_says_none_is_serving(merchandiser_web, shop):
    response = merchandiser_web.get(_similar("p-fresh"), headers={**HTMX, "HX-Target": "product-similar"})
    assert response.text.strip().startswith('<div id="product-similar" data-reason="no_model"')
    assert "No model is serving" in response.text


def test_the_similar_panel_lists_what_the_api_serves_with_links(merchandiser_web, shop_client, make_version):
    _, _, version = _reach_shop(make_version)
    api = shop_client.get("/api/v1/products/p-01/similar/").json()
    fragment = merchandiser_web.get(_similar("p-01"), headers={**HTMX, "HX-Target": "product-similar"}).text
    page = merchandiser_web.get(_similar("p-01")).text  # without JS: the whole page with the panel

    table = re.search(r'<table id="similar-products">(.*?)</table>', fragment, re.S).group(1)
    rows = re.findall(r'<tr data-product="([^"]+)">', table)
    assert rows == [item["product"] for item in api["items"]] and len(rows) == 10
    assert not {"p-01", "p-04", "p-17"} & set(rows)  # itself and the inactive ones
    assert f'href="{_detail(rows[0])}"' in table and f"{api['items'][0]['similarity']:.3f}" in table
    assert f"model version {version.pk}" in fragment
    assert "<h1>" in page and '<table id="similar-products">' in page


def test_a_product_newer_than_the_model_says_so(merchandiser_web, make_version):
    _reach_shop(make_version)
    Product.objects.create(external_id="p-late")
    html = merchandiser_web.get(_similar("p-late"), headers={**HTMX, "HX-Target": "product-similar"}).text
    assert 'data-reason="not_in_model"' in html and "added after the model was trained" in html


def test_the_product_page_and_its_reach_take_a_fixed_number_of_queries(
    merchandiser_web, make_version, django_assert_max_num_queries
):
    _reach_shop(make_version)
    # session, user, two group checks, product, days, totals (two), top customers
    with django_assert_max_num_queries(9):
        merchandiser_web.get(_detail("p-01"))
    # ... and for the reach: the product, the serving refresh (promoted version, catalog
    # stamp; its catalog facts on the first load), and on a cache miss the pairs,
    # customers, products and the popular ranking.
    with django_assert_max_num_queries(12):
        merchandiser_web.get(_reach("p-01"), headers={**HTMX, "HX-Target": "product-reach"})
    with django_assert_max_num_queries(7):
        merchandiser_web.get(_reach("p-02"), headers={**HTMX, "HX-Target": "product-reach"})
    # ... and for the similar panel: session, user, two group checks, the product, the
    # serving refresh (two), and the shortlist's active rows.
    with django_assert_max_num_queries(8):
        merchandiser_web.get(_similar("p-02"), headers={**HTMX, "HX-Target": "product-similar"})


def test_a_product_id_with_a_slash_has_a_page_and_a_reach(merchandiser_web):
    Product.objects.create(external_id="cat/7")
    assert _detail("cat/7") == "/dashboard/products/cat/7/" and _reach("cat/7") == "/dashboard/products/cat/7/reach/"
    assert "cat/7" in merchandiser_web.get(_detail("cat/7")).text
    assert "No model is serving" in merchandiser_web.get(_reach("cat/7")).text
