"""The customer pages: search by id, a customer's engagement history, their recommendations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from datetime import datetime

from django.db.models import Count, FloatField, Max, QuerySet, Sum
from django.db.models.functions import Cast

from engagement.models import Customer, Engagement, Product
from training.selectors import recommendations_get
from training.services.explain import Because

SEARCH_LIMIT = 20
RECOMMENDATIONS_K = 10

# ?sort= -> ORDER BY; every order ends on the product id, so pages never overlap.
HISTORY_SORTS: dict[str, tuple[str, ...]] = {
    "score": ("-score", "-last_event_at", "product__external_id"),
    "last_seen": ("-last_event_at", "product__external_id"),
    "dwell": ("-dwell_ms_total", "product__external_id"),
    "clicks": ("-clicks", "-score", "product__external_id"),
}
HISTORY_DEFAULT_SORT = "score"


@dataclass(frozen=True)
class CustomerMatch:
    external_id: str
    products: int  # products with engagement
    last_seen: datetime | None


@dataclass(frozen=True)
class EngagementSummary:
    products: int
    events: int
    clicks: int
    last_seen: datetime | None


@dataclass(frozen=True)
class RecommendationRow:
    rank: int
    product: Product
    score: float | None  # None: pinned by a merchandising rule, not scored by the ranking
    because: Because | None  # why: the supporting engaged products, or why popular products
    rule: Any = None  # training.services.rules.RuleRef that pinned, boosted or buried it


@dataclass(frozen=True)
class CustomerRecommendations:
    strategy: str  # "model" or "popular"
    customer_vector: str | None  # "trained" or "folded" (at this request, from their products now); None: popular
    model_version: int | None
    rows: list[RecommendationRow]


def customers_search(*, query: str, limit: int = SEARCH_LIMIT) -> list[CustomerMatch]:
    """Return up to ``limit`` customers whose id starts with ``query``, or else those containing it.

    Prefix matches, in id order, are served by the unique index (PostgreSQL uses its
    ``varchar_pattern_ops`` twin). Only when no id starts with the query does it look
    for ids containing it ("00042"): that is a scan of the customer table, so it is not
    paid on every keystroke of an id typed from its start.
    """
    query = query.strip()
    ids = list(
        Customer.objects.filter(external_id__startswith=query)
        .order_by("external_id")
        .values_list("external_id", flat=True)[:limit]
    )
    if query and not ids:
        ids = (
            Customer.objects.filter(external_id__contains=query)
            .exclude(external_id__startswith=query)
            .order_by("external_id")
            .values_list("external_id", flat=True)[: limit - len(ids)]
        )
    if not ids:
        return []
    # One grouped read for the whole list, over the (customer, product) unique index.
    facts = {
        row["customer__external_id"]: row
        for row in Engagement.objects.filter(customer__external_id__in=ids)
        .values("customer__external_id")
        .annotate(products=Count("id"), last_seen=Max("last_event_at"))
    }
    return [
        CustomerMatch(
            external_id=external_id,
            products=facts.get(external_id, {}).get("products", 0),
            last_seen=facts.get(external_id, {}).get("last_seen"),
        )
        for external_id in ids
    ]


def customer_engagement_summary(*, customer: Customer) -> EngagementSummary:
    row = Engagement.objects.filter(customer=customer).aggregate(
        products=Count("id"), events=Sum("event_count"), clicks=Sum("clicks"), last_seen=Max("last_event_at")
    )
    return EngagementSummary(
        products=row["products"], events=row["events"] or 0, clicks=row["clicks"] or 0, last_seen=row["last_seen"]
    )


def customer_engagement_history(*, customer: Customer, sort: str = HISTORY_DEFAULT_SORT) -> QuerySet[Engagement]:
    """Return the customer's engagement rows with their products, in ``sort`` order (unknown: by score).

    ``hover_s`` and ``dwell_s`` are the clipped totals in seconds, computed in SQL.
    """
    order = HISTORY_SORTS.get(sort, HISTORY_SORTS[HISTORY_DEFAULT_SORT])
    return (
        Engagement.objects.filter(customer=customer)
        .select_related("product")
        .annotate(
            hover_s=Cast("hover_ms_total", FloatField()) / 1000.0,
            dwell_s=Cast("dwell_ms_total", FloatField()) / 1000.0,
        )
        .order_by(*order)
    )


def customer_recommendations(*, customer: Customer, k: int = RECOMMENDATIONS_K) -> CustomerRecommendations:
    """Return what the API serves this customer now, with the products' catalog rows and why (``?explain=true``)."""
    answer = recommendations_get(customer=customer.external_id, k=k, explain=True)
    served, reasons = answer.recommendations, answer.because
    products = Product.objects.in_bulk([item.product for item in served.items], field_name="external_id")
    rows = [
        RecommendationRow(rank=item.rank, product=products[item.product], score=item.score,
                          because=reasons.get(item.product), rule=item.rule)  # fmt: skip
        for item in served.items
        if item.product in products  # deleted since the model was trained: nothing to link to
    ]
    return CustomerRecommendations(strategy=served.strategy, customer_vector=served.customer_vector,
                                   model_version=served.model_version, rows=rows)  # fmt: skip
