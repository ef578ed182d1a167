"""The fold (engagement.services.folding) against the reference in engagement.scoring."""

import random
import threading
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from engagement.models import Engagement, EngagementWatermark, InteractionEvent
from engagement.scoring import EngagementWeights, EventSignals, engagement_summarize
from engagement.services import EventIn, engagement_fold, events_ingest
from engagement.services.events import INGEST_ADVISORY_LOCK
from engagement.services.folding import FOLD_WORK_MEM
from tests.conftest import ON_POSTGRES

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=dt_timezone.utc)


def make_events(rng: random.Random, n: int, *, customers: int = 6, products: int = 5, days: int = 120) -> list[EventIn]:
    """Random events over a few pairs, with times anywhere in the last ``days`` (so out of order)."""
    return [
        EventIn(
            event_id=uuid.UUID(int=rng.getrandbits(128)),
            customer=f"c{rng.randrange(customers)}",
            product=f"p{rng.randrange(products)}",
            # Up to 1 hour, the ingest limit: well past both caps, so clipping is exercised.
            hover_ms=rng.choice([0, rng.randrange(20_000), 3_600_000]),
            dwell_ms=rng.choice([0, rng.randrange(600_000), 3_600_000]),
            clicked=rng.random() < 0.3,
            occurred_at=NOW - timedelta(seconds=rng.uniform(0, days * 86_400)),
        )
        for _ in range(n)
    ]


def stored() -> dict[tuple[str, str], dict]:
    rows = Engagement.objects.values(
        "customer__external_id", "product__external_id", "hover_ms_total", "dwell_ms_total", "clicks",
        "event_count", "last_event_at", "hover_decayed", "dwell_decayed", "clicks_decayed", "score",
    )
    return {(r.pop("customer__external_id"), r.pop("product__external_id")): r for r in rows}


def reference() -> dict[tuple[str, str], dict]:
    """Each pair's numbers from all its events, by the pure-Python definition."""
    by_pair: dict[tuple[str, str], list[EventSignals]] = defaultdict(list)
    rows = InteractionEvent.objects.values_list(
        "customer__external_id", "product__external_id", "hover_ms", "dwell_ms", "clicked", "occurred_at"
    )
    for customer, product, hover_ms, dwell_ms, clicked, occurred_at in rows:
        by_pair[customer, product].append(EventSignals(hover_ms, dwell_ms, clicked, occurred_at))
    weights = EngagementWeights.from_settings()
    result = {}
    for pair, events in by_pair.items():
        s = engagement_summarize(events, weights=weights)
        result[pair] = {
            "hover_ms_total": s.hover_ms_total, "dwell_ms_total": s.dwell_ms_total, "clicks": s.clicks,
            "event_count": s.event_count, "last_event_at": s.last_event_at, "hover_decayed": s.sums.hover,
            "dwell_decayed": s.sums.dwell, "clicks_decayed": s.sums.clicks, "score": Decimal(str(s.score)),
        }
    return result


def assert_same(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for pair, want in expected.items():
        got = actual[pair]
        for key in ("hover_decayed", "dwell_decayed", "clicks_decayed"):
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), (pair, key)
        exact = {k: v for k, v in want.items() if not k.endswith("_decayed")}
        assert {k: got[k] for k in exact} == exact, pair


def test_it_stores_what_the_python_reference_computes(db):
    events_ingest(events=make_events(random.Random(1), 300))

    result = engagement_fold()

    assert result.events_folded == 300
    assert result.pairs_touched == len(reference())
    assert_same(stored(), reference())


def test_it_folds_out_of_order_rounds_to_the_same_rows_as_a_full_recompute(db):
    rng = random.Random(2)
    for _ in range(5):
        # Each round's times span the whole window: many arrive older than last_event_at.
        events_ingest(events=make_events(rng, 80))
        engagement_fold()
    incremental = stored()

    engagement_fold(full=True)

    assert_same(incremental, stored())
    assert_same(incremental, reference())


def test_it_folds_only_events_above_the_watermark(db):
    rng = random.Random(3)
    events_ingest(events=make_events(rng, 50))
    first = engagement_fold()
    events_ingest(events=make_events(rng, 20))

    second = engagement_fold()

    high = InteractionEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
    assert (first.events_folded, second.events_folded) == (50, 20)
    assert second.watermark == high == EngagementWatermark.objects.get(name="engagement").last_event_id


def test_it_changes_nothing_when_run_again(db):
    events_ingest(events=make_events(random.Random(4), 100))
    engagement_fold()
    before = list(Engagement.objects.order_by("pk").values())

    again = engagement_fold()

    assert (again.events_folded, again.pairs_touched) == (0, 0)
    assert list(Engagement.objects.order_by("pk").values()) == before


def test_it_rebuilds_every_row_with_full(db):
    events_ingest(events=make_events(random.Random(5), 100))
    engagement_fold()
    Engagement.objects.update(score=Decimal("0.999"), event_count=999, dwell_decayed=42.0)

    result = engagement_fold(full=True)

    assert result.events_folded == 100
    assert_same(stored(), reference())


def test_it_survives_gaps_of_centuries_and_thousands_of_events_without_underflow(db):
    # PostgreSQL raises on float underflow (0.5 ** 1200, exp(-900), 1e-180 * 1e-180); the guards in
    # engagement.scoring keep those at exactly 0 on both databases.
    old, new = NOW - timedelta(days=36_500), NOW
    click = dict(customer="c", product="p", hover_ms=10_000, dwell_ms=300_000, clicked=True)
    events_ingest(events=[EventIn(event_id=uuid.uuid4(), occurred_at=new, **click)])
    engagement_fold()
    events_ingest(events=[EventIn(event_id=uuid.uuid4(), occurred_at=old, **click) for _ in range(900)])
    engagement_fold()
    events_ingest(events=[EventIn(event_id=uuid.uuid4(), occurred_at=new, **click) for _ in range(900)])
    engagement_fold()
    # A sum decayed by 2**-595 and stored, then decayed by 2**-595 again at the next fold.
    half_life = timedelta(days=EngagementWeights.from_settings().half_life_days)
    idle = dict(customer="c", product="q", hover_ms=0, dwell_ms=0, clicked=False)
    for occurred_at, signals in [(new - 1190 * half_life, click), (new - 595 * half_life, idle), (new, idle)]:
        events_ingest(events=[EventIn(event_id=uuid.uuid4(), occurred_at=occurred_at, **{**signals, "product": "q"})])
        engagement_fold()

    assert_same(stored(), reference())
    assert stored()["c", "p"]["score"] == Decimal("1.000")


def test_it_stores_the_same_rows_into_an_empty_table_as_through_the_merge(db):
    rng = random.Random(10)
    events_ingest(events=make_events(rng, 1, customers=1, products=1))
    engagement_fold()  # into an empty table: a plain insert
    events_ingest(events=make_events(rng, 200))
    engagement_fold()  # a row is stored now: every pair goes through the merge, most with no stored row
    merged = stored()

    engagement_fold(full=True)  # all of it again, into an emptied table

    assert_same(stored(), merged)
    assert_same(merged, reference())


@pytest.mark.skipif(not ON_POSTGRES, reason="work_mem is a PostgreSQL setting")
def test_it_raises_work_mem_for_its_own_transaction_only(transactional_db):
    with connection.cursor() as cursor:
        cursor.execute("SHOW work_mem")
        before = cursor.fetchone()[0]
    events_ingest(events=make_events(random.Random(11), 20))

    with CaptureQueriesContext(connection) as queries:
        engagement_fold()

    with connection.cursor() as cursor:
        cursor.execute("SHOW work_mem")
        after = cursor.fetchone()[0]
    assert f"SET LOCAL work_mem = '{FOLD_WORK_MEM}'" in [q["sql"] for q in queries.captured_queries]
    assert after == before != FOLD_WORK_MEM


def test_it_reports_what_the_command_did(db):
    events_ingest(events=make_events(random.Random(6), 10, customers=1, products=1))
    out = StringIO()

    call_command("compute_engagement", "--full", stdout=out)

    assert out.getvalue().startswith("Rebuilt: 10 events into 1 customer x product pairs")


def _in_thread(target, *args) -> threading.Thread:
    def run():
        try:
            target(*args)
        finally:
            connections.close_all()  # a thread's connection would keep the test database open

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_it_folds_each_event_once_when_folds_run_together_with_ingest(transactional_db):
    rng = random.Random(7)
    batches = [make_events(rng, 40) for _ in range(10)]
    results = []
    errors = []
    start = threading.Barrier(3)

    def ingest():
        start.wait()
        for batch in batches:
            events_ingest(events=batch)

    def fold():
        start.wait()
        try:
            for _ in range(6):
                results.append(engagement_fold())
        except Exception as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [_in_thread(ingest), _in_thread(fold), _in_thread(fold)]
    for thread in threads:
        thread.join(timeout=60)
    results.append(engagement_fold())  # whatever arrived after the last concurrent fold

    assert not errors
    assert sum(r.events_folded for r in results) == 400
    assert sum(e["event_count"] for e in stored().values()) == 400
    assert_same(stored(), reference())


def test_it_waits_for_an_uncommitted_ingest_before_moving_the_watermark(transactional_db):
    ingested, release = threading.Event(), threading.Event()
    fold_results = []

    def slow_ingest():
        with transaction.atomic():
            events_ingest(events=make_events(random.Random(8), 5, customers=1, products=1))
            ingested.set()
            release.wait(timeout=30)

    ingest_thread = _in_thread(slow_ingest)
    assert ingested.wait(timeout=10)
    fold_thread = _in_thread(lambda: fold_results.append(engagement_fold()))
    fold_thread.join(timeout=1.0)

    try:
        still_waiting = fold_thread.is_alive()
        if ON_POSTGRES:
            # The fold is queued on the ingest lock in exclusive mode, behind the shared holder.
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT mode, granted FROM pg_locks WHERE locktype = 'advisory' AND objid = %s"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                    " ORDER BY granted",
                    [INGEST_ADVISORY_LOCK],
                )
                ingest_lock = cursor.fetchall()
    finally:
        release.set()
    ingest_thread.join(timeout=10)
    fold_thread.join(timeout=30)

    if ON_POSTGRES:
        assert ingest_lock == [("ExclusiveLock", False), ("ShareLock", True)]
    assert still_waiting
    assert fold_results[0].events_folded == 5
    assert sum(e["event_count"] for e in stored().values()) == 5


def test_a_failing_click_fraud_check_is_logged_and_the_fold_still_commits(db, monkeypatch, caplog):
    """A fraud step that fails every time (here a real SQL error, which on PostgreSQL aborts the
    transaction unless it ran in a savepoint) must not stop scoring: the fold commits without it."""

    def broken_check(*, low: int, high: int) -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT no_such_column FROM engagement_interactionevent")
        return 0

    monkeypatch.setattr("engagement.services.folding.suspicious_customers_flag", broken_check)
    events_ingest(events=make_events(random.Random(8), 30))

    with caplog.at_level("ERROR", logger="engagement.services.folding"):
        result = engagement_fold()

    assert (result.events_folded, result.customers_flagged) == (30, 0)
    assert EngagementWatermark.objects.get().last_event_id == result.watermark
    assert_same(stored(), reference())
    [record] = [r for r in caplog.records if r.name == "engagement.services.folding"]
    assert record.levelname == "ERROR" and record.exc_info is not None
    assert "Click-fraud check failed" in record.getMessage()
