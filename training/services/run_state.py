"""A training run's row while it runs: claim it, end it, its heartbeat and its progress.

Every state change is a conditional update on ``status`` (STYLE 5): the row count says
who won, so a redelivered task, the sweeper and a cancel can race without harm.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from django.db import connections
from django.utils import timezone

from training.ml.loop import Progress, TrainingCancelled
from training.models import TrainingRun

logger = logging.getLogger(__name__)

Status = TrainingRun.Status

PROGRESS_MIN_INTERVAL_SECONDS = 1.0


def finite_or_null(value: Any) -> Any:
    """``value`` (dicts and lists of JSON values) with every NaN or infinity replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite_or_null(item) for item in value]
    return value


def run_claim(run_id: int, worker: str) -> bool:
    now = timezone.now()
    return bool(
        TrainingRun.objects.filter(pk=run_id, status=Status.QUEUED).update(
            status=Status.RUNNING, started_at=now, heartbeat_at=now, worker=worker,
            progress={"phase": "starting"},
        )
    )


def run_finish(run_id: int, *, status: str, **values: Any) -> bool:
    """End a running run; False if it is no longer running (swept, or ended elsewhere)."""
    values.setdefault("progress", {"phase": "finished"})
    for name in ("progress", "history", "metrics"):  # JSON columns: no NaN (finite_or_null)
        if name in values:
            values[name] = finite_or_null(values[name])
    return bool(
        TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING).update(
            status=status, finished_at=timezone.now(), **values
        )
    )


@contextmanager
def run_heartbeat(run_id: int, interval: float) -> Iterator[None]:
    """Write the run's heartbeat from a thread while the body runs (data loading and
    evaluation write no progress for a while); a killed process writes nothing."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(interval):
                try:
                    TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING).update(heartbeat_at=timezone.now())
                except Exception:  # a database blip must not kill the run; the next beat retries
                    logger.exception("Training run %s: heartbeat failed", run_id)
        finally:
            connections.close_all()  # this thread's own connections

    thread = threading.Thread(target=beat, name=f"training-run-{run_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        # Don't wait out a beat stuck on a lock: a late beat updates nothing, since the
        # update is conditional on the run still running.
        thread.join(timeout=2)


class ProgressWriter:
    """Write progress to the run at most once a second, and stop the run if asked to."""

    def __init__(self, run_id: int, echo: Callable[[Progress], None] | None) -> None:
        self.run_id = run_id
        self.echo = echo
        self.last_write = 0.0
        self.history: list[dict[str, Any]] = []
        self.last: Progress | None = None
        self.last_phase: str | None = None
        # The share of the run's progress bar the epochs now running fill: the pipeline
        # gives each stage (search trials, training, the refit) its own, so the bar only
        # moves forward (dashboard.selectors.runs.run_progress).
        self.span: tuple[float, float] = (0.0, 1.0)

    def phase(self, name: str) -> None:
        self.last_phase = name
        self._write({"phase": name, "span": list(self.span)}, force=True)

    def __call__(self, progress: Progress) -> None:
        if self.echo is not None:
            self.echo(progress)
        epoch_ended = self.last is not None and progress.epoch != self.last.epoch
        if epoch_ended:
            self.history.append(
                {"epoch": self.last.epoch, "loss": self.last.loss, "validation_ndcg@10": progress.validation_ndcg}
            )
        self.last = progress
        self._write({"phase": "training", **asdict(progress), "span": list(self.span)}, force=epoch_ended)

    def quiet(self, progress: Progress) -> None:
        """A step outside early stopping (the refit): progress, heartbeat and cancel, the epoch chart left alone."""
        if self.echo is not None:
            self.echo(progress)
        phase = self.last_phase or "training"
        self._write({"phase": phase, **asdict(progress), "span": list(self.span)}, force=False)

    def _write(self, progress: dict[str, Any], *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self.last_write < PROGRESS_MIN_INTERVAL_SECONDS:
            return
        self.last_write = now
        # The loop stops on a NaN loss before reporting it (TrainingDiverged); any other
        # non-finite number is written as null: no JSON column takes NaN (SQLite's check
        # constraint failed with an IntegrityError, PostgreSQL's jsonb refuses it).
        written = TrainingRun.objects.filter(
            pk=self.run_id, status=Status.RUNNING, cancel_requested_at__isnull=True
        ).update(progress=finite_or_null(progress), history=finite_or_null(self.history), heartbeat_at=timezone.now())
        if not written:  # cancel requested, or the sweeper already gave up on this run
            raise TrainingCancelled(f"Training run {self.run_id} was cancelled.")
