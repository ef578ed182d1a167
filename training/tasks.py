"""Celery entry points for training: thin, the work is in training.services (STYLE 6)."""

from celery import shared_task
from django.conf import settings
from django.db import OperationalError

from training import queue
from training.services import (
    training_run_execute,
    training_run_start,
    training_runs_sweep,
)
from training.services.precompute import (
    recommendations_precompute_chunk,
    recommendations_precompute_start,
    recommendations_refresh,
)


@shared_task(
    name=queue.RETRAIN,
    # Late ack: a worker that dies mid-run leaves the message to Redis's visibility
    # timeout, and the redelivery is harmless because claiming a run is a conditional
    # queued -> running update (a second delivery finds it running and does nothing).
    acks_late=True,
    # Not re-queued when the child is killed (OOM, kill -9): that would loop on a run
    # that kills its worker (celery discussion #8969). The sweeper fails the run instead.
    reject_on_worker_lost=False,
    soft_time_limit=settings.RECSITE_TRAINING["SOFT_TIME_LIMIT"],
    time_limit=settings.RECSITE_TRAINING["TIME_LIMIT"],
)
def retrain(run_id: int) -> str:
    """Execute training run ``run_id``; return its final status."""
    return training_run_execute(run_id=run_id).status


@shared_task(name=queue.SWEEP_TRAINING_RUNS, acks_late=True, soft_time_limit=60, time_limit=90)
def sweep_training_runs() -> int:
    """Fail runs whose worker died or that no worker picked up; return how many."""
    return training_runs_sweep()


@shared_task(name=queue.SCHEDULED_RETRAIN, soft_time_limit=60, time_limit=90)
def scheduled_retrain() -> int:
    """Start a run on beat's schedule (RECSITE_RETRAIN_EVERY_HOURS); return its id (or the one in flight)."""
    run, _ = training_run_start(triggered_by="schedule")
    return run.pk


@shared_task(name=queue.PRECOMPUTE, acks_late=True, soft_time_limit=120, time_limit=180)
def precompute_recommendations(version_id: int) -> int:
    """Fan the precompute of a promoted version out over customer chunks; return how many chunks."""
    started = recommendations_precompute_start(version_id=version_id)
    return started.chunks if started is not None else 0


@shared_task(
    name=queue.PRECOMPUTE_CHUNK,
    # Late ack: a chunk whose worker dies is delivered again (Redis visibility timeout);
    # running it twice only writes the same lists again.
    acks_late=True,
    # A busy SQLite ("database is locked") or a dropped connection: try again shortly.
    autoretry_for=(OperationalError,),
    retry_backoff=5,
    retry_backoff_max=60,
    max_retries=3,
)
def precompute_recommendations_chunk(version_id: int, customers: list[int]) -> int:
    """Write the precomputed lists of ``customers`` (model indices); return how many."""
    return recommendations_precompute_chunk(version_id=version_id, customers=customers)


@shared_task(name=queue.REFRESH, acks_late=True, soft_time_limit=120, time_limit=180)
def refresh_recommendations(after_event_id: int, upto_event_id: int) -> int:
    """Precompute again the lists of the customers of events (after, upto], just folded; return how many."""
    return recommendations_refresh(after_event_id=after_event_id, upto_event_id=upto_event_id)
