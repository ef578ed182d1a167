"""Store the shop's events exactly once."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from engagement.models import Customer, InteractionEvent, Product

# Ingest holds this PostgreSQL advisory lock in shared mode for its transaction; the
# engagement fold takes it exclusively for an instant to read a watermark below which
# every event id is committed (ids are allocated before commit, so without it a slow
# transaction could commit an id below a watermark already passed). SQLite serialises
# writers, so it needs no lock.
INGEST_ADVISORY_LOCK = 0x7265_6373  # "recs"

_INSERT_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class EventIn:
    event_id: uuid.UUID
    customer: str
    product: str
    hover_ms: int
    dwell_ms: int
    clicked: bool
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    duplicates: int


def customers_ensure(*, external_ids: Iterable[str]) -> dict[str, int]:
    """Create the customers not seen before; return external id -> primary key for all."""
    wanted = sorted(set(external_ids))
    if not wanted:
        return {}
    # Sorted inserts: two concurrent batches lock the same new ids in the same order
    # and cannot deadlock on the unique index.
    Customer.objects.bulk_create([Customer(external_id=x) for x in wanted], ignore_conflicts=True)
    return dict(Customer.objects.filter(external_id__in=wanted).values_list("external_id", "pk"))


def products_ensure_stubs(*, external_ids: Iterable[str]) -> dict[str, int]:
    """Create products the catalog has not named yet as stubs; return external id -> pk."""
    wanted = sorted(set(external_ids))
    if not wanted:
        return {}
    Product.objects.bulk_create(
        [Product(external_id=x, is_stub=True) for x in wanted], ignore_conflicts=True
    )
    return dict(Product.objects.filter(external_id__in=wanted).values_list("external_id", "pk"))


def _insert_events_ignoring_duplicates(rows: Sequence[tuple]) -> int:
    """INSERT ... ON CONFLICT (event_id) DO NOTHING; return how many rows were new.

    The unique index decides what is a duplicate, inside the database, so concurrent
    requests with the same event ids store each once. ``bulk_create(ignore_conflicts=True)``
    can't say how many rows it inserted, hence ``RETURNING`` (PostgreSQL, SQLite >= 3.35).
    """
    meta = InteractionEvent._meta
    names = ["event_id", "customer", "product", "hover_ms", "dwell_ms", "clicked", "occurred_at", "received_at"]
    fields = [meta.get_field(name) for name in names]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    inserted = 0
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _INSERT_CHUNK):
            chunk = rows[start : start + _INSERT_CHUNK]
            params: list = []
            for row in chunk:
                params.extend(f.get_db_prep_save(value, connection) for f, value in zip(fields, row))
            cursor.execute(
                f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES "
                + ", ".join([placeholders] * len(chunk))
                + f" ON CONFLICT ({quote(meta.get_field('event_id').column)}) DO NOTHING"
                + f" RETURNING {quote(meta.pk.column)}",
                params,
            )
            inserted += len(cursor.fetchall())
    return inserted


def events_ingest(*, events: Sequence[EventIn]) -> IngestResult:
    """Store valid events, each ``event_id`` once; resent ids count as duplicates.

    Unknown customers are created and unknown products created as stubs, in the same
    transaction as the events: either the whole batch of valid events is stored or,
    on a database error, none of it (the client retries the batch safely).
    """
    unique: dict[uuid.UUID, EventIn] = {}
    for event in events:
        unique.setdefault(event.event_id, event)  # the first copy in a batch wins
    if not unique:
        return IngestResult(accepted=0, duplicates=len(events))
    received_at = timezone.now()
    ordered = sorted(unique.values(), key=lambda e: e.event_id)  # same lock order everywhere
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [INGEST_ADVISORY_LOCK])
        customer_ids = customers_ensure(external_ids=(e.customer for e in ordered))
        product_ids = products_ensure_stubs(external_ids=(e.product for e in ordered))
        rows = [
            (
                e.event_id,
                customer_ids[e.customer],
                product_ids[e.product],
                e.hover_ms,
                e.dwell_ms,
                e.clicked,
                e.occurred_at,
                received_at,
            )
            for e in ordered
        ]
        accepted = _insert_events_ignoring_duplicates(rows)
    return IngestResult(accepted=accepted, duplicates=len(events) - accepted)
