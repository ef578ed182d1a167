"""Celery entry points for engagement: thin, the work is in engagement.services."""

from celery import shared_task
from django.db import OperationalError

from engagement.models import EngagementWatermark
from engagement.services import engagement_fold
from engagement.services.folding import WATERMARK_NAME


@shared_task(
    name="engagement.tasks.compute_engagement",
    # Late ack: a worker that crashes while running it (not a killed child) leaves the
    # message to be run again, which is safe because the fold is idempotent (watermark
    # and upsert in one transaction). A child killed mid-fold (OOM, kill -9) is NOT
    # requeued: a message that kills its worker every time would loop forever
    # (tests/faults/test_poison_task.py); beat's next run, within a minute, catches up.
    acks_late=True,
    reject_on_worker_lost=False,
    soft_time_limit=240,
    time_limit=300,
    # "database is locked" (SQLite busy timeout) or a dropped connection: try again
    # shortly; beat enqueues the next run within a minute anyway, so keep it bounded.
    autoretry_for=(OperationalError,),
    retry_backoff=5,
    retry_backoff_max=60,
    max_retries=3,
)
def compute_engagement(full: bool = False) -> dict[str, int]:
    """Fold new events into Engagement (all events with ``full``); return the counts."""
    # Where this fold starts: the customers of the events it folds get new precomputed
    # lists (a concurrent fold can only widen the range, which costs a few lists more).
    before = EngagementWatermark.objects.filter(name=WATERMARK_NAME).values_list("last_event_id", flat=True).first()
    result = engagement_fold(full=full)
    if result.events_folded and not full:  # a full fold rebuilds the same rows: every list stays right
        from training.services.precompute import recommendations_refresh_after_fold  # training builds on engagement

        recommendations_refresh_after_fold(after_event_id=before or 0, upto_event_id=result.watermark)
    return {
        "events_folded": result.events_folded,
        "pairs_touched": result.pairs_touched,
        "watermark": result.watermark,
        "customers_flagged": result.customers_flagged,
    }
