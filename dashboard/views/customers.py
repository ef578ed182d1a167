"""The customer pages: search by id, and one customer's engagement and recommendations."""

from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render
from django.urls import path
from django.views.decorators.http import require_GET

from dashboard import converters  # noqa: F401 (registers <dashboard_id:>)
from dashboard.access import reader_required
from dashboard.selectors.customers import (
    HISTORY_DEFAULT_SORT,
    HISTORY_SORTS,
    SEARCH_LIMIT,
    customer_engagement_history,
    customer_engagement_summary,
    customer_recommendations,
    customers_search,
)
from engagement.models import Customer

HISTORY_PAGE_SIZE = 25
HISTORY_COLUMNS = (  # (?sort= value, heading) of the sortable columns
    ("dwell", "Dwell (s)"),
    ("clicks", "Clicks"),
    ("score", "Score"),
    ("last_seen", "Last seen"),
)


def _fragment(request, target: str) -> bool:
    """Whether htmx asked for the panel ``target`` only (a history restore wants the whole page)."""
    return bool(request.htmx) and not request.htmx.history_restore_request and request.htmx.target == target


@require_GET
@reader_required
def customer_list(request):
    query = request.GET.get("q", "").strip()
    context = {"nav": "customers", "query": query, "matches": customers_search(query=query), "limit": SEARCH_LIMIT}
    if _fragment(request, "customer-results"):
        return render(request, "dashboard/customer_list.html#customer-results", context)
    return render(request, "dashboard/customer_list.html", context)


@require_GET
@reader_required
def customer_detail(request, customer: str):
    customer = get_object_or_404(Customer, external_id=customer)
    sort = request.GET.get("sort", HISTORY_DEFAULT_SORT)
    if sort not in HISTORY_SORTS:
        sort = HISTORY_DEFAULT_SORT
    history = Paginator(customer_engagement_history(customer=customer, sort=sort), HISTORY_PAGE_SIZE)
    context = {
        "nav": "customers",
        "customer": customer,
        "sort": sort,
        "columns": HISTORY_COLUMNS,
        "page_obj": history.get_page(request.GET.get("page")),
    }
    if _fragment(request, "history"):
        return render(request, "dashboard/customer_detail.html#history", context)
    context["summary"] = customer_engagement_summary(customer=customer)
    context["recommendations"] = customer_recommendations(customer=customer)
    return render(request, "dashboard/customer_detail.html", context)


urlpatterns = [
    path("customers/", customer_list, name="customer_list"),
    # The shop's ids may hold a "/" or be "..": dashboard/converters.py writes and reads them.
    path("customers/<dashboard_id:customer>/", customer_detail, name="customer_detail"),
]
