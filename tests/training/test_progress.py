"""Progress reaches the run at most once a second, and a cancel stops the next write."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from training.ml.loop import Progress, TrainingCancelled
from training.models import TrainingRun
from training.services import training_run_cancel
from training.services.run_state import ProgressWriter as _ProgressWriter


def progress(step: int, epoch: int = 1) -> Progress:
    return Progress(epoch=epoch, epochs=3, step=step, steps=100, loss=0.5, eta_seconds=12.0, validation_ndcg=None)


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr("training.services.run_state.time.monotonic", lambda: now[0])
    return now


@pytest.mark.django_db
def test_a_hundred_steps_in_five_seconds_make_at_most_six_writes(clock):
    run = TrainingRun.objects.create(triggered_by="test", status=TrainingRun.Status.RUNNING)
    writer = _ProgressWriter(run.pk, echo=None)

    with CaptureQueriesContext(connection) as queries:
        for step in range(1, 101):
            writer(progress(step))
            clock[0] += 0.05

    writes = [q for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert 5 <= len(writes) <= 6
    run.refresh_from_db()
    assert run.progress["phase"] == "training" and run.progress["step"] >= 80 and run.heartbeat_at is not None


@pytest.mark.django_db
def test_the_end_of_an_epoch_is_written_at_once_with_its_history(clock):
    run = TrainingRun.objects.create(triggered_by="test", status=TrainingRun.Status.RUNNING)
    writer = _ProgressWriter(run.pk, echo=None)
    writer(progress(100, epoch=1))

    writer(progress(1, epoch=2))  # same instant: written anyway, the epoch changed

    run.refresh_from_db()
    assert run.progress["epoch"] == 2 and [h["epoch"] for h in run.history] == [1]


@pytest.mark.django_db
def test_a_cancel_request_stops_the_run_at_its_next_write(clock):
    run = TrainingRun.objects.create(triggered_by="test", status=TrainingRun.Status.RUNNING)
    writer = _ProgressWriter(run.pk, echo=None)
    writer(progress(1))
    training_run_cancel(run_id=run.pk)
    clock[0] += 1.0

    with pytest.raises(TrainingCancelled):
        writer(progress(2))
