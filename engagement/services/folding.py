"""Fold new interaction events into Engagement, one set-based SQL statement per run.

The numbers are those of ``engagement.scoring`` (the reference); docs/engagement.md
derives the merge. Each run reads the events with id in (watermark, high], where
``high`` is an id below which every event is committed, and upserts one row per
customer x product touched. Decayed sums are anchored at the pair's last event, so
merging a batch into a stored row only needs both decayed to the later anchor:

    L' = max(L_old, L_batch)
    S' = S_old * 0.5**((L' - L_old)/hl) + S_batch * 0.5**((L' - L_batch)/hl)

which equals a recompute over all events whatever order they arrive in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from engagement.models import FOLD_WATERMARK, Engagement, EngagementWatermark, InteractionEvent, ProductDay
from engagement.scoring import MAX_DECAY_HALF_LIVES, MAX_EXPONENT, SUM_FLOOR, EngagementWeights
from engagement.selectors import popular_cache_clear

from engagement.signals import engagement_folded

from .events import INGEST_ADVISORY_LOCK
from .fraud import suspicious_customers_flag

logger = logging.getLogger(__name__)

WATERMARK_NAME = FOLD_WATERMARK
# PostgreSQL's work_mem while folding (one fold runs at a time: the watermark lock). At
# the default 4MB a fold of 1,000,000 events read them in customer order through an index
# (random heap reads) to avoid a sort, and ProductDay's hash aggregate spilled to disk.
FOLD_WORK_MEM = "64MB"


@dataclass(frozen=True, slots=True)
class FoldResult:
    events_folded: int
    pairs_touched: int
    watermark: int  # events with id <= this are in Engagement
    customers_flagged: int = 0  # flagged or updated as suspicious by this fold (services/fraud.py)
    after_event_id: int = 0  # this fold read the events (after_event_id, watermark]
    full: bool = False  # Engagement was rebuilt from every event


def engagement_fold(*, full: bool = False) -> FoldResult:
    """Fold events above the watermark into Engagement; with ``full``, rebuild it all.

    Idempotent and safe to run concurrently: the watermark row is locked for the whole
    fold, so a second run waits and then finds nothing new (or only newer events).
    """
    weights = EngagementWeights.from_settings()
    # Read before the fold's transaction, so ingest waits on the lock for an instant
    # and not for the whole fold. The bound stays safe: ids below it never change.
    high = _committed_event_id_bound()
    with transaction.atomic():
        # Insert-or-nothing first: two first-ever runs must not both try to create it.
        EngagementWatermark.objects.bulk_create(
            [EngagementWatermark(name=WATERMARK_NAME)], ignore_conflicts=True
        )
        watermark = EngagementWatermark.objects.select_for_update().get(name=WATERMARK_NAME)
        low = 0 if full else watermark.last_event_id
        if full:
            Engagement.objects.all().delete()
            ProductDay.objects.all().delete()
        if high <= low and not full:
            # Nothing new, or another run got past our bound while we waited for the lock.
            return FoldResult(events_folded=0, pairs_touched=0, watermark=low, after_event_id=low)
        events_folded = InteractionEvent.objects.filter(pk__gt=low, pk__lte=high).count()
        pairs_touched = customers_flagged = 0
        if events_folded:
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    # LOCAL: for this transaction only, never the pooled connection's later queries.
                    cursor.execute(f"SET LOCAL work_mem = '{FOLD_WORK_MEM}'")
                params = _params(weights, low=low, high=high)
                # Read under the watermark lock: no other fold can fill Engagement meanwhile.
                into_empty = not Engagement.objects.exists()
                cursor.execute(_upsert_sql(into_empty=into_empty), params)
                pairs_touched = cursor.rowcount
                # The per-day rollup from the same events, in the same transaction.
                cursor.execute(product_day_upsert_sql(), params)
            # Flags commit with the fold: no training run sees these events unflagged.
            customers_flagged = _flag_suspicious_customers(low=low, high=high)
        watermark.last_event_id = high
        watermark.save(update_fields=["last_event_id", "updated_at"])
    result = FoldResult(
        events_folded=events_folded, pairs_touched=pairs_touched, watermark=high,
        customers_flagged=customers_flagged, after_event_id=low, full=full,
    )  # fmt: skip
    if events_folded:
        # Popular rankings (and the dashboard's) as of this fold, not up to a cache period
        # later: a shop's first fold must not leave the empty ranking cached for 60 s.
        transaction.on_commit(popular_cache_clear)
        _announce(result)
    return result


def _announce(result: FoldResult) -> None:
    """Tell the apps built on engagement (engagement_folded); a listener's failure never undoes the fold."""
    for receiver, outcome in engagement_folded.send_robust(sender=FoldResult, result=result):
        if isinstance(outcome, Exception):
            logger.error("A listener of engagement_folded failed (%s): %s", receiver, outcome, exc_info=outcome)


def _flag_suspicious_customers(*, low: int, high: int) -> int:
    """Run the click-fraud check in a savepoint; if it fails, log it and let the fold commit.

    Scoring matters more than flagging: a fraud step that always fails (a bad setting, an
    SQL error) must not roll back every fold and stop engagement from moving. Its events
    are judged again when a later fold touches the same customers' minutes, or by
    ``compute_engagement --full``.
    """
    if not settings.RECSITE_FRAUD.get("ENABLED", True):
        return 0
    try:
        with transaction.atomic():
            return suspicious_customers_flag(low=low, high=high)
    except Exception:
        logger.exception("Click-fraud check failed for events (%d, %d]; folded without it.", low, high)
        return 0


def _committed_event_id_bound() -> int:
    """Return an event id at or below which every event is committed.

    Ids are allocated before commit, so on PostgreSQL a slow ingest transaction may
    still commit an id below max(id). Ingest holds INGEST_ADVISORY_LOCK shared for its
    whole transaction; taking it exclusively waits for those in flight and holds off
    new ones while max(id) is read. The fold's own transaction starts after this one
    commits, so its snapshot sees every id up to the bound. On SQLite the transaction
    starts IMMEDIATE (settings), which waits for the one writer there can be.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [INGEST_ADVISORY_LOCK])
        return InteractionEvent.objects.aggregate(high=Max("pk"))["high"] or 0


def _epoch_seconds(sql: str) -> str:
    """Return SQL for a datetime expression as seconds since 1970 (double precision)."""
    if connection.vendor == "postgresql":
        # date_part is double precision already; EXTRACT returns numeric (slower) since PG 14.
        return f"date_part('epoch', {sql})"
    if connection.vendor == "sqlite":
        # Django stores UTC text 'YYYY-MM-DD HH:MM:SS[.ffffff]'; julianday() parses it to
        # the millisecond (a weight error ~3e-10 against the 30-day half-life).
        return f"((julianday({sql}) - 2440587.5) * 86400.0)"
    raise NotImplementedError(f"engagement_fold does not support {connection.vendor}.")


def _fence() -> str:
    """Return the clause that keeps a subquery from being merged into the query that reads it.

    Merged, each reference to a column the subquery computes is computed again (neither
    database eliminates common subexpressions): the decay weights and the merged sums are
    referenced several times each, and a fold of 1,000,000 events spent ~3 s of its ~17 s
    of PostgreSQL CPU recomputing them (bench/fold.py).
    """
    if connection.vendor == "postgresql":
        return "OFFSET 0"
    return "LIMIT -1 OFFSET 0"  # SQLite allows OFFSET only after a LIMIT; -1 is none


def _float(name: str) -> str:
    # A cast, so PostgreSQL computes in double precision like Python, never in numeric.
    return f"CAST(%({name})s AS double precision)"


def _decay(age_seconds: str) -> str:
    """SQL for scoring.decay_weight: 0.5 per half-life, exactly 0 beyond the guard."""
    half_lives = f"(({age_seconds}) / {_float('half_life_s')})"
    half = "CAST(0.5 AS double precision)"
    return f"(CASE WHEN {half_lives} > {_float('max_half_lives')} THEN 0 ELSE POWER({half}, {half_lives}) END)"


def _floor_sum(sql: str) -> str:
    """SQL for scoring.floor_sum."""
    return f"(CASE WHEN ({sql}) < {_float('sum_floor')} THEN 0 ELSE ({sql}) END)"


def _score(hover: str, dwell: str, clicks: str) -> str:
    """SQL for scoring.score_from_sums: the 3-decimal score of three decayed sums."""

    def saturate(total: str, scale: str) -> str:
        x = f"(({total}) / {_float(scale)})"
        return f"(1 - EXP(-(CASE WHEN {x} > {_float('max_exponent')} THEN {_float('max_exponent')} ELSE {x} END)))"

    raw = (
        f"{_float('hover_weight')} * {saturate(hover, 'hover_scale')}"
        f" + {_float('dwell_weight')} * {saturate(dwell, 'dwell_scale')}"
        f" + {_float('click_weight')} * {saturate(clicks, 'click_scale')}"
    )
    # numeric ROUND rounds halves up on both vendors, like scoring.round_score.
    return f"ROUND(CAST({raw} AS numeric), 3)"


def _upsert_sql(*, into_empty: bool = False) -> str:
    """Build the one statement that folds events (low, high] into Engagement.

    Steps as CTEs, so each expression is written once: per event (clipped signals, its
    weight against the pair's last event in the batch), per pair sums, then the merge
    with the stored row (LEFT JOIN: only the fold writes Engagement, and folds are
    serialised by the watermark lock), and the score. ON CONFLICT only copies the result.

    ``into_empty``: Engagement has no rows (the first fold, a full rebuild), so there is
    nothing to merge with: no join, no merge and a plain INSERT, which a stored row would
    make fail rather than be overwritten. The numbers are the same as the merge's with no
    stored row (weights 1, stored sums 0).
    """
    quote = connection.ops.quote_name
    ev, en = InteractionEvent._meta, Engagement._meta

    def e(name: str) -> str:
        return quote(ev.get_field(name).column)

    def g(name: str) -> str:
        return quote(en.get_field(name).column)

    events, table = quote(ev.db_table), quote(en.db_table)
    event_pk = quote(ev.pk.column)
    fence = _fence()
    occurred_at = _epoch_seconds(e("occurred_at"))
    stored_last = f"s.{g('last_event_at')}"

    sums = ("hover_decayed", "dwell_decayed", "clicks_decayed")
    totals = ("hover_ms_total", "dwell_ms_total", "clicks", "event_count")
    columns = ("customer", "product", *totals, "last_event_at", *sums, "score", "updated_at")
    if into_empty:
        merge = f"""merged AS (
            SELECT customer_id, product_id, {", ".join(totals)}, last_event_at,
                   {", ".join(f"{_floor_sum(n)} AS {n}" for n in sums)}
            FROM batch {fence}
        )"""
        on_conflict = ""
    else:
        merge = f"""joined AS (
            SELECT b.*,
                   {", ".join(f"s.{g(n)} AS stored_{n}" for n in (*totals, *sums))},
                   {stored_last} AS stored_last_event_at,
                   {_epoch_seconds("b.last_event_at")} - {_epoch_seconds(stored_last)} AS gap_s
            FROM batch AS b
            LEFT JOIN {table} AS s
              ON s.{g("customer")} = b.customer_id AND s.{g("product")} = b.product_id
            {fence}
        ), aligned AS (
            -- Decay the older side to the later of the two anchors (gap_s NULL: no stored row).
            SELECT joined.*,
                   {_decay("CASE WHEN gap_s > 0 THEN gap_s ELSE 0 END")} AS stored_w,
                   {_decay("CASE WHEN gap_s < 0 THEN -gap_s ELSE 0 END")} AS batch_w
            FROM joined {fence}
        ), merged AS (
            SELECT customer_id, product_id,
                   {", ".join(f"COALESCE(stored_{n}, 0) + {n} AS {n}" for n in totals)},
                   CASE WHEN stored_last_event_at > last_event_at THEN stored_last_event_at
                        ELSE last_event_at END AS last_event_at,
                   {", ".join(f"{_merge_sum(n)} AS {n}" for n in sums)}
            FROM aligned {fence}
        )"""
        on_conflict = f"""ON CONFLICT ({g("customer")}, {g("product")}) DO UPDATE SET
            {", ".join(f"{g(c)} = excluded.{g(c)}" for c in columns[2:])}"""
    # INSERT first, WITH inside: Python's sqlite3 reports rowcount only for statements
    # that start with INSERT. WHERE true: SQLite needs it to parse ON CONFLICT after a SELECT.
    return f"""
        INSERT INTO {table} ({", ".join(g(c) for c in columns)})
        WITH new_event AS (
            SELECT {e("customer")} AS customer_id, {e("product")} AS product_id,
                   {e("occurred_at")} AS occurred_at,
                   CASE WHEN {e("hover_ms")} > %(hover_cap)s THEN %(hover_cap)s ELSE {e("hover_ms")} END AS hover_ms,
                   CASE WHEN {e("dwell_ms")} > %(dwell_cap)s THEN %(dwell_cap)s ELSE {e("dwell_ms")} END AS dwell_ms,
                   CASE WHEN {e("clicked")} THEN 1 ELSE 0 END AS clicked,
                   -- The weight here, not in a later step, where each use would recompute it.
                   -- The MAX appears twice in it; PostgreSQL computes equal window functions once.
                   {_decay(f"MAX({occurred_at}) OVER pair - {occurred_at}")} AS w
            FROM {events}
            WHERE {event_pk} > %(low)s AND {event_pk} <= %(high)s
            WINDOW pair AS (PARTITION BY {e("customer")}, {e("product")})
        ), batch AS (
            SELECT customer_id, product_id,
                   SUM(hover_ms) AS hover_ms_total, SUM(dwell_ms) AS dwell_ms_total,
                   SUM(clicked) AS clicks, COUNT(*) AS event_count,
                   MAX(occurred_at) AS last_event_at,
                   SUM(CAST(hover_ms AS double precision) / {_float("hover_cap_f")} * w) AS hover_decayed,
                   SUM(CAST(dwell_ms AS double precision) / {_float("dwell_cap_f")} * w) AS dwell_decayed,
                   SUM(clicked * w) AS clicks_decayed
            FROM new_event
            GROUP BY customer_id, product_id
        ), {merge}
        SELECT customer_id, product_id, {", ".join(totals)}, last_event_at, {", ".join(sums)},
               {_score(*sums)}, %(now)s
        FROM merged
        WHERE true
        {on_conflict}
    """


def _utc_day(sql: str) -> str:
    """Return SQL for the UTC calendar day of a datetime column."""
    if connection.vendor == "postgresql":
        return f"CAST(({sql} AT TIME ZONE 'UTC') AS date)"
    if connection.vendor == "sqlite":
        return f"date({sql})"  # stored as UTC text; DateField reads 'YYYY-MM-DD'
    raise NotImplementedError(f"engagement_fold does not support {connection.vendor}.")


def product_day_upsert_sql() -> str:
    """Build the statement that adds events (low, high] to ProductDay (needs %(low)s, %(high)s, caps).

    Signals are clipped as for Engagement's totals, so a day's dwell and a pair's agree.
    """
    quote = connection.ops.quote_name
    ev, pd = InteractionEvent._meta, ProductDay._meta

    def e(name: str) -> str:
        return quote(ev.get_field(name).column)

    def d(name: str) -> str:
        return quote(pd.get_field(name).column)

    table = quote(pd.db_table)
    added = ("events", "hover_ms", "dwell_ms", "clicks")
    return f"""
        INSERT INTO {table} ({d("product")}, {d("day")}, {", ".join(d(c) for c in added)})
        SELECT {e("product")}, {_utc_day(e("occurred_at"))}, COUNT(*),
               SUM(CASE WHEN {e("hover_ms")} > %(hover_cap)s THEN %(hover_cap)s ELSE {e("hover_ms")} END),
               SUM(CASE WHEN {e("dwell_ms")} > %(dwell_cap)s THEN %(dwell_cap)s ELSE {e("dwell_ms")} END),
               SUM(CASE WHEN {e("clicked")} THEN 1 ELSE 0 END)
        FROM {quote(ev.db_table)}
        WHERE {quote(ev.pk.column)} > %(low)s AND {quote(ev.pk.column)} <= %(high)s
        GROUP BY {e("product")}, {_utc_day(e("occurred_at"))}
        ON CONFLICT ({d("product")}, {d("day")}) DO UPDATE SET
            {", ".join(f"{d(c)} = {table}.{d(c)} + excluded.{d(c)}" for c in added)}
    """


def _merge_sum(name: str) -> str:
    # A pair not stored yet has stored_* NULL: gap NULL, both weights 1, stored sum 0.
    return _floor_sum(f"COALESCE(stored_{name}, 0) * stored_w + {_floor_sum(name)} * batch_w")


def _params(weights: EngagementWeights, *, low: int, high: int) -> dict[str, object]:
    updated_at = Engagement._meta.get_field("updated_at").get_db_prep_value(timezone.now(), connection)
    return {
        "low": low,
        "high": high,
        "now": updated_at,
        "hover_cap": weights.hover_cap_ms,
        "dwell_cap": weights.dwell_cap_ms,
        "hover_cap_f": float(weights.hover_cap_ms),
        "dwell_cap_f": float(weights.dwell_cap_ms),
        "hover_scale": weights.hover_scale,
        "dwell_scale": weights.dwell_scale,
        "click_scale": weights.click_scale,
        "hover_weight": weights.hover_weight,
        "dwell_weight": weights.dwell_weight,
        "click_weight": weights.click_weight,
        "half_life_s": weights.half_life_seconds,
        "max_half_lives": MAX_DECAY_HALF_LIVES,
        "sum_floor": SUM_FLOOR,
        "max_exponent": MAX_EXPONENT,
    }
