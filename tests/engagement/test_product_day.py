"""The per-product, per-day rollup the fold keeps beside Engagement (dashboard windows and charts)."""

import random
import uuid
from collections import Counter
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from engagement.models import InteractionEvent, ProductDay
from engagement.scoring import EngagementWeights
from engagement.services import EventIn, engagement_fold, events_ingest
from tests.engagement.test_folding import make_events

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=dt_timezone.utc)


def rollup() -> dict[tuple[str, str], tuple[int, int, int, int]]:
    rows = ProductDay.objects.values_list("product__external_id", "day", "events", "hover_ms", "dwell_ms", "clicks")
    return {(p, day.isoformat()): (n, hover, dwell, clicks) for p, day, n, hover, dwell, clicks in rows}


def recount() -> dict[tuple[str, str], tuple[int, int, int, int]]:
    """The rollup by definition: every stored event, by product and UTC day, signals clipped."""
    weights = EngagementWeights.from_settings()
    totals: dict[tuple[str, str], Counter] = {}
    rows = InteractionEvent.objects.values_list("product__external_id", "occurred_at", "hover_ms", "dwell_ms", "clicked")
    for product, occurred_at, hover_ms, dwell_ms, clicked in rows:
        key = (product, occurred_at.astimezone(dt_timezone.utc).date().isoformat())
        counter = totals.setdefault(key, Counter())
        counter["events"] += 1
        counter["hover"] += min(hover_ms, weights.hover_cap_ms)
        counter["dwell"] += min(dwell_ms, weights.dwell_cap_ms)
        counter["clicks"] += int(clicked)
    return {key: (c["events"], c["hover"], c["dwell"], c["clicks"]) for key, c in totals.items()}


def test_the_fold_rolls_events_up_by_product_and_utc_day(db):
    events_ingest(events=make_events(random.Random(1), 400, days=20))
    engagement_fold()
    assert rollup() == recount()
    assert sum(v[0] for v in rollup().values()) == 400


def test_later_folds_add_to_the_days_already_rolled_up(db):
    rng = random.Random(2)
    events_ingest(events=make_events(rng, 300, days=5))
    engagement_fold()
    # Same products and days again: every new batch lands on rows that exist.
    events_ingest(events=make_events(rng, 300, days=5))
    engagement_fold()
    events_ingest(events=make_events(rng, 10, days=5))
    engagement_fold()
    assert rollup() == recount()


def test_a_full_rebuild_gives_the_same_rollup(db):
    rng = random.Random(3)
    events_ingest(events=make_events(rng, 200, days=30))
    engagement_fold()
    events_ingest(events=make_events(rng, 200, days=30))
    engagement_fold()
    incremental = rollup()
    engagement_fold(full=True)
    assert rollup() == incremental == recount()


def test_an_event_just_before_midnight_utc_counts_on_that_day(db):
    late = datetime(2025, 5, 31, 23, 59, 59, tzinfo=dt_timezone.utc)
    events_ingest(
        events=[
            EventIn(event_id=uuid.uuid4(), customer="c", product="p", hover_ms=0, dwell_ms=0, clicked=True, occurred_at=late),
            EventIn(event_id=uuid.uuid4(), customer="c", product="p", hover_ms=0, dwell_ms=0, clicked=False,
                    occurred_at=late + timedelta(seconds=2)),
        ]
    )
    engagement_fold()
    assert rollup() == {("p", "2025-05-31"): (1, 0, 0, 1), ("p", "2025-06-01"): (1, 0, 0, 0)}
