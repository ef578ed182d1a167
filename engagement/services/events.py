"""Store the shop's events exactly once."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from engagement.models import Customer, InteractionEvent, Product

logger = logging.getLogger(__name__)

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
    occurred_at: datetime | None  # None: when it is received (and never a conflict)


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    duplicates: int
    # Positions (in the events given) of duplicates whose payload differs from the
    # stored version: same event_id, different customer, product, signals or time.
    conflicts: tuple[int, ...] = ()


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


def _insert_events_ignoring_duplicates(rows: Sequence[tuple]) -> set[uuid.UUID]:
    """INSERT ... ON CONFLICT (event_id) DO NOTHING; return the event ids that were new.

    The unique index decides what is a duplicate, inside the database, so concurrent
    requests with the same event ids store each once. ``bulk_create(ignore_conflicts=True)``
    can't say which rows it inserted, hence ``RETURNING`` (PostgreSQL, SQLite >= 3.35).
    """
    meta = InteractionEvent._meta
    fields = [meta.get_field(name) for name in _EVENT_COLUMNS]
    quote = connection.ops.quote_name
    head = f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
    tail = f" ON CONFLICT ({quote(fields[0].column)}) DO NOTHING RETURNING {quote(fields[0].column)}"
    inserted: list = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One array per column: a short statement whatever the batch size, where a
            # VALUES list of 8,000 placeholders costs more to build and parse than to run.
            arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in fields)
            columns = [list(column) for column in zip(*rows)]
            cursor.execute(f"{head}SELECT * FROM unnest({arrays}){tail}", columns)
            inserted = cursor.fetchall()
        else:
            placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
            for start in range(0, len(rows), _INSERT_CHUNK):
                chunk = rows[start : start + _INSERT_CHUNK]
                params = [f.get_db_prep_save(value, connection) for row in chunk for f, value in zip(fields, row)]
                cursor.execute(f"{head}VALUES {', '.join([placeholders] * len(chunk))}{tail}", params)
                inserted += cursor.fetchall()
    # PostgreSQL returns UUIDs, SQLite the 32 hex digits it stores.
    return {value if isinstance(value, uuid.UUID) else uuid.UUID(value) for (value,) in inserted}


# What must match for a resent event to be the same event (besides occurred_at).
_PAYLOAD_FIELDS = ("customer", "product", "hover_ms", "dwell_ms", "clicked")


def _conflicts(
    events: Sequence[EventIn], inserted: set[uuid.UUID], customer_ids: dict[str, int], product_ids: dict[str, int]
) -> list[int]:
    """Return the positions of duplicates whose stored version (same event_id) has another payload.

    A duplicate is an event whose id was stored before, or a later copy of an id within
    the batch; a batch without any costs nothing here. Otherwise one query compares
    them with their stored rows. An event sent without occurred_at means "when
    received": a resend of it is received later, and that alone is not another event.
    """
    first_copy: dict[uuid.UUID, int] = {}
    duplicates = [
        position
        for position, e in enumerate(events)
        if first_copy.setdefault(e.event_id, position) != position or e.event_id not in inserted
    ]
    if not duplicates:
        return []
    # One row per duplicate, in the order of _PAYLOAD_FIELDS between id and time. A later
    # copy in the batch may name a customer or product only it names: None, never equal.
    sent = [
        (p, e.event_id, customer_ids.get(e.customer), product_ids.get(e.product), e.hover_ms, e.dwell_ms,
         e.clicked, e.occurred_at)
        for p, e in ((p, events[p]) for p in duplicates)
    ]  # fmt: skip
    if connection.vendor == "postgresql":
        return _conflicts_in_sql(sent)
    columns = [InteractionEvent._meta.get_field(name).attname for name in _PAYLOAD_FIELDS]
    rows = InteractionEvent.objects.filter(event_id__in={row[1] for row in sent})
    stored = {row[0]: row[1:] for row in rows.values_list("event_id", *columns, "occurred_at")}
    return [
        position
        for position, event_id, *payload, occurred_at in sent
        if tuple(payload) != stored[event_id][:-1] or occurred_at not in (None, stored[event_id][-1])
    ]


def _conflicts_in_sql(sent: list[tuple]) -> list[int]:
    """The same comparison in PostgreSQL, which returns only the positions that differ.

    Reading a replayed batch's 500 stored rows back into Python made a replay almost
    twice as slow (tests/faults/test_replay.py); this returns no row for a replay.
    """
    meta = InteractionEvent._meta
    fields = [meta.get_field(name) for name in ("event_id", *_PAYLOAD_FIELDS, "occurred_at")]
    quote = connection.ops.quote_name
    event_id, *payload, occurred_at = (quote(f.column) for f in fields)
    position = quote("position")
    arrays = ", ".join(["%s::integer[]", *(f"%s::{f.db_type(connection)}[]" for f in fields)])
    sql = (
        f"SELECT sent.{position} FROM unnest({arrays}) "
        f"AS sent({', '.join([position, event_id, *payload, occurred_at])}) "
        f"JOIN {quote(meta.db_table)} AS stored ON stored.{event_id} = sent.{event_id} "
        f"WHERE ({', '.join('stored.' + c for c in payload)}) "
        f"IS DISTINCT FROM ({', '.join('sent.' + c for c in payload)}) "
        f"OR stored.{occurred_at} <> sent.{occurred_at} "  # a NULL (not sent) time is not compared
        f"ORDER BY 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [list(column) for column in zip(*sent)])
        return [row[0] for row in cursor.fetchall()]


def events_ingest(*, events: Sequence[EventIn]) -> IngestResult:
    """Store valid events, each ``event_id`` once; resent ids count as duplicates.

    Unknown customers are created and unknown products created as stubs, in the same
    transaction as the events: either the whole batch of valid events is stored or,
    on a database error, none of it (the client retries the batch safely).

    A duplicate whose payload differs from the stored version (a *conflict*: an id
    reused for another event) changes nothing either, the first version is kept, but
    its position is returned in ``conflicts`` and logged (WARNING, logger
    ``engagement.services.events``) so a shop's id bug shows up.
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
                e.occurred_at or received_at,
                received_at,
            )
            for e in ordered
        ]
        inserted = _insert_events_ignoring_duplicates(rows)
        # Read inside the transaction: it sees this batch's rows and every committed one.
        conflicts = _conflicts(events, inserted, customer_ids, product_ids)
    accepted = len(inserted)
    if conflicts:
        logger.warning(
            "Ingest: %d conflicting duplicate(s), same event_id with another payload; the first version is "
            "kept. event_ids: %s",
            len(conflicts), ", ".join(str(events[p].event_id) for p in conflicts[:20]),
        )  # fmt: skip
    return IngestResult(accepted=accepted, duplicates=len(events) - accepted, conflicts=tuple(conflicts))
