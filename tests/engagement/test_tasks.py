"""The engagement tasks on a real worker process (STYLE 15); the fold's rules are tested
through its service. Runs on the filesystem broker (SQLite pass) and on Redis."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from engagement.models import Engagement
from engagement.services import EventIn, events_ingest
from engagement.tasks import compute_engagement

# The worker sees only committed rows, hence transactional_db rather than db.
pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("celery_worker_process", "transactional_db")]

TASK_TIMEOUT_SECONDS = 60


def _event(customer: str, product: str, *, hover_ms=0, dwell_ms=0, clicked=False, minutes_ago=0) -> EventIn:
    return EventIn(
        event_id=uuid.uuid4(),
        customer=customer,
        product=product,
        hover_ms=hover_ms,
        dwell_ms=dwell_ms,
        clicked=clicked,
        occurred_at=timezone.now() - timedelta(minutes=minutes_ago),
    )


def _engagement_rows() -> list[tuple]:
    return sorted(
        Engagement.objects.values_list(
            "customer__external_id", "product__external_id", "event_count", "clicks",
            "hover_ms_total", "dwell_ms_total", "score",
        )
    )  # fmt: skip


def test_it_folds_committed_events_into_one_engagement_row_per_customer_and_product():
    # Signals below the per-event caps, so the totals are plain sums.
    events_ingest(
        events=[
            _event("c-1", "p-1", hover_ms=2_000, dwell_ms=30_000, minutes_ago=5),
            _event("c-1", "p-1", dwell_ms=10_000, clicked=True),
            _event("c-1", "p-2", hover_ms=500),
            _event("c-2", "p-1", dwell_ms=60_000, clicked=True),
        ]
    )

    compute_engagement.delay().get(timeout=TASK_TIMEOUT_SECONDS)

    rows = _engagement_rows()
    assert [row[:6] for row in rows] == [
        ("c-1", "p-1", 2, 1, 2_000, 40_000),
        ("c-1", "p-2", 1, 0, 500, 0),
        ("c-2", "p-1", 1, 1, 0, 60_000),
    ]
    assert all(Decimal("0") < score <= Decimal("1") for *_, score in rows)


def test_it_changes_nothing_when_run_again_without_new_events():
    events_ingest(events=[_event("c-1", "p-1", dwell_ms=30_000, clicked=True), _event("c-2", "p-3", hover_ms=900)])
    compute_engagement.delay().get(timeout=TASK_TIMEOUT_SECONDS)
    first = _engagement_rows()

    compute_engagement.delay().get(timeout=TASK_TIMEOUT_SECONDS)

    assert first and _engagement_rows() == first
