"""The training runs pages: a page of runs with their gate metric, one run's progress and curves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.core.paginator import Page, Paginator
from django.utils import timezone

from dashboard.charts import Chart, line_chart
from training.models import ModelVersion, TrainingRun

RUNS_PER_PAGE = 25
# Phases the worker writes once training has ended: they replace the epoch/step fields
# of run.progress, so the finished epochs are read from run.history instead.
AFTER_TRAINING_PHASES = ("evaluating", "saving")


@dataclass(frozen=True)
class GateMetrics:
    """Full-ranking NDCG@10 (the promotion gate's metric) of the run's model and what it was compared with."""

    model: float | None
    popularity: float | None
    champion: float | None


@dataclass(frozen=True)
class RunRow:
    run: TrainingRun
    version: ModelVersion | None
    duration: str  # "" when the run never started
    ndcg: GateMetrics


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands, for the progress bar and the epoch/loss/ETA line."""

    phase: str
    epoch: int | None
    epochs: int | None
    step: int | None
    steps: int | None
    loss: float | None
    validation_ndcg: float | None
    eta: str  # "" unless the run is training now
    # While early stopping trains: the epoch it ends after unless validation improves
    # (best epoch so far + patience, at most ``epochs``); None otherwise.
    stops_after: int | None
    best_epoch: int | None
    done: int  # steps done over all epochs, out of ``total``
    total: int

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0


def run_page(*, page: str | int | None, now: datetime | None = None) -> Page:
    """Return one page of runs, newest first, as RunRow objects (two queries: the count and the page)."""
    now = now or timezone.now()
    # history can be an entry per epoch and the version's metrics repeat the run's: the
    # list shows neither.
    runs = TrainingRun.objects.with_version().defer("history", "model_version__metrics", "model_version__config")
    found = Paginator(runs, RUNS_PER_PAGE).get_page(page)
    found.object_list = [
        RunRow(run=run, version=version_of(run), duration=run_duration(run, now=now), ndcg=gate_metrics(run.metrics))
        for run in found.object_list
    ]
    return found


def run_in_flight() -> TrainingRun | None:
    return TrainingRun.objects.filter(status__in=TrainingRun.IN_FLIGHT).only("pk", "status").first()


def run_with_version(*, run_id: int) -> TrainingRun:
    """Return the run and its model version (no id maps); raise TrainingRun.DoesNotExist."""
    return TrainingRun.objects.with_version().get(pk=run_id)


def serving_version() -> ModelVersion | None:
    return (
        ModelVersion.objects.without_id_maps()
        .filter(status=ModelVersion.Status.PROMOTED)
        .only("pk", "status", "training_run_id", "promoted_at")
        .first()
    )


def version_of(run: TrainingRun) -> ModelVersion | None:
    """Return the run's model version from with_version()'s join; None when it made none."""
    try:
        return run.model_version
    except ModelVersion.DoesNotExist:
        return None


def gate_metrics(metrics: dict | None) -> GateMetrics:
    def full_ndcg(ranker: str) -> float | None:
        found = (metrics or {}).get(ranker)
        value = found.get("full", {}).get("ndcg@10") if isinstance(found, dict) else None
        return float(value) if isinstance(value, int | float) else None

    return GateMetrics(model=full_ndcg("model"), popularity=full_ndcg("popularity"), champion=full_ndcg("champion"))


def run_duration(run: TrainingRun, *, now: datetime) -> str:
    """Say how long the run ran, or has been running so far ("" if it never started)."""
    if run.started_at is None:
        return ""
    end = run.finished_at or (now if run.is_in_flight else None)
    return duration_text((end - run.started_at).total_seconds()) if end else ""


def duration_text(seconds: float) -> str:
    """Say a number of seconds the way a person reads a clock: "45 s", "3 min 05 s", "2 h 10 min"."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _float(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


BAR_UNITS = 1000


def _span(value) -> tuple[float, float] | None:
    """A progress dict's span, [start, end] within [0, 1], or None when absent or malformed."""
    if not (isinstance(value, list) and len(value) == 2):
        return None
    start, end = (_float(v) for v in value)
    if start is None or end is None or not 0 <= start <= end <= 1:
        return None
    return start, end


def run_progress(run: TrainingRun) -> RunProgress:
    """Read run.progress (written by the worker at most once a second) and run.history."""
    progress = run.progress if isinstance(run.progress, dict) else {}
    history = [h for h in (run.history or []) if isinstance(h, dict)]
    last = history[-1] if history else {}
    phase = str(progress.get("phase") or ("waiting for a worker" if run.status == TrainingRun.Status.QUEUED else ""))
    epoch, epochs = _int(progress.get("epoch")), _int(progress.get("epochs"))
    step, steps = _int(progress.get("step")), _int(progress.get("steps"))
    span = _span(progress.get("span"))
    if epoch and epochs and step and steps:
        total = epochs * steps
        done = min((epoch - 1) * steps + step, total)
        if span is not None:  # this stage's share of the bar (training.services.run_state.ProgressWriter.span)
            done, total = round(BAR_UNITS * (span[0] + (span[1] - span[0]) * done / total)), BAR_UNITS
        loss = _float(progress.get("loss"))
        validation = _float(progress.get("validation_ndcg"))
    elif span is not None and run.status != TrainingRun.Status.SUCCEEDED and phase not in AFTER_TRAINING_PHASES:
        done, total = round(BAR_UNITS * span[0]), BAR_UNITS  # a stage that has not stepped yet: its start
        epoch, epochs = _int(last.get("epoch")), None
        loss, validation = _float(last.get("loss")), _float(last.get("validation_ndcg@10"))
    else:
        training_over = run.status == TrainingRun.Status.SUCCEEDED or (bool(history) and phase in AFTER_TRAINING_PHASES)
        done, total = (1, 1) if training_over else (0, 1)
        epoch, epochs = _int(last.get("epoch")), None
        loss, validation = _float(last.get("loss")), _float(last.get("validation_ndcg@10"))
    eta_seconds = _float(progress.get("eta_seconds"))
    training_now = (run.status == TrainingRun.Status.RUNNING and eta_seconds is not None
                    and (phase == "training" or phase.startswith("refitting")))  # fmt: skip
    best, patience = _int(progress.get("best_epoch")), _int(progress.get("patience"))
    stops_after = min(best + patience, epochs) if training_now and best and patience and epochs else None
    return RunProgress(
        stops_after=stops_after,
        best_epoch=best if stops_after else None,
        phase=phase,
        epoch=epoch,
        epochs=epochs,
        step=step if steps else None,
        steps=steps,
        loss=loss,
        validation_ndcg=validation,
        eta=duration_text(eta_seconds) if training_now else "",
        done=done,
        total=total,
    )


def run_curves(run: TrainingRun) -> tuple[Chart, Chart]:
    """Return the loss and validation NDCG@10 per finished epoch (nothing to plot before the second)."""
    history = [h for h in (run.history or []) if isinstance(h, dict)]
    if len(history) < 2:  # one point is no curve, and its axis would be made up
        history = []
    labels = [f"epoch {h.get('epoch', i + 1)}" for i, h in enumerate(history)]
    return (
        line_chart("Training loss per epoch", labels, [_float(h.get("loss")) for h in history]),
        line_chart("Validation NDCG@10 per epoch", labels, [_float(h.get("validation_ndcg@10")) for h in history]),
    )

