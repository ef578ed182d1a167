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


def _ensure_by_external_id(model, external_ids: Iterable[str], **defaults) -> dict[str, int]:
    """Return external id -> pk for ``external_ids``, creating the missing rows."""
    wanted = sorted(set(external_ids))
    if not wanted:
        return {}
    # Most ids are known already: one read, and an insert only for the rest.
    known = dict(model.objects.filter(external_id__in=wanted).values_list("external_id", "pk"))
    missing = [x for x in wanted if x not in known]
    if missing:
        # ignore_conflicts: a concurrent request may be creating the same ids; the unique
        # index makes one of them win and the other read it back. Sorted inserts: two
        # batches lock the same new ids in the same order and cannot deadlock.
        model.objects.bulk_create([model(external_id=x, **defaults) for x in missing], ignore_conflicts=True)
        known.update(model.objects.filter(external_id__in=missing).values_list("external_id", "pk"))
    return known


def customers_ensure(*, external_ids: Iterable[str]) -> dict[str, int]:
    """Create the customers not seen before; return external id -> primary key for all."""
    return _ensure_by_external_id(Customer, external_ids)


def products_ensure_stubs(*, external_ids: Iterable[str]) -> dict[str, int]:
    """Create products the catalog has not named yet as stubs; return external id -> pk."""
    return _ensure_by_external_id(Product, external_ids, is_stub=True)


_EVENT_COLUMNS = ("event_id", "customer", "product", "hover_ms", "dwell_ms", "clicked", "occurred_at", "received_at")


def _insert_events_ignoring_duplicates(rows: Sequence[tuple]) -> int:
    """INSERT ... ON CONFLICT (event_id) DO NOTHING; return how many rows were new.

    The unique index decides what is a duplicate, inside the database, so concurrent
    requests with the same event ids store each once. ``bulk_create(ignore_conflicts=True)``
    can't say how many rows it inserted, hence ``RETURNING`` (PostgreSQL, SQLite >= 3.35).
    """
    meta = InteractionEvent._meta
    fields = [meta.get_field(name) for name in _EVENT_COLUMNS]
    quote = connection.ops.quote_name
    head = f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
    tail = f" ON CONFLICT ({quote(fields[0].column)}) DO NOTHING RETURNING {quote(meta.pk.column)}"
    inserted = 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One array per column: a short statement whatever the batch size, where a
            # VALUES list of 8,000 placeholders costs more to build and parse than to run.
            arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in fields)
            columns = [list(column) for column in zip(*rows)]
            cursor.execute(f"{head}SELECT * FROM unnest({arrays}){tail}", columns)
            return len(cursor.fetchall())
        placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
        for start in range(0, len(rows), _INSERT_CHUNK):
            chunk = rows[start : start + _INSERT_CHUNK]
            params = [f.get_db_prep_save(value, connection) for row in chunk for f, value in zip(fields, row)]
            cursor.execute(f"{head}VALUES {', '.join([placeholders] * len(chunk))}{tail}", params)
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
