"""Training runs: start (single flight), execute, cancel, and sweep runs whose worker died.

What a run does once claimed is the pipeline (pipeline.py); its row while it runs,
run_state.py.

Every state change is a conditional update on ``status`` (STYLE 5): the row count says
who won, so a redelivered task, the sweeper and a cancel can race without harm.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from training import queue
from training.artifacts import RUN_ARTIFACT, model_dir
from training.ml.loop import Progress, TrainingCancelled
from training.models import ModelVersion, TrainingRun

from .options import training_options_validate
from .pipeline import training_pipeline_run
from .run_state import ProgressWriter, Status, run_claim, run_finish, run_heartbeat

logger = logging.getLogger(__name__)

def training_run_in_flight() -> TrainingRun | None:
    return TrainingRun.objects.filter(status__in=TrainingRun.IN_FLIGHT).first()


def training_run_start(
    *, triggered_by: str, options: dict[str, Any] | None = None, enqueue: bool = True
) -> tuple[TrainingRun, bool]:
    """Queue a run, or return the one already in flight: ``(run, created)``.

    The database decides (the single-flight unique index), so two clicks in the same
    millisecond still make one run. With ``enqueue`` the Celery task is sent once the
    row is committed; ``manage.py train`` passes False and executes it itself.
    """
    options = training_options_validate(options or {})
    for _ in range(3):  # the in-flight run may end between our insert and our read
        try:
            with transaction.atomic():
                run = TrainingRun.objects.create(
                    triggered_by=triggered_by[:200], options=options, task_id=str(uuid.uuid4()) if enqueue else ""
                )
        except IntegrityError:
            existing = training_run_in_flight()
            if existing is not None:
                return existing, False
            continue
        if enqueue:
            transaction.on_commit(lambda run=run: _enqueue(run))
        return run, True
    raise RuntimeError("Could not start a training run: the single-flight slot kept changing hands.")


class BrokerUnavailable(Exception):
    """The run's task could not be sent: the broker cannot be reached. The run was failed; try again later."""

    def __init__(self, run_id: int, reason: str) -> None:
        super().__init__(f"Training run {run_id} was not started: the task broker cannot be reached ({reason}).")
        self.run_id = run_id


def _enqueue(run: TrainingRun) -> None:
    try:
        # The task id was stored with the run, so no write follows the send (one that
        # did could land after a fast worker's claim and overwrite it).
        queue.retrain_send(run.pk, task_id=run.task_id)
    except Exception as exc:
        # Failed at once, not left queued: the run holds the single-flight slot, and the
        # sweeper would free it only after QUEUED_TIMEOUT_SECONDS (each Retrain until
        # then would get this run back, which will never run). Nor deleted: the row
        # says who asked, when, and why nothing trained. Conditional on queued, so a
        # message that went out after all finds the run failed and does nothing.
        unreachable = queue.broker_unreachable(exc)
        reason = f"{type(exc).__name__}: {exc}".strip()[:500]
        error = (
            f"Could not reach the task broker ({reason}). Start the run again once it is back."
            if unreachable else f"Could not send its task ({reason})."
        )  # fmt: skip
        TrainingRun.objects.filter(pk=run.pk, status=Status.QUEUED).update(
            status=Status.FAILED, finished_at=timezone.now(), error=error
        )
        if unreachable:
            raise BrokerUnavailable(run.pk, reason) from exc
        raise


def training_run_cancel(*, run_id: int) -> TrainingRun:
    """Cancel a queued run now, or ask a running one to stop at its next progress write (≤ 1 s)."""
    now = timezone.now()
    TrainingRun.objects.filter(pk=run_id, status=Status.QUEUED).update(
        status=Status.CANCELLED, finished_at=now, error="Cancelled before it started."
    )
    TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING, cancel_requested_at__isnull=True).update(
        cancel_requested_at=now
    )
    return TrainingRun.objects.get(pk=run_id)


def training_runs_sweep(*, now=None) -> int:
    """Fail runs whose worker stopped writing heartbeats, and runs no worker picked up; return how many."""
    now = now or timezone.now()
    conf = settings.RECSITE_TRAINING
    stale = now - timedelta(seconds=conf["STALE_SECONDS"])
    swept = 0
    dead = TrainingRun.objects.filter(status=Status.RUNNING).filter(
        Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True, started_at__lt=stale)
    )
    for run in dead.only("pk", "heartbeat_at", "worker"):
        # Conditional on the heartbeat we read: a worker that wrote one since keeps its run.
        swept += TrainingRun.objects.filter(pk=run.pk, status=Status.RUNNING, heartbeat_at=run.heartbeat_at).update(
            status=Status.FAILED,
            finished_at=now,
            error=(
                f"The worker ({run.worker or 'unknown'}) stopped responding: no heartbeat since "
                f"{run.heartbeat_at or 'it started'}. It was probably killed (out of memory, kill -9, "
                f"machine lost). Start a new run."
            ),
        )
    never_started = now - timedelta(seconds=conf["QUEUED_TIMEOUT_SECONDS"])
    swept += TrainingRun.objects.filter(status=Status.QUEUED, created_at__lt=never_started).update(
        status=Status.FAILED,
        finished_at=now,
        error=f"No worker picked it up within {conf['QUEUED_TIMEOUT_SECONDS']:.0f} s. Is a worker consuming the "
        f"'training' queue?",
    )
    if swept:
        logger.warning("Swept %d training run(s) whose worker died or never came.", swept)
    _orphaned_artifacts_sweep(now=now)
    return swept


def _orphaned_artifacts_sweep(*, now) -> int:
    """Delete artifact files of ended runs that no ModelVersion row names; return how many.

    A worker killed between writing the artifact and inserting its row (or while
    writing it) leaves such a file. Only files named after a run that has ended, and
    older than STALE_SECONDS, are touched: a run in flight may be about to insert its
    row, and anything else in the directory is not ours to delete.
    """
    directory = model_dir()
    by_run: dict[int, list[Path]] = {}
    for path in directory.iterdir():
        match = RUN_ARTIFACT.match(path.name)
        if match:
            by_run.setdefault(int(match["run"]), []).append(path)
    if not by_run:
        return 0
    ended = TrainingRun.objects.filter(pk__in=by_run).exclude(status__in=TrainingRun.IN_FLIGHT)
    candidates = [path for run_id in ended.values_list("pk", flat=True) for path in by_run[run_id]]
    versions = ModelVersion.objects.filter(artifact_path__in=[path.name for path in candidates])
    named = set(versions.values_list("artifact_path", flat=True))
    settle = now.timestamp() - settings.RECSITE_TRAINING["STALE_SECONDS"]
    removed = 0
    for path in candidates:
        try:
            if path.name not in named and path.stat().st_mtime < settle:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # another sweeper got there first
            continue
    if removed:
        logger.warning("Deleted %d orphaned model artifact(s) of ended training runs in %s.", removed, directory)
    return removed


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def training_run_execute(
    *, run_id: int, worker: str | None = None, echo: Callable[[Progress], None] | None = None
) -> TrainingRun:
    """Claim a queued run and carry it to its end; a run someone else claimed is left alone.

    Ends succeeded (and promoted), rejected (the gate's reason in ``error``), cancelled
    or failed. Nothing is raised for a failed run: the row says what happened.
    """
    worker = worker or default_worker_name()
    if not run_claim(run_id, worker):
        logger.info("Training run %s is not queued any more; nothing to do.", run_id)
        return TrainingRun.objects.get(pk=run_id)
    threads = settings.RECSITE_TRAINING["TORCH_THREADS"]
    if threads:  # 0: torch's default (one per core)
        torch.set_num_threads(threads)
    writer = ProgressWriter(run_id, echo)
    with run_heartbeat(run_id, settings.RECSITE_TRAINING["HEARTBEAT_SECONDS"]):
        try:
            training_pipeline_run(TrainingRun.objects.get(pk=run_id), writer)
        except TrainingCancelled:
            run_finish(run_id, status=Status.CANCELLED, error="Cancelled on request.", history=writer.history)
        except BaseException as exc:
            # BaseException: Celery's SoftTimeLimitExceeded and KeyboardInterrupt (^C in
            # manage.py train) must end the run too, not leave it running.
            logger.exception("Training run %s failed", run_id)
            run_finish(run_id, status=Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:5000], history=writer.history)
            if not isinstance(exc, Exception):
                raise
    return TrainingRun.objects.get(pk=run_id)
