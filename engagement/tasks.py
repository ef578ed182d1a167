"""Celery entry points for engagement: thin, the work is in engagement.services."""

from celery import shared_task
from django.db import OperationalError

from engagement.services import engagement_fold


@shared_task(
    name="engagement.tasks.compute_engagement",
    # Late ack (Redis): a worker lost mid-fold leaves the message to be run again, which
    # is safe because the fold is idempotent (watermark and upsert in one transaction).
    # The file-system broker removes a message when it is read, so there beat's next run
    # (within a minute) is what catches up.
    acks_late=True,
    reject_on_worker_lost=True,
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
    result = engagement_fold(full=full)
    return {
        "events_folded": result.events_folded,
        "pairs_touched": result.pairs_touched,
        "watermark": result.watermark,
    }
