"""Training runs: start (single flight), execute, cancel, and sweep runs whose worker died.

Every state change is a conditional update on ``status`` (STYLE 5): the row count says
who won, so a redelivered task, the sweeper and a cancel can race without harm.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.db.models import Q
from django.utils import timezone

from engagement.services import engagement_fold
from training import queue
from training.ml.artifact import save_artifact
from training.ml.data import leave_last_out, product_prior
from training.ml.loop import Progress, TrainingCancelled, train
from training.ml.metrics import evaluate_split
from training.ml.scoring import CatalogScorer
from training.ml.search import candidates, search
from training.models import ModelPromotion, ModelVersion, TrainingRun

from .dataset import TrainingData, training_data_load
from .options import (  # noqa: F401 (OPTIONS, _configs and the validation are imported from here too)
    OPTIONS,
    TrainingOptionsInvalid,
    _configs,
    base_options,
    resolved_options,
    training_options_validate,
)
from .evaluation import (
    champion_score_fn,
    gate_decide,
    model_score_fn,
    popularity_score_fn,
)
from ..artifacts import model_dir, model_version_load
from .versions import (
    PromotionRefused,
    model_version_promote_verified,
    model_version_promoted,
    model_version_verify,
)

logger = logging.getLogger(__name__)

Status = TrainingRun.Status

PROGRESS_MIN_INTERVAL_SECONDS = 1.0


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


def _enqueue(run: TrainingRun) -> None:
    try:
        # The task id was stored with the run, so no write follows the send (one that
        # did could land after a fast worker's claim and overwrite it).
        queue.retrain_send(run.pk, task_id=run.task_id)
    except Exception as exc:
        # The broker is down: free the single-flight slot now rather than after the
        # queued timeout, and let the caller answer 503.
        TrainingRun.objects.filter(pk=run.pk, status=Status.QUEUED).update(
            status=Status.FAILED, finished_at=timezone.now(), error=f"Could not reach the task broker: {exc}"
        )
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


# What _save_version and save_artifact write: run-<run pk>-<time>.pt, and while it is
# being written .run-<run pk>-<time>.pt.<random>.tmp.
_RUN_ARTIFACT = re.compile(r"^\.?run-(?P<run>\d+)-[^/]*\.pt(\.[^/]*\.tmp)?$")


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
        match = _RUN_ARTIFACT.match(path.name)
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


def _claim(run_id: int, worker: str) -> bool:
    now = timezone.now()
    return bool(
        TrainingRun.objects.filter(pk=run_id, status=Status.QUEUED).update(
            status=Status.RUNNING, started_at=now, heartbeat_at=now, worker=worker,
            progress={"phase": "starting"},
        )
    )


def _finish(run_id: int, *, status: str, **values: Any) -> bool:
    """End a running run; False if it is no longer running (swept, or ended elsewhere)."""
    values.setdefault("progress", {"phase": "finished"})
    return bool(
        TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING).update(
            status=status, finished_at=timezone.now(), **values
        )
    )


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextmanager
def _heartbeat(run_id: int, interval: float) -> Iterator[None]:
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


class _ProgressWriter:
    """Write progress to the run at most once a second, and stop the run if asked to."""

    def __init__(self, run_id: int, echo: Callable[[Progress], None] | None) -> None:
        self.run_id = run_id
        self.echo = echo
        self.last_write = 0.0
        self.history: list[dict[str, Any]] = []
        self.last: Progress | None = None

    def phase(self, name: str) -> None:
        self._write({"phase": name}, force=True)

    def __call__(self, progress: Progress) -> None:
        if self.echo is not None:
            self.echo(progress)
        epoch_ended = self.last is not None and progress.epoch != self.last.epoch
        if epoch_ended:
            self.history.append(
                {"epoch": self.last.epoch, "loss": self.last.loss, "validation_ndcg@10": progress.validation_ndcg}
            )
        self.last = progress
        self._write({"phase": "training", **asdict(progress)}, force=epoch_ended)

    def _write(self, progress: dict[str, Any], *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self.last_write < PROGRESS_MIN_INTERVAL_SECONDS:
            return
        self.last_write = now
        written = TrainingRun.objects.filter(
            pk=self.run_id, status=Status.RUNNING, cancel_requested_at__isnull=True
        ).update(progress=progress, history=self.history, heartbeat_at=timezone.now())
        if not written:  # cancel requested, or the sweeper already gave up on this run
            raise TrainingCancelled(f"Training run {self.run_id} was cancelled.")


def training_run_execute(
    *, run_id: int, worker: str | None = None, echo: Callable[[Progress], None] | None = None
) -> TrainingRun:
    """Claim a queued run and carry it to its end; a run someone else claimed is left alone.

    Ends succeeded (and promoted), rejected (the gate's reason in ``error``), cancelled
    or failed. Nothing is raised for a failed run: the row says what happened.
    """
    worker = worker or default_worker_name()
    if not _claim(run_id, worker):
        logger.info("Training run %s is not queued any more; nothing to do.", run_id)
        return TrainingRun.objects.get(pk=run_id)
    threads = settings.RECSITE_TRAINING["TORCH_THREADS"]
    if threads:  # 0: torch's default (one per core)
        torch.set_num_threads(threads)
    writer = _ProgressWriter(run_id, echo)
    with _heartbeat(run_id, settings.RECSITE_TRAINING["HEARTBEAT_SECONDS"]):
        try:
            _execute(TrainingRun.objects.get(pk=run_id), writer)
        except TrainingCancelled:
            _finish(run_id, status=Status.CANCELLED, error="Cancelled on request.", history=writer.history)
        except BaseException as exc:
            # BaseException: Celery's SoftTimeLimitExceeded and KeyboardInterrupt (^C in
            # manage.py train) must end the run too, not leave it running.
            logger.exception("Training run %s failed", run_id)
            _finish(run_id, status=Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:5000], history=writer.history)
            if not isinstance(exc, Exception):
                raise
    return TrainingRun.objects.get(pk=run_id)


def _execute(run: TrainingRun, writer: _ProgressWriter) -> None:
    conf = settings.RECSITE_TRAINING
    started = time.monotonic()
    # Events the periodic fold has not reached yet belong in this model: fold them now
    # (incremental, and safe next to beat's fold: the watermark row is locked).
    writer.phase("folding new events")
    engagement_fold()
    writer.phase("loading data")
    data = training_data_load(recency=conf["TARGET_RECENCY"])
    outer = leave_last_out(data.interactions)
    test_customers = len(outer.test_customers)
    if test_customers < conf["MIN_TEST_CUSTOMERS"]:
        _finish(
            run.pk,
            status=Status.REJECTED,
            error=(
                f"Not enough data to evaluate a model: {test_customers} customer(s) have engaged with 2 or more "
                f"products; at least {conf['MIN_TEST_CUSTOMERS']} are needed (RECSITE_MIN_TEST_CUSTOMERS)."
            ),
            metrics={"data": _data_summary(data, test_customers)},
        )
        return
    # Validation for early stopping is held out of the training rows, so the test
    # items stay unseen until the final evaluation.
    inner = leave_last_out(outer.train)
    prior = product_prior(inner.train)
    sizes = {
        "num_customers": len(data.customer_ids),
        "num_products": len(data.product_ids),
        "train_rows": len(inner.train.customer_idx),
    }
    base, search_why = base_options(run)

    def fit(options: dict[str, Any], deadline: float | None = None):
        model_config, train_config = _configs(options, **sizes)
        return train(
            model_config=model_config,
            train_config=train_config,
            train=inner.train,
            validation=inner,
            prior=prior,
            channel_weights=data.channel_weights,
            on_progress=writer,
            deadline=deadline,
        )

    search_record: dict[str, Any] | None = None
    if search_why:
        tried = candidates(base, resolved_options(base, **sizes))
        writer.phase(f"searching settings ({len(tried)} candidates)")
        found = search(
            fit,
            tried,
            budget_seconds=conf["SEARCH_SECONDS"],
            on_trial=lambda t: writer.phase(f"searching settings: tried {t.options or 'the base options'}"),
        )
        result, chosen = found.best, found.chosen
        search_record = {
            "why": search_why,
            "budget_seconds": conf["SEARCH_SECONDS"],
            "seconds": round(found.seconds, 1),
            "chosen": chosen,
            "tried": [t.to_dict() for t in found.trials],
            "skipped": found.skipped,
        }
    else:
        writer.phase("training")
        chosen = base
        result = fit(chosen)
    model_config, train_config = _configs(chosen, **sizes)
    train_seconds = time.monotonic() - started
    writer.phase("evaluating")
    # The gate's model: the trained weights with every customer folded from the rows
    # before their test item. The saved model folds them from every row (docs/model.md).
    metrics = _evaluate(result.refold(outer.train), prior, data, outer, train_config.seed)
    metrics["data"] = _data_summary(data, test_customers)
    metrics["training"] = {
        "seconds": round(train_seconds, 2),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "device": result.device,
        "examples_per_second": round(result.examples_per_second),
    }
    decision = gate_decide(
        candidate=metrics["model"],
        popularity=metrics["popularity"],
        champion=metrics.get("champion"),
        tolerance=conf["PROMOTION_TOLERANCE"],
    )
    metrics["gate"] = {"promote": decision.promote, "reason": decision.reason}
    metrics["settings"] = {"options": chosen, "searched": search_record is not None}
    if search_record is not None:
        metrics["search"] = search_record
    writer.phase("saving")
    version = _save_version(
        run, result.refold(data.interactions), model_config, train_config, prior, data, metrics,
        status=ModelVersion.Status.CANDIDATE if decision.promote else ModelVersion.Status.REJECTED,
    )  # fmt: skip
    metrics["total_seconds"] = round(time.monotonic() - started, 2)
    common = {"metrics": metrics, "history": result.history}
    if not decision.promote:
        _finish(run.pk, status=Status.REJECTED, error=decision.reason, **common)
        return
    try:
        model_version_verify(version)  # slow I/O: before the transaction below
    except PromotionRefused as exc:
        _finish(run.pk, status=Status.FAILED, error=str(exc), **common)
        return
    # Promote and end the run in one transaction, holding the run's row: a cancel or a
    # sweep that got in first wins (nothing is promoted), and none can slip in between.
    with transaction.atomic():
        still_ours = TrainingRun.objects.select_for_update().filter(
            pk=run.pk, status=Status.RUNNING, cancel_requested_at__isnull=True
        )
        if not still_ours.exists():
            raise TrainingCancelled(f"Training run {run.pk} was cancelled or swept before its promotion.")
        model_version_promote_verified(
            version_id=version.pk, actor=f"training-run:{run.pk}", action=ModelPromotion.Action.PROMOTE
        )
        _finish(run.pk, status=Status.SUCCEEDED, **common)


def _data_summary(data: TrainingData, test_customers: int) -> dict[str, Any]:
    return {
        "target_recency": settings.RECSITE_TRAINING["TARGET_RECENCY"],
        "customers": len(data.customer_ids),
        "products": len(data.product_ids),
        "pairs": len(data.interactions.customer_idx),
        "test_customers": test_customers,
        "as_of": data.as_of.isoformat() if data.as_of else None,
    }


def _evaluate(model, prior, data: TrainingData, outer, seed: int) -> dict[str, Any]:
    """The candidate, popularity and the serving model, on the same split, through the API's scorer."""
    conf = settings.RECSITE_TRAINING
    kwargs = {"split": outer, "sampled_negatives": conf["SAMPLED_NEGATIVES"], "seed": seed}
    scorer = CatalogScorer(model, prior, data.channel_weights)
    metrics: dict[str, Any] = {
        "model": evaluate_split(model_score_fn(scorer), **kwargs),
        "popularity": evaluate_split(popularity_score_fn(outer), **kwargs),
    }
    champion = model_version_promoted()
    if champion is not None:
        try:
            loaded = model_version_load(champion)
        except Exception as exc:  # a broken champion cannot veto; say so in the metrics
            logger.warning("Promoted model version %s cannot be loaded for comparison: %s", champion.pk, exc)
            metrics["champion_error"] = f"version {champion.pk}: {exc}"
        else:
            score = champion_score_fn(loaded, split=outer, customer_ids=data.customer_ids, product_ids=data.product_ids)
            metrics["champion"] = {"version": champion.pk, **evaluate_split(score, **kwargs)}
    return metrics


def _save_version(
    run, model, model_config, train_config, prior, data: TrainingData, metrics, *, status: str
) -> ModelVersion:
    relative = f"run-{run.pk}-{timezone.now():%Y%m%dT%H%M%S}.pt"
    config = {"model": model_config.to_dict(), "train": train_config.to_dict()}
    path = model_dir() / relative
    # Writing the file is slow I/O: done before, and outside, any transaction.
    sha256 = save_artifact(
        path,
        model=model,
        config=model_config,
        prior=prior,
        customer_ids=data.customer_ids,
        product_ids=data.product_ids,
        channel_weights=data.channel_weights,
        metrics=metrics,
        extra={"training_run": run.pk, "train": train_config.to_dict(), "as_of": metrics["data"]["as_of"]},
    )
    try:
        return ModelVersion.objects.create(
            training_run=run,
            status=status,
            artifact_path=relative,
            sha256=sha256,
            config=config,
            customer_ids=data.customer_ids,
            product_ids=data.product_ids,
            metrics=metrics,
        )
    except BaseException:
        # No row, no file. A kill -9 right here still leaves the file: the sweeper
        # deletes it once the run has ended (_orphaned_artifacts_sweep).
        path.unlink(missing_ok=True)
        raise
