"""Celery entry points for engagement: thin, the work is in engagement.services."""

from celery import shared_task
from django.db import OperationalError

from engagement.services import engagement_fold


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
    """Fold new events into Engagement (all events with ``full``); return the counts.

    The apps built on engagement hear of the fold through ``engagement_folded`` (training
    precomputes the touched customers' lists again).
    """
    result = engagement_fold(full=full)
    return {
        "events_folded": result.events_folded,
        "pairs_touched": result.pairs_touched,
        "watermark": result.watermark,
        "customers_flagged": result.customers_flagged,
    }
