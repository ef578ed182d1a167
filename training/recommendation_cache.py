"""Precomputed recommendations: where they are kept, and answering a request from them.

Workers write each customer's top ``RECSITE_PRECOMPUTE_K`` after every promotion
(``training.services.precompute``); ``recommendations_cached`` answers a plain request
from there and returns None whenever the answer must be computed on the fly instead
(``training.serving.recommendations_for``). docs/precompute.md has the design.

A cached list is served only while both of these hold:

- It belongs to the version this process serves. The key holds the version id and
  the start of its artifact's sha256, and is built from ``served_model()``, so a
  process that still serves version N reads only version N's lists, and a list can
  outlive its version in the cache but is never served for another one.
- The customer's engagement is what it was when the list was computed. Each entry
  carries the customer's *engagement stamp*, (rows, summed event_count) of their
  Engagement rows, read in the same statement as the seen products the list leaves
  out; a request reads the stamp again and serves the entry only if it is equal.

Why a stamp checked on read rather than deleting keys after each fold: a delete runs
once, at one moment. A chunk task that read a customer's seen products before a fold
committed and writes its list after the fold's delete would leave a list computed from
the old engagement in the cache until it expires. The stamp makes an entry describe
what it was computed from, so the order of the write and the fold does not matter:
any fold that adds events for a customer raises their summed event_count (events are
append-only, and each one folded adds 1 to one of the customer's rows), so once it
has committed no request sees the old stamp again, whenever the list was written.
It needs no clock, and a full refold (``compute_engagement --full``) rebuilds the same
rows and counts, so it keeps lists that are still right. The cost is one indexed
read per request, in place of the on-the-fly path's seen-products query (both read
the customer's rows through the (customer, product) unique index), and it shares its
round trip with the catalog check below.

Inactive products: the list is ranked with the catalog as the worker saw it, so it
holds ``ACTIVE_CHECK_MARGIN`` spare products, and a request checks its first
k + margin against the catalog exactly as ``recommendations_for`` checks its
shortlist. A product deactivated since is never served; one activated since appears in
cached lists only after the next precompute.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import connection

from engagement.models import Customer, Engagement, InteractionEvent, Product
from training.serving import (
    ACTIVE_CHECK_MARGIN,
    MAX_K,
    RecommendedItem,
    Recommendations,
    folded_through,
    served_model,
)

# Bumped when the entry's layout changes: an entry of another layout is a miss.
ENTRY_FORMAT = 2

EngagementStamp = tuple[int, int]  # (Engagement rows, summed event_count) of one customer


def list_key(*, version_id: int, sha256: str, customer_index: int) -> str:
    """Return the cache key of one customer's list under one model version.

    The customer's index in the model, not their id: short, and never a character a
    cache key must not hold. The sha256 prefix keeps a version id reused by a rebuilt
    database (a restore, a test run) from reading another model's lists.
    """
    return f"recsite:recs:{version_id}:{sha256[:12]}:{customer_index}"


def engagement_stamp_and_active(
    customer: str, products: list[str], *, since: int | None = None
) -> tuple[EngagementStamp, set[str], int]:
    """Return the customer's engagement stamp as it is now, which of ``products`` are active, and events since.

    The last: the customer's events with an id above ``since`` (the event the served
    model's data was read through; 0 when None), folded or not. One statement, one
    round trip: this is most of a cached answer's database time.
    """
    e, c, p, v = Engagement._meta, Customer._meta, Product._meta, InteractionEvent._meta
    quote = connection.ops.quote_name

    def column(meta, name: str) -> str:
        return quote(meta.get_field(name).column)

    by_customer = (
        f" JOIN {quote(c.db_table)} c ON c.{quote(c.pk.column)} = {{}} WHERE c.{column(c, 'external_id')} = %s"
    )
    # COUNT and SUM without GROUP BY: exactly one row, (0, NULL) for a customer without engagement.
    sql = (
        f"SELECT NULL, COUNT(*), SUM(e.{column(e, 'event_count')}) FROM {quote(e.db_table)} e"
        + by_customer.format(f"e.{column(e, 'customer')}")
    )
    params: list = [customer]
    if since is not None:
        sql += (
            f" UNION ALL SELECT '', NULL, COUNT(*) FROM {quote(v.db_table)} v"
            + by_customer.format(f"v.{column(v, 'customer')}") + f" AND v.{quote(v.pk.column)} > %s"
        )
        params += [customer, since]
    if products:
        sql += (
            f" UNION ALL SELECT p.{column(p, 'external_id')}, NULL, NULL FROM {quote(p.db_table)} p"
            f" WHERE p.{column(p, 'active')} AND p.{column(p, 'external_id')} IN ({', '.join(['%s'] * len(products))})"
        )
        params += products
    stamp, active, events_since = (0, 0), set(), 0
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for product, rows, events in cursor.fetchall():
            if product is None:
                stamp = (rows, events or 0)
            elif product == "":  # no product id is empty (the API refuses one)
                events_since = events
            else:
                active.add(product)
    return stamp, active, events_since


def engagement_seen_and_stamps(customers: list[str]) -> dict[str, tuple[EngagementStamp, list[str], list[str]]]:
    """Return each customer's engagement stamp, seen products and engaged ones (newest first), in one statement.

    One statement, so the stamp describes exactly the products returned with it.
    "Engaged" are those with some signal, newest first (ties: the larger primary key), as
    engagement.selectors.customer_engaged_now orders them for a customer with no events
    past the fold: what the neighbour blend reads. Customers without engagement are
    absent (their stamp is (0, 0), nothing seen).
    """
    rows = Engagement.objects.filter(customer__external_id__in=customers).values_list(
        "customer__external_id", "product__external_id", "event_count", "last_event_at", "product_id",
        "hover_decayed", "dwell_decayed", "clicks_decayed",
    )  # fmt: skip
    seen: dict[str, list[str]] = defaultdict(list)
    engaged: dict[str, list[tuple]] = defaultdict(list)
    events: dict[str, int] = defaultdict(int)
    for customer, product, event_count, at, pk, hover, dwell, clicks in rows:
        seen[customer].append(product)
        events[customer] += event_count
        if hover > 0 or dwell > 0 or clicks > 0:
            engaged[customer].append((at, pk, product))
    return {
        customer: ((len(products), events[customer]), products,
                   [product for _, _, product in sorted(engaged[customer], reverse=True)])
        for customer, products in seen.items()
    }  # fmt: skip


def entry_encode(stamp: EngagementStamp, k: int, products: np.ndarray, scores: np.ndarray) -> tuple:
    """Return what is stored for one customer: the largest k it answers, model product indices by rank, scores.

    ``products`` are the best k + ACTIVE_CHECK_MARGIN (fewer when fewer are allowed);
    scores are the scorer's float32, so the answer rounds exactly as on the fly.
    """
    return (
        ENTRY_FORMAT,
        stamp,
        k,
        np.ascontiguousarray(products, dtype=np.int32).tobytes(),
        np.ascontiguousarray(scores, dtype=np.float32).tobytes(),
    )


def recommendations_cached(
    *, customer: str, k: int = 10, category: str | None = None, exclude_seen: bool = True
) -> Recommendations | None:
    """Return the customer's top ``k`` from the precomputed lists, or None to compute them on the fly.

    None when precompute is off, for a request a list cannot answer (a category, seen
    products wanted, k above RECSITE_PRECOMPUTE_K), for a customer the served model
    does not know, and when the list is missing, of another layout or stale.
    """
    if not settings.RECSITE_PRECOMPUTE or category is not None or not exclude_seen:
        return None
    k = max(1, min(k, MAX_K))
    if k > settings.RECSITE_PRECOMPUTE_K:
        return None
    served = served_model()  # one reference for the whole request: a swap can't split it
    if served is None:
        return None
    index = served.loaded.customer_index.get(customer)
    if index is None:
        return None
    entry = cache.get(list_key(version_id=served.version_id, sha256=served.loaded.sha256, customer_index=index))
    if entry is None or entry[0] != ENTRY_FORMAT or entry[2] < k:  # missing, another layout, a smaller k
        return None
    _, stored_stamp, _, stored_products, stored_scores = entry
    # The same check, on the same number of candidates, as recommendations_for's shortlist.
    take = k + ACTIVE_CHECK_MARGIN
    top = np.frombuffer(stored_products, dtype=np.int32)[:take]
    scores = np.frombuffer(stored_scores, dtype=np.float32)[:take]
    ids = [served.loaded.product_ids[i] for i in top]
    stamp, active, events_since = engagement_stamp_and_active(customer, ids, since=folded_through(served.loaded))
    if stamp != stored_stamp:
        return None  # the customer's engagement changed since: computed on the fly
    if events_since:
        return None  # events since the model was trained, folded or not yet: folded on the fly
    shortlist = [(product, score) for product, score in zip(ids, scores.tolist(), strict=True) if product in active][:k]
    items = [RecommendedItem(product, round(score, 4), rank) for rank, (product, score) in enumerate(shortlist, 1)]
    return Recommendations(customer, served.version_id, "model", items, "trained")
