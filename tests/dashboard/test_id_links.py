"""Every dashboard link to a customer or product opens that id's page, whatever the id (issue 17 row 7).

A browser resolves ``.`` and ``..`` path segments before it sends a request (WHATWG URL
standard, "path state"; ``%2e`` counts as a dot there too, in either case), so a link
built as ``/dashboard/customers/<id>/`` for customer ``..`` opened ``/dashboard/``, and
for ``../x`` opened ``/dashboard/x/``. Likewise a product ``x/reach`` linked to the reach
panel of product ``x``. The dashboard's id converter (dashboard/converters.py) escapes
such pieces with a ``~``; these tests resolve each rendered ``href`` as a browser would,
then route it as Django does. tests/dashboard/test_id_links_browser.py clicks them.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from html import unescape
from urllib.parse import unquote, urlsplit

import pytest
from django.urls import resolve, reverse
from django.utils import timezone

from dashboard.selectors.products import TOP_CUSTOMERS
from engagement.models import Customer, Engagement, Product

# Ids that are, or hold, a dot segment; ids that hold the escape character or a word the
# product routes use after an id; and plain ones whose links must not change.
ODD_IDS = [
    "..", ".", "../x", "x/..", "./.", "a/../b", "...", "a/b", "a//b", "~t", "~..", "t~",
    "%2e%2e", ".%2E", "a\\..\\b", "x/reach", "x/similar", "reach", "c-1",
]  # fmt: skip
_DOT_SEGMENTS = {".", "%2e"}
_DOUBLE_DOT_SEGMENTS = {"..", ".%2e", "%2e.", "%2e%2e"}


def browser_path(href: str) -> str:
    """Return the path a browser requests for ``href`` on this site (WHATWG URL, path state, http scheme)."""
    path = urlsplit(href).path
    assert path.startswith("/"), href  # the dashboard links by absolute path
    segments: list[str] = []
    pieces = re.split(r"[/\\]", path[1:])  # a "\" separates segments too in http(s) URLs
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        if piece.lower() in _DOUBLE_DOT_SEGMENTS:
            if segments:
                segments.pop()
            if last:
                segments.append("")
        elif piece.lower() in _DOT_SEGMENTS:
            if last:
                segments.append("")
        else:
            segments.append(piece)
    return "/" + "/".join(segments)


def opened(href: str) -> tuple[str, str]:
    """Return (route name, id) of the page a browser opens when following ``href``."""
    match = resolve(unquote(browser_path(href)))  # Django routes the decoded path
    return match.url_name, next(iter(match.kwargs.values()), None)


def _links(html: str, attribute: str) -> dict[str, str]:
    """Return {row's id: its link's href} for the rows carrying ``data-<attribute>``."""
    rows = re.findall(rf'<tr data-{attribute}="([^"]*)">.*?<a href="([^"]*)"', html, re.S)
    return {unescape(external_id): unescape(href) for external_id, href in rows}


@pytest.fixture
def odd_shop(db):
    """A customer and a product for each odd id; customer c-1 engaged with every product, every customer with c-1."""
    now = timezone.now()
    customers = Customer.objects.bulk_create(Customer(external_id=i) for i in ODD_IDS)
    products = Product.objects.bulk_create(Product(external_id=i, name=f"Product {i}") for i in ODD_IDS)
    plain_customer = next(c for c in customers if c.external_id == "c-1")
    plain_product = next(p for p in products if p.external_id == "c-1")
    pairs = {(plain_customer, p) for p in products} | {(c, plain_product) for c in customers}
    # Scored in ODD_IDS order, so the product page's top customers are the first of them.
    score = {external_id: Decimal(len(ODD_IDS) - index) / 100 for index, external_id in enumerate(ODD_IDS)}
    Engagement.objects.bulk_create(
        Engagement(customer=c, product=p, score=score[c.external_id], clicks=1, event_count=1,
                   last_event_at=now - timedelta(hours=1))
        for c, p in pairs
    )  # fmt: skip


def test_the_browser_path_helper_resolves_dot_segments_as_the_url_standard_does():
    assert browser_path("/dashboard/customers/../") == "/dashboard/"
    assert browser_path("/dashboard/customers/%2E%2e/x/") == "/dashboard/x/"
    assert browser_path("/dashboard/customers/./") == "/dashboard/customers/"
    assert browser_path("/dashboard/customers/a\\..\\b/") == "/dashboard/customers/b/"
    assert browser_path("/dashboard/customers/...%2F../") == "/dashboard/customers/...%2F../"


def test_the_customer_list_links_each_customer_to_its_own_page(odd_shop, merchandiser_web):
    links = _links(merchandiser_web.get(reverse("dashboard:customer_list")).text, "customer")

    assert set(links) == set(ODD_IDS)
    assert {external_id: opened(href) for external_id, href in links.items()} == {
        i: ("customer_detail", i) for i in ODD_IDS
    }


def test_the_product_ranking_links_each_product_to_its_own_page(odd_shop, merchandiser_web):
    links = _links(merchandiser_web.get(reverse("dashboard:product_list")).text, "product")

    assert set(links) == set(ODD_IDS)
    assert {external_id: opened(href) for external_id, href in links.items()} == {
        i: ("product_detail", i) for i in ODD_IDS
    }


def test_a_customer_page_links_each_engaged_product_to_its_own_page(odd_shop, merchandiser_web):
    html = merchandiser_web.get(reverse("dashboard:customer_detail", args=["c-1"])).text
    history = re.search(r'<table id="engagement-history">(.*?)</table>', html, re.S).group(1)
    links = _links(history, "product")

    assert set(links) == set(ODD_IDS)
    assert {external_id: opened(href) for external_id, href in links.items()} == {
        i: ("product_detail", i) for i in ODD_IDS
    }


def test_a_product_page_links_each_customer_and_its_own_panels_to_their_pages(odd_shop, merchandiser_web):
    html = merchandiser_web.get(reverse("dashboard:product_detail", args=["c-1"])).text
    top = re.search(r'<table id="top-customers">(.*?)</table>', html, re.S).group(1)
    links = _links(top, "customer")

    assert set(links) == set(ODD_IDS[:TOP_CUSTOMERS])
    assert {external_id: opened(href) for external_id, href in links.items()} == {
        i: ("customer_detail", i) for i in ODD_IDS[:TOP_CUSTOMERS]
    }


@pytest.mark.parametrize("external_id", ODD_IDS)
def test_every_page_of_an_odd_id_links_to_that_ids_page_and_panels(external_id, odd_shop, merchandiser_web):
    for name in ("customer_detail", "product_detail", "product_reach", "product_similar"):
        href = reverse(f"dashboard:{name}", args=[external_id])
        assert opened(href) == (name, external_id), href
        assert merchandiser_web.get(browser_path(href)).status_code == 200, href
    html = merchandiser_web.get(reverse("dashboard:product_detail", args=[external_id])).text
    # The lazy panels' hx-get and their no-JS links.
    panels = {unescape(u) for u in re.findall(r'(?:hx-get|href)="([^"]*/(?:reach|similar)/)"', html)}
    assert {opened(u) for u in panels} == {("product_reach", external_id), ("product_similar", external_id)}


@pytest.mark.parametrize("external_id", ["c-1", "a/b", "a//b", "t~", "...", "%2e%2e", "reach"])
def test_links_of_ids_without_a_dot_segment_are_the_paths_they_always_were(external_id):
    assert reverse("dashboard:customer_detail", args=[external_id]) == (
        f"/dashboard/customers/{external_id.replace('%', '%25')}/"
    )
