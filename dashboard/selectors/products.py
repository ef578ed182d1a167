"""The product pages: the popularity ranking, one product's activity and customers, its reach."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.core.paginator import Page, Paginator
from django.db.models import Count, FloatField, QuerySet, Sum
from django.db.models.functions import Cast, Round
from django.utils import timezone

from engagement.models import Customer, Engagement, Product, ProductDay
from engagement.selectors import POPULAR_CACHE_DEPTH, popular_cache_version, products_popular
from training.ml.topk import top_k
from training.serving import ServedModel, served_model
from training.services.explain import SimilarProducts, products_similar

WINDOWS = (7, 30, 90)  # days
DEFAULT_WINDOW = 30
RANKING_SORTS = ("engagement", "clicks", "dwell")
DEFAULT_SORT = "engagement"
PAGE_SIZE = 25
ACTIVITY_DAYS = 90
TOP_CUSTOMERS = 10
REACH_TOP_K = 10  # "in the top 10": what recommendations_for serves by default
REACH_CACHE_SECONDS = 300
REACH_BATCH = 256  # customers scored per CatalogScorer call (its own chunking bounds the memory)
SIMILAR_K = 10


@dataclass(frozen=True)
class RankedProduct:
    rank: int
    product: Product
    engagement: float  # summed Engagement.score of the pairs active in the window
    customers: int  # pairs active in the window
    events: int  # ProductDay sums over the window's days
    clicks: int
    dwell_s: float


@dataclass(frozen=True)
class ProductRanking:
    page: Page  # the driving rows' page: numbers and links
    rows: list[RankedProduct]


@dataclass(frozen=True)
class DayActivity:
    day: date
    events: int
    clicks: int


@dataclass(frozen=True)
class ProductTotals:
    events: int  # in the activity window
    clicks: int
    dwell_s: float
    customers: int  # with any engagement, all time


@dataclass(frozen=True)
class ReachCounts:
    """How many customers get each product in their top 10 now, as served."""

    version_id: int
    customers: int  # every customer of the shop
    model_customers: int  # of them, known to the model; the others get popular products
    counts: dict[str, int]  # product external id -> customers (products reaching none left out)
    computed_at: datetime
    seconds: float  # how long the computation took

    def of(self, product: str) -> int:
        return self.counts.get(product, 0)


def window_days(value: str | None) -> int:
    """Return ``value`` as one of WINDOWS, or the default window for anything else."""
    try:
        days = int(value or "")
    except ValueError:
        return DEFAULT_WINDOW
    return days if days in WINDOWS else DEFAULT_WINDOW


def product_categories() -> list[str]:
    """Return the distinct categories of active products, in name order."""
    return list(
        Product.objects.filter(active=True)
        .exclude(category="")
        .values_list("category", flat=True)
        .distinct()
        .order_by("category")
    )


def products_ranking(
    *, days: int, category: str | None = None, sort: str = DEFAULT_SORT, page_number: int | str | None = 1
) -> ProductRanking:
    """Return one page of active products ranked by ``sort`` over the last ``days`` days.

    The sort key's query orders and pages; the other figures are read for that page's
    products only, so every page costs the same few queries.
    """
    now = timezone.now()
    first_day = now.date() - timedelta(days=days - 1)
    if sort == "engagement":
        page = Paginator(_engagement_ranking(days=days, category=category), PAGE_SIZE).get_page(page_number)
        engagement = {product_id: (total, customers) for product_id, total, customers in page.object_list}
        ids = list(engagement)
        activity = {row["product_id"]: row for row in _days_by_product(first_day=first_day).filter(product_id__in=ids)}
    else:
        days_ranked = _days_by_product(first_day=first_day).filter(product__active=True)
        if category:
            days_ranked = days_ranked.filter(product__category=category)
        key = "clicks" if sort == "clicks" else "dwell_ms"
        days_ranked = days_ranked.order_by(f"-{key}", "-events", "product__external_id")
        page = Paginator(days_ranked, PAGE_SIZE).get_page(page_number)
        activity = {row["product_id"]: row for row in page.object_list}
        ids = list(activity)
        engagement = {
            row["product_id"]: (float(row["total"]), row["customers"])
            for row in _engagement_by_product(since=now - timedelta(days=days)).filter(product_id__in=ids)
        }
    products = Product.objects.in_bulk(ids)
    no_activity = {"events": 0, "clicks": 0, "dwell_ms": 0}
    rows = []
    for rank, product_id in enumerate(ids, start=page.start_index()):
        if product_id not in products:
            continue  # deleted since the cached ranking was read
        total, customers = engagement.get(product_id, (0.0, 0))
        day_sums = activity.get(product_id, no_activity)
        rows.append(
            RankedProduct(
                rank=rank,
                product=products[product_id],
                engagement=round(total, 3),
                customers=customers,
                events=day_sums["events"],
                clicks=day_sums["clicks"],
                dwell_s=day_sums["dwell_ms"] / 1000,
            )
        )
    return ProductRanking(page=page, rows=rows)


def _days_by_product(*, first_day: date) -> QuerySet:
    # Walks product_day_day; at most (products x days) rows: 6 ms for 90 days on the demo shop.
    return (
        ProductDay.objects.filter(day__gte=first_day)
        .values("product_id")
        .annotate(events=Sum("events"), clicks=Sum("clicks"), dwell_ms=Sum("dwell_ms"))
    )


def _engagement_by_product(*, since: datetime) -> QuerySet:
    # Rounded in SQL, as products_popular does: SQLite sums the decimal scores as floats.
    # As there too, customers flagged for click fraud (engagement.services.fraud) don't count.
    return (
        Engagement.objects.filter(last_event_at__gte=since, customer__suspicion__isnull=True)
        .values("product_id")
        .annotate(total=Round(Sum("score"), 3), customers=Count("customer_id"))
    )


def _engagement_ranking(*, days: int, category: str | None) -> list[tuple[int, float, int]]:
    """Return (product id, summed score, customers) for every active product engaged in the window, best first.

    The same ranking as products_popular (ties: more customers, then the product id),
    to any depth. The GROUP BY scans every pair: ~90 ms on the demo shop (SQLite,
    106,000 pairs) for any window, and paging it in SQL costs it twice (COUNT, then the
    page), ~180 ms. So the whole ranking is cached like the popular one, under the same
    version, and pages are slices of it: a catalog upsert (popular_cache_clear) retires it.
    """
    key = f"dashboard:product-ranking:{popular_cache_version()}:{days}:{_text_key(category)}"
    ranking = cache.get(key)
    if ranking is None:
        pairs = _engagement_by_product(since=timezone.now() - timedelta(days=days)).filter(product__active=True)
        if category:
            pairs = pairs.filter(product__category=category)
        ranking = [
            (row["product_id"], float(row["total"]), row["customers"])
            for row in pairs.order_by("-total", "-customers", "product__external_id")
        ]
        cache.set(key, ranking, timeout=settings.RECSITE_POPULAR_CACHE_SECONDS)
    return ranking


def _text_key(text: str | None) -> str:
    # The shop's free text, hashed so the cache key is safe for any backend.
    return "all" if not text else hashlib.sha256(text.encode()).hexdigest()[:32]


def product_activity(*, product: Product, days: int = ACTIVITY_DAYS, today: date | None = None) -> list[DayActivity]:
    """Return the product's folded events and clicks per UTC day, oldest first, zeros included."""
    today = today or timezone.now().date()
    first = today - timedelta(days=days - 1)
    rows = ProductDay.objects.filter(product=product, day__gte=first, day__lte=today).values_list(
        "day", "events", "clicks"
    )
    found = {day: (events, clicks) for day, events, clicks in rows}
    return [DayActivity(day, *found.get(day, (0, 0))) for day in (first + timedelta(days=i) for i in range(days))]


def product_totals(*, product: Product, days: int = ACTIVITY_DAYS, today: date | None = None) -> ProductTotals:
    """Return the product's events, clicks and dwell over the last ``days`` days and its engaged customers."""
    today = today or timezone.now().date()
    sums = ProductDay.objects.filter(product=product, day__gte=today - timedelta(days=days - 1)).aggregate(
        events=Sum("events"), clicks=Sum("clicks"), dwell_ms=Sum("dwell_ms")
    )
    return ProductTotals(
        events=sums["events"] or 0,
        clicks=sums["clicks"] or 0,
        dwell_s=(sums["dwell_ms"] or 0) / 1000,
        customers=Engagement.objects.filter(product=product).count(),
    )


def product_top_customers(*, product: Product, limit: int = TOP_CUSTOMERS) -> QuerySet[Engagement]:
    """Return the product's ``limit`` most engaged customers' rows (engagement_product_score index)."""
    return (
        Engagement.objects.filter(product=product)
        .select_related("customer")
        .annotate(dwell_s=Cast("dwell_ms_total", FloatField()) / 1000.0)
        .order_by("-score", "-last_event_at", "customer__external_id")[:limit]
    )


def product_similar_products(*, product: Product, k: int = SIMILAR_K) -> SimilarProducts:
    """Return what GET /api/v1/products/<id>/similar/ answers: the nearest active products in the model's space."""
    return products_similar(product=product, k=k)


def product_reach_counts() -> ReachCounts | None:
    """Return how many customers get each product in their top 10 from the served model, or None if none serves.

    Customers the model knows get its top 10 of the active products they have not
    engaged with, exactly as recommendations_for ranks them; the others get the popular
    ranking minus what they have seen. Every product is counted in one pass over
    customer batches and cached per (model version, catalog, popularity ranking) for
    REACH_CACHE_SECONDS. Measured on the demo shop (SQLite; 2,000 customers x 500
    products, 106,000 pairs; a random embed_dim=32 model with the dot branch; one
    torch thread as serving runs): 0.4-0.8 s a computation, ~0.55 s of it scoring and
    ~60 ms reading the pairs; too slow for a page request, hence the lazy panel. Counts
    equal a brute-force count over recommendations_for there. Engagement folded within
    the cache's lifetime moves a count by a customer or two.
    """
    served = served_model()
    if served is None:
        return None
    stamp = hashlib.sha256(repr(served.catalog_stamp).encode()).hexdigest()[:16]
    key = f"dashboard:reach:{popular_cache_version()}:{served.version_id}:{served.loaded.sha256[:16]}:{stamp}"
    stored = cache.get(key)
    if stored is None:
        stored = _reach(served)
        cache.set(key, stored, timeout=REACH_CACHE_SECONDS)
    version_id, customers, model_customers, counts, computed_at, seconds = stored
    return ReachCounts(version_id, customers, model_customers, counts, computed_at, seconds)


def _reach(served: ServedModel, *, k: int = REACH_TOP_K) -> tuple:
    started = time.perf_counter()
    loaded = served.loaded
    # Pairs first: a customer or product created after this read has no pair in it.
    pairs = np.array(list(Engagement.objects.values_list("customer_id", "product_id")), dtype=np.int64).reshape(-1, 2)
    customer_rows = list(Customer.objects.values_list("id", "external_id"))
    product_rows = list(Product.objects.values_list("id", "external_id"))
    customer_pks = np.array([pk for pk, _ in customer_rows], dtype=np.int64)
    # Primary key -> model index, -1 where the model does not know it.
    customer_model = _lookup(customer_rows, loaded.customer_index)
    product_model = _lookup(product_rows, loaded.product_index)
    model_index = _at(customer_model, customer_pks)  # per customer row
    pair_customer_model = _at(customer_model, pairs[:, 0])
    counts = np.zeros(len(loaded.product_ids), dtype=np.int64)

    # The model's customers, in batches of model indices, each batch with what its
    # customers have seen (pairs sorted by model index, sliced by searchsorted).
    known = np.zeros(loaded.scorer.num_customers, dtype=bool)
    known[model_index[model_index >= 0]] = True
    seen_product = _at(product_model, pairs[:, 1])
    keep = (pair_customer_model >= 0) & (seen_product >= 0)
    order = np.argsort(pair_customer_model[keep], kind="stable")
    seen_customer, seen_product = pair_customer_model[keep][order], seen_product[keep][order]
    for start in range(0, len(known), REACH_BATCH):
        stop = min(start + REACH_BATCH, len(known))
        batch = np.flatnonzero(known[start:stop]) + start
        if not len(batch):
            continue
        scores = loaded.scorer.score(batch)
        allowed = np.repeat(served.active[None, :], len(batch), axis=0)
        row_of = np.full(stop - start, -1, dtype=np.int64)
        row_of[batch - start] = np.arange(len(batch))
        lo, hi = np.searchsorted(seen_customer, [start, stop])
        allowed[row_of[seen_customer[lo:hi] - start], seen_product[lo:hi]] = False
        scores[~allowed] = -np.inf
        counts += _top_k_counts(scores, k=k)
    result = {loaded.product_ids[i]: int(counts[i]) for i in np.flatnonzero(counts)}

    # Everyone else gets products_popular(k=10, exclude=seen): the cached ranking minus
    # what they have seen. (Past its depth products_popular asks the database once
    # more; a customer who has seen nearly the whole ranking is not worth that here.)
    others = customer_pks[model_index < 0]
    if len(others):
        popular = [p.product for p in products_popular(k=POPULAR_CACHE_DEPTH)]
        position = _lookup(product_rows, {product: i for i, product in enumerate(popular)})
        slot = np.full(int(others.max()) + 1, -1, dtype=np.int64)
        slot[others] = np.arange(len(others))
        seen_slot, seen_position = _at(slot, pairs[:, 0]), _at(position, pairs[:, 1])
        keep = (seen_slot >= 0) & (seen_position >= 0)
        seen_slot, seen_position = seen_slot[keep], seen_position[keep]
        popular_counts = np.zeros(len(popular), dtype=np.int64)
        for start in range(0, len(others), REACH_BATCH):
            stop = min(start + REACH_BATCH, len(others))
            unseen = np.ones((stop - start, len(popular)), dtype=bool)
            in_batch = (seen_slot >= start) & (seen_slot < stop)
            unseen[seen_slot[in_batch] - start, seen_position[in_batch]] = False
            popular_counts += (unseen & (np.cumsum(unseen, axis=1) <= k)).sum(axis=0)
        for i in np.flatnonzero(popular_counts):
            result[popular[i]] = result.get(popular[i], 0) + int(popular_counts[i])

    seconds = round(time.perf_counter() - started, 3)
    return (served.version_id, len(customer_rows), len(customer_rows) - len(others), result, timezone.now(), seconds)


def _lookup(rows: list[tuple[int, str]], index: dict[str, int]) -> np.ndarray:
    """Return an array mapping each row's primary key to ``index[external id]``, -1 where absent."""
    table = np.full(max((pk for pk, _ in rows), default=0) + 1, -1, dtype=np.int64)
    for pk, external_id in rows:
        table[pk] = index.get(external_id, -1)
    return table


def _at(table: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Return ``table[keys]``, -1 for keys past its end."""
    inside = keys < len(table)
    return np.where(inside, table[np.where(inside, keys, 0)], -1)


def _top_k_counts(scores: np.ndarray, *, k: int) -> np.ndarray:
    """Return, per product, how many rows have it in their top ``k`` finite scores.

    Ranked as recommendations_for ranks (``top_k``: by score, ties by the lower product index).
    """
    top = top_k(scores, k)
    finite = np.take_along_axis(scores, top, axis=1) > -np.inf
    return np.bincount(top[finite], minlength=scores.shape[1])
