"""Reads (STYLE 4): popular products; a customer's engagement as it is this moment."""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Sum
from django.db.models.functions import Round
from django.utils import timezone

from .models import FOLD_WATERMARK, Customer, Engagement, EngagementWatermark, InteractionEvent

# How many ranked products one cache entry holds: `exclude` and `k` are applied to it,
# so it must be deeper than k (at most 100 through the API) plus what a customer has seen.
POPULAR_CACHE_DEPTH = 500
# Entries are keyed under the value of this key; popular_cache_clear() sets a new one,
# so one write retires every (days, category) entry at once. Any fresh value will do
# (a clock reading), which also covers the key having been evicted.
_VERSION_KEY = "popular:version"
# The windows `days` may take through the API: each (days, category) is its own cached
# aggregate, so an open range let one key make a new uncached 150-450 ms query per value.
# They include the dashboard's product-page windows (7, 30, 90).
POPULAR_WINDOWS = (1, 7, 30, 90, 365)


@dataclass(frozen=True)
class PopularProduct:
    product: str  # the shop's product id
    score: float  # summed engagement score of its customers, 3 decimals
    customers: int  # customers with engagement on it (in the window)


def products_popular(
    *,
    k: int = 10,
    days: int | None = None,
    category: str | None = None,
    exclude: Collection[str] = (),
    now: datetime | None = None,
) -> list[PopularProduct]:
    """Return the ``k`` active products with the most summed engagement, best first.

    ``days`` counts only customer x product pairs active in the last ``days`` days;
    ``exclude`` drops those product ids (e.g. what a customer has seen). Ties go to more
    customers, then to the product id. The ranking is cached per (days, category) for
    ``RECSITE_POPULAR_CACHE_SECONDS``; an explicit ``now`` reads the database directly,
    since a cached ranking is as of "about now", not of that moment.
    """
    if k <= 0:
        return []
    excluded = set(exclude)
    if now is None:
        ranked = _ranked_cached(days=days, category=category)
    else:
        ranked = _ranked(days=days, category=category, now=now, limit=POPULAR_CACHE_DEPTH)
    items = [p for p in ranked if p.product not in excluded][:k]
    if len(items) < k and len(ranked) == POPULAR_CACHE_DEPTH:
        # The cached depth ran out (a long exclude list, or k over the depth) while more
        # products may rank below it: ask the database past it, once.
        items = _ranked(
            days=days, category=category, now=now or timezone.now(), limit=k, exclude=excluded
        )
    return items


def popular_cache_clear() -> None:
    """Forget every cached popularity ranking (tests, after catalog changes)."""
    cache.set(_VERSION_KEY, time.time_ns(), timeout=None)


def popular_cache_version() -> int:
    """Return the value popularity caches are keyed under; popular_cache_clear() changes it.

    Other cached aggregates of engagement (the dashboard's rankings) key under it too,
    so one clear retires them all.
    """
    version = cache.get(_VERSION_KEY)
    if version is None:
        cache.add(_VERSION_KEY, time.time_ns(), timeout=None)
        version = cache.get(_VERSION_KEY)
    return version


def _ranked_cached(*, days: int | None, category: str | None) -> list[PopularProduct]:
    version = popular_cache_version()
    # The category is the shop's free text: hashed, so the key is safe for any backend.
    category_key = "all" if category is None else hashlib.sha256(category.encode()).hexdigest()[:32]
    key = f"popular:{version}:{'all' if days is None else days}:{category_key}"
    rows = cache.get(key)
    if rows is None:
        ranked = _ranked(days=days, category=category, now=timezone.now(), limit=POPULAR_CACHE_DEPTH)
        # Plain tuples, so a cached entry survives a change to the dataclass.
        rows = [(p.product, p.score, p.customers) for p in ranked]
        cache.set(key, rows, timeout=settings.RECSITE_POPULAR_CACHE_SECONDS)
    return [PopularProduct(product=p, score=s, customers=c) for p, s, c in rows]


def _ranked(
    *,
    days: int | None,
    category: str | None,
    now: datetime,
    limit: int,
    exclude: Collection[str] = (),
) -> list[PopularProduct]:
    """Rank products in one aggregate query: GROUP BY product over Engagement."""
    # Customers flagged for click fraud do not make a product popular (services/fraud.py).
    pairs = Engagement.objects.filter(product__active=True, customer__suspicion__isnull=True)
    if days is not None:
        pairs = pairs.filter(last_event_at__gte=now - timedelta(days=days))
    if category is not None:
        pairs = pairs.filter(product__category=category)
    if exclude:
        pairs = pairs.exclude(product__external_id__in=list(exclude))
    # The stored score is as of each pair's own last event, not decayed to now as
    # training does (score_at). Good enough here: with `days`, every pair counted was
    # active within the window, and with the 30-day half-life decaying it to now would
    # take at most 1 - 0.5 ** (days / 30) off (15 % for a week), alike for pairs of the
    # same age; not worth a per-row exp() in SQL for a popularity list. Without `days`,
    # a long-idle pair keeps the score it had when last active.
    #
    # Rounded in SQL before ordering: SQLite sums the scores as floats, and
    # 0.7 + 0.1 < 0.8 there would break ties that should go to the customer count.
    ranked = (
        pairs.values("product_id", "product__external_id")
        .annotate(total=Round(Sum("score"), 3), customers=Count("customer_id"))
        .order_by("-total", "-customers", "product__external_id")[:limit]
    )
    return [
        PopularProduct(
            product=row["product__external_id"],
            score=round(float(row["total"]), 3),
            customers=row["customers"],
        )
        for row in ranked
    ]


@dataclass(frozen=True)
class EngagedNow:
    """A customer's products as of this moment: folded engagement and the events the fold has not reached."""

    seen: list[int]  # product pks with any event, newest first (impressions too: what exclude_seen leaves out)
    engaged: list[int]  # those with some signal (hover, dwell or a click), newest first: what a fold reads
    events_since: int  # the customer's events with an id above ``since`` (0 when ``since`` is None)


def customer_engaged_now(customer: str, *, since: int | None = None) -> EngagedNow:
    """Return the customer's products as they are now, in one statement.

    Engagement rows hold what the periodic fold has folded; events above the fold's
    watermark are not there yet (at most RECSITE_FOLD_EVERY_SECONDS old), so they are
    read from the event table itself: an event accepted a moment ago counts at once.
    ``since`` (an event id: what a model was trained through) also counts the customer's
    events after it, so a caller can tell whether the customer changed since.
    """
    args = [customer, customer, FOLD_WATERMARK] + ([customer, since] if since is not None else [])
    with connection.cursor() as cursor:
        cursor.execute(_engaged_now_statements()[since is not None], args)
        rows = cursor.fetchall()
    newest: dict[int, tuple] = {}
    events_since = 0
    for product, at, signal, count in rows:
        if product is None:
            events_since = int(count or 0)
            continue
        known = newest.get(product)
        # Per product: its newest time, and whether any of its rows carried a signal.
        if known is None:
            newest[product] = (at, bool(signal))
        else:
            newest[product] = (max(known[0], at), known[1] or bool(signal))
    order = sorted(newest, key=lambda pk: (newest[pk][0], pk), reverse=True)
    return EngagedNow(seen=order, engaged=[pk for pk in order if newest[pk][1]], events_since=events_since)


@functools.cache
def _engaged_now_statements() -> dict[bool, str]:
    """customer_engaged_now's statement, without and with the events-since count, as SQL text.

    Not through the ORM, as training.serving's request queries: it runs on every
    recommendation request. The names still come from the models.
    """
    q = connection.ops.quote_name
    e, v, c, w = Engagement._meta, InteractionEvent._meta, Customer._meta, EngagementWatermark._meta

    def col(meta, name: str) -> str:
        return q(meta.get_field(name).column)

    by_customer = f"JOIN {q(c.db_table)} c ON c.{q(c.pk.column)} = {{}}.{{}} WHERE c.{col(c, 'external_id')} = %s"
    folded = (
        f"SELECT e.{col(e, 'product')}, e.{col(e, 'last_event_at')},"
        f" CASE WHEN e.{col(e, 'hover_decayed')} > 0 OR e.{col(e, 'dwell_decayed')} > 0"
        f" OR e.{col(e, 'clicks_decayed')} > 0 THEN 1 ELSE 0 END, CAST(NULL AS BIGINT)"
        f" FROM {q(e.db_table)} e " + by_customer.format("e", col(e, "customer"))
    )
    watermark = f"SELECT w.{col(w, 'last_event_id')} FROM {q(w.db_table)} w WHERE w.{q(w.pk.column)} = %s"
    pending = (
        f"SELECT v.{col(v, 'product')}, v.{col(v, 'occurred_at')},"
        f" CASE WHEN v.{col(v, 'hover_ms')} > 0 OR v.{col(v, 'dwell_ms')} > 0"
        f" OR v.{col(v, 'clicked')} THEN 1 ELSE 0 END, CAST(NULL AS BIGINT)"
        f" FROM {q(v.db_table)} v " + by_customer.format("v", col(v, "customer"))
        + f" AND v.{q(v.pk.column)} > COALESCE(({watermark}), 0)"
    )
    since = (
        f"SELECT NULL, NULL, NULL, COUNT(*) FROM {q(v.db_table)} v " + by_customer.format("v", col(v, "customer"))
        + f" AND v.{q(v.pk.column)} > %s"
    )
    return {False: f"{folded} UNION ALL {pending}", True: f"{folded} UNION ALL {pending} UNION ALL {since}"}
