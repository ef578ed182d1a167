"""The product pages: the popularity ranking, and one product's activity, customers and reach."""

from django.shortcuts import get_object_or_404, render
from django.urls import path
from django.views.decorators.http import require_GET

from dashboard import converters  # noqa: F401 (registers <dashboard_product_id:>)
from dashboard.access import reader_required
from dashboard.charts import bar_chart, line_chart
from dashboard.selectors.products import (
    ACTIVITY_DAYS,
    DEFAULT_SORT,
    RANKING_SORTS,
    REACH_TOP_K,
    SIMILAR_K,
    WINDOWS,
    product_activity,
    product_categories,
    product_reach_counts,
    product_similar_products,
    product_top_customers,
    product_totals,
    products_ranking,
    window_days,
)
from engagement.models import Product

SORT_LABELS = {"engagement": "Engagement", "clicks": "Clicks", "dwell": "Dwell"}


def _fragment(request, target: str) -> bool:
    """Whether htmx asked for the panel ``target`` only (a history restore wants the whole page)."""
    return bool(request.htmx) and not request.htmx.history_restore_request and request.htmx.target == target


@require_GET
@reader_required
def product_list(request):
    categories = product_categories()
    # Anything the form could not have sent falls back to the default, never an error.
    category = request.GET.get("category", "")
    if category not in categories:
        category = ""
    sort = request.GET.get("sort", DEFAULT_SORT)
    if sort not in RANKING_SORTS:
        sort = DEFAULT_SORT
    days = window_days(request.GET.get("days"))
    context = {
        "nav": "products",
        "categories": categories,
        "category": category,
        "days": days,
        "windows": WINDOWS,
        "sort": sort,
        "sorts": [(key, SORT_LABELS[key]) for key in RANKING_SORTS],
        "ranking": products_ranking(
            days=days, category=category or None, sort=sort, page_number=request.GET.get("page")
        ),
    }
    if _fragment(request, "ranking"):
        return render(request, "dashboard/product_list.html#ranking", context)
    return render(request, "dashboard/product_list.html", context)


def _product_context(product: Product) -> dict:
    activity = product_activity(product=product)
    labels = [day.day.strftime("%b %d") for day in activity]
    return {
        "nav": "products",
        "product": product,
        "activity_days": ACTIVITY_DAYS,
        "totals": product_totals(product=product),
        "events_chart": line_chart(
            f"Events per day, last {ACTIVITY_DAYS} days (UTC)", labels, [day.events for day in activity]
        ),
        "clicks_chart": bar_chart(
            f"Clicks per day, last {ACTIVITY_DAYS} days (UTC)", labels, [day.clicks for day in activity]
        ),
        "top_customers": product_top_customers(product=product),
        "top_k": REACH_TOP_K,
        "similar_k": SIMILAR_K,
    }


def _reach_context(product: Product) -> dict:
    reach = product_reach_counts()
    return {"reach_loaded": True, "reach": reach, "reach_count": reach.of(product.external_id) if reach else None}


@require_GET
@reader_required
def product_detail(request, product: str):
    product = get_object_or_404(Product, external_id=product)
    # The reach counts score every customer: loaded after the page (product_reach).
    return render(request, "dashboard/product_detail.html", _product_context(product))


@require_GET
@reader_required
def product_reach(request, product: str):
    """How many customers get the product in their top 10: the page's lazy panel, or the whole page without JS."""
    product = get_object_or_404(Product, external_id=product)
    if _fragment(request, "product-reach"):
        context = {"product": product, "top_k": REACH_TOP_K, **_reach_context(product)}
        return render(request, "dashboard/product_detail.html#reach", context)
    return render(request, "dashboard/product_detail.html", {**_product_context(product), **_reach_context(product)})


@require_GET
@reader_required
def product_similar(request, product: str):
    """The product's nearest products in the model's space: the page's lazy panel, or the whole page without JS."""
    product = get_object_or_404(Product, external_id=product)
    similar = {"similar_loaded": True, "similar": product_similar_products(product=product)}
    if _fragment(request, "product-similar"):
        return render(request, "dashboard/product_detail.html#similar", {"product": product, **similar})
    return render(request, "dashboard/product_detail.html", {**_product_context(product), **similar})


# The shop's ids may hold a "/" or be "..": dashboard/converters.py writes and reads them.
# The reach and similar routes come first, since a detail path would match them; the
# converter writes a piece "reach" or "similar" of a product id as "~reach", so that the
# detail link of product x/reach is not the reach panel of product x.
urlpatterns = [
    path("products/", product_list, name="product_list"),
    path("products/<dashboard_product_id:product>/reach/", product_reach, name="product_reach"),
    path("products/<dashboard_product_id:product>/similar/", product_similar, name="product_similar"),
    path("products/<dashboard_product_id:product>/", product_detail, name="product_detail"),
]
