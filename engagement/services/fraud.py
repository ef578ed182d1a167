"""Flag customers whose traffic no person could make (issue 6, item 14; docs/engagement.md "Click fraud").

Run by the fold, in its transaction, over the customers of the events it folds. Any 60 s
of a customer's events is judged, not clock minutes: a bot can't send the limit twice
across a minute boundary. The 60 s ending at an event hold too much when they hold more
than MAX_EVENTS_PER_MINUTE events, or more dwell (clipped per event at DWELL_CAP_MS, as
the score clips it) than 60 s plus DWELL_SLACK_MS.

Only *live*, *client-stamped* events are judged:

- live: received within MAX_LAG_SECONDS of when they happened. Imported or replayed
  history (MovieLens: several ratings a minute, each with minutes of dwell) is not
  traffic anyone is sending now, and its timing says nothing about a bot.
- client-stamped: the shop sent occurred_at. Ingest stamps a missing one with the
  receive time itself (occurred_at = received_at, to the microsecond), and a shop that
  buffers a few minutes of clicks and flushes them puts them all into one instant.

The windows are a window function (COUNT/SUM OVER a 60 s RANGE frame, one pass over the
events in customer and time order). A fold from nothing (every event is new) reads the
judged events once. Otherwise only the customers and minutes the new events touch are
read: each touched (customer, minute) brings in that customer's events from a minute
before to two minutes after its start (every 60 s that holds a new event), through the
(customer, occurred_at) index, event_customer_time. Only the customers with a window
over a limit come back from the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils.dateparse import parse_datetime

from engagement.models import InteractionEvent, SuspiciousCustomer

WINDOW = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class FraudLimits:
    max_events_per_minute: int
    max_dwell_ms_per_minute: int  # the window's 60 s plus the slack
    dwell_cap_ms: int
    max_lag: timedelta  # events received later than this after they happened are not judged

    @classmethod
    def from_settings(cls) -> FraudLimits:
        fraud = settings.RECSITE_FRAUD
        return cls(
            max_events_per_minute=fraud["MAX_EVENTS_PER_MINUTE"],
            max_dwell_ms_per_minute=int(WINDOW.total_seconds() * 1000) + fraud["DWELL_SLACK_MS"],
            dwell_cap_ms=settings.RECSITE_ENGAGEMENT["DWELL_CAP_MS"],
            max_lag=timedelta(seconds=fraud["MAX_LAG_SECONDS"]),
        )


@dataclass(frozen=True, slots=True)
class ImplausibleCustomer:
    customer_id: int
    too_many_events: bool
    too_much_dwell: bool
    max_events: int  # the most events in one implausible 60 s
    max_dwell_ms: int
    first_window_end: datetime  # the event that ends the first implausible 60 s
    last_window_end: datetime


def suspicious_customers_flag(*, low: int, high: int, limits: FraudLimits | None = None) -> int:
    """Flag the customers of events (low, high] who had an implausible 60 s; return how many were flagged or updated."""
    limits = limits or FraudLimits.from_settings()
    found = {c.customer_id: c for c in implausible_customers(low=low, high=high, limits=limits)}
    if not found:
        return 0
    stored = SuspiciousCustomer.objects.select_for_update().in_bulk(list(found))
    for customer_id, c in found.items():
        first, last = c.first_window_end - WINDOW, c.last_window_end - WINDOW  # the windows' starts
        flag = stored.get(customer_id) or SuspiciousCustomer(
            customer_id=customer_id, first_seen_at=first, last_seen_at=last
        )
        # Max, min and or: judging the same events again (a later fold near them) changes nothing.
        flag.too_many_events |= c.too_many_events
        flag.too_much_dwell |= c.too_much_dwell
        flag.max_events_per_minute = max(flag.max_events_per_minute, c.max_events)
        flag.max_dwell_ms_per_minute = max(flag.max_dwell_ms_per_minute, c.max_dwell_ms)
        flag.first_seen_at = min(flag.first_seen_at, first)
        flag.last_seen_at = max(flag.last_seen_at, last)
        flag.save()
    return len(found)


def implausible_customers(*, low: int, high: int, limits: FraudLimits) -> list[ImplausibleCustomer]:
    """Return the customers of events (low, high] with a 60 s over a limit, judging all their events near those."""
    params = implausible_customers_params(low=low, high=high, limits=limits)
    with connection.cursor() as cursor:
        cursor.execute(implausible_customers_sql(low=low), params)
        rows = cursor.fetchall()
    return [
        ImplausibleCustomer(
            customer_id=row[0], too_many_events=bool(row[1]), too_much_dwell=bool(row[2]), max_events=int(row[3]),
            max_dwell_ms=int(row[4]), first_window_end=_as_datetime(row[5]), last_window_end=_as_datetime(row[6]),
        )
        for row in rows
    ]  # fmt: skip


def implausible_customers_params(*, low: int, high: int, limits: FraudLimits) -> dict[str, object]:
    return {
        "low": low,
        "high": high,
        "cap": limits.dwell_cap_ms,
        "max_events": limits.max_events_per_minute,
        "max_dwell": limits.max_dwell_ms_per_minute,
        **_lag_param(limits.max_lag),
    }


def implausible_customers_sql(*, low: int) -> str:
    """The one query (EXPLAIN ANALYZE it with implausible_customers_params)."""
    quote = connection.ops.quote_name
    ev = InteractionEvent._meta

    def e(name: str) -> str:
        return f"ev.{quote(ev.get_field(name).column)}"

    events, pk = quote(ev.db_table), e("id")
    dwell = f"CASE WHEN {e('dwell_ms')} > %(cap)s THEN %(cap)s ELSE {e('dwell_ms')} END"
    judged_columns = f"{e('customer')} AS customer_id, {e('occurred_at')} AS occurred_at, {dwell} AS dwell_ms"
    if low == 0:
        # Every event is new: read the judged ones once, no join.
        judged = f"""judged AS (
            SELECT {judged_columns} FROM {events} AS ev WHERE {_judged(e)}
        )"""
    else:
        judged = f"""touched AS (
            SELECT {e("customer")} AS customer_id, {_minute(e("occurred_at"))} AS minute
            FROM {events} AS ev
            WHERE {pk} > %(low)s AND {pk} <= %(high)s AND {_judged(e)}
            GROUP BY {e("customer")}, {_minute(e("occurred_at"))}
        ), near AS (
            -- Overlapping ranges of a customer's adjacent minutes read an event more than once.
            SELECT DISTINCT {pk} AS id, {judged_columns} FROM touched AS t {_near_events_join(e, events)}
        ), judged AS (
            SELECT customer_id, occurred_at, dwell_ms FROM near
        )"""
    return f"""
        WITH {judged}, windowed AS (
            SELECT customer_id, occurred_at,
                   COUNT(*) OVER w AS events, SUM(dwell_ms) OVER w AS dwell_ms
            FROM judged
            WINDOW w AS (PARTITION BY customer_id ORDER BY {_window_order("occurred_at")}
                         RANGE BETWEEN {_window_width()} PRECEDING AND CURRENT ROW)
        )
        SELECT customer_id,
               MAX(CASE WHEN events > %(max_events)s THEN 1 ELSE 0 END),
               MAX(CASE WHEN dwell_ms > %(max_dwell)s THEN 1 ELSE 0 END),
               MAX(events), MAX(dwell_ms), MIN(occurred_at), MAX(occurred_at)
        FROM windowed
        WHERE events > %(max_events)s OR dwell_ms > %(max_dwell)s
        GROUP BY customer_id
        ORDER BY customer_id
    """


def _judged(e) -> str:
    """SQL: the event (alias ev) is judged: client-stamped and live (docstring above)."""
    occurred, received = e("occurred_at"), e("received_at")
    if connection.vendor == "postgresql":
        live = f"{received} - {occurred} <= %(max_lag)s"
    elif connection.vendor == "sqlite":
        live = f"julianday({received}) - julianday({occurred}) <= %(max_lag_days)s"
    else:
        raise NotImplementedError(f"suspicious_customers_flag does not support {connection.vendor}.")
    # Ingest stores a missing occurred_at as the very value of received_at.
    return f"{occurred} <> {received} AND {live}"


def _lag_param(max_lag: timedelta) -> dict[str, object]:
    if connection.vendor == "postgresql":
        return {"max_lag": max_lag}  # an interval
    return {"max_lag_days": max_lag.total_seconds() / 86400}


def _minute(column: str) -> str:
    """SQL for the start of the UTC minute of a datetime column, comparable with the column."""
    if connection.vendor == "postgresql":
        # The connection's time zone is UTC (Django sets it), so date_trunc cuts UTC minutes.
        return f"date_trunc('minute', {column})"
    # Stored as UTC text 'YYYY-MM-DD HH:MM:SS[.ffffff]', which sorts as it compares.
    return f"strftime('%%Y-%%m-%%d %%H:%%M:00', {column})"


def _near_events_join(e, events: str) -> str:
    """SQL joining each touched (customer, minute) to the customer's events in [minute - 1 min, minute + 2 min).

    A window (t - 60 s, t] holds an event of the minute only if t < minute + 2 min, and
    then reads nothing before minute - 1 min.
    """
    occurred, customer = e("occurred_at"), e("customer")
    if connection.vendor == "postgresql":
        # LATERAL with the fence (OFFSET 0, never pulled up into a hash join on customer
        # alone): one index range scan per touched minute, linear in the events it reads.
        return f"""CROSS JOIN LATERAL (
            SELECT * FROM {events} AS ev
            WHERE {customer} = t.customer_id
              AND {occurred} >= t.minute - interval '1 minute' AND {occurred} < t.minute + interval '2 minutes'
              AND {_judged(e)}
            OFFSET 0
        ) AS ev"""
    # SQLite joins by nested loops: the index serves the range as it is.
    return f"""JOIN {events} AS ev
          ON {customer} = t.customer_id
         AND {occurred} >= strftime('%%Y-%%m-%%d %%H:%%M:%%S', t.minute, '-1 minute')
         AND {occurred} < strftime('%%Y-%%m-%%d %%H:%%M:%%S', t.minute, '+2 minutes')
        WHERE {_judged(e)}"""


def _window_order(column: str) -> str:
    if connection.vendor == "postgresql":
        return column  # a timestamptz, framed by an interval
    return f"(julianday({column}) * 86400.0)"  # seconds, to ~30 µs


def _window_width() -> str:
    """The frame's PRECEDING offset: (t - 60 s, t] to the finest step each database keeps."""
    if connection.vendor == "postgresql":
        return "interval '59.999999 seconds'"
    return "59.999"


def _as_datetime(value) -> datetime:
    if isinstance(value, str):  # SQLite gives the text back
        value = parse_datetime(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
