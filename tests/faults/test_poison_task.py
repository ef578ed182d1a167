"""Poison tasks: a task that always fails, or whose worker child is killed every time, ends failed after bounded tries.

The tasks (tests/faults/poison_tasks.py) copy the retry and crash policy of the
project's tasks; a worker with tests/faults/worker_settings.py imports them.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from celery.result import AsyncResult

from recsite.celery import app
from tests.celery_worker import start_worker, stop_process
from tests.faults.poison_tasks import FAILING, KILLED, MIRRORED

QUEUE = "faults-poison"
SETTLE_SECONDS = 3  # after the task ended: time for a retry or redelivery that should not come (they took < 3 s)
GIVE_UP_SECONDS = 40

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("transactional_db")]


def purge_queue() -> None:
    # A task that loops is still in the queue when its worker stops (unacknowledged
    # messages are restored): the next run's worker must not start with it.
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(QUEUE)


@pytest.fixture(scope="module")
def poison_worker(app_env, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("poison-worker") / "worker.log"
    purge_queue()
    worker = start_worker(
        log_path=log_path, queues=QUEUE, hostname=f"{QUEUE}@%h", pool="prefork",
        env=app_env(proxied=False, DJANGO_SETTINGS_MODULE="tests.faults.worker_settings"),
    )  # fmt: skip
    yield log_path
    stop_process(worker)
    purge_queue()


def allowed_tries(task) -> int:
    """At most the first try and max_retries retries, whatever kills it."""
    return 1 + (task.max_retries or 0)


def tries(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def run_until_settled(task, path: Path, log_path: Path) -> tuple[AsyncResult, float]:
    """Send the task; wait until its result is final or it was tried more often than allowed."""
    started = time.monotonic()
    result = task.apply_async(args=[str(path)], queue=QUEUE)
    while not result.ready() and tries(path) <= allowed_tries(task):
        if time.monotonic() - started > GIVE_UP_SECONDS:
            pytest.fail(f"{task.name} neither ended nor looped in {GIVE_UP_SECONDS} s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)  # polling another process
    ended = time.monotonic() - started
    time.sleep(SETTLE_SECONDS)
    return result, ended


@pytest.mark.parametrize("mirrored", [name for name, task in MIRRORED.items() if getattr(task, "autoretry_for", ())])
def test_a_task_that_always_fails_gets_a_bounded_number_of_tries_then_ends_failed(
    poison_worker, mirrored, tmp_path, figure
):
    task, real = FAILING[mirrored], MIRRORED[mirrored]
    expected = allowed_tries(real)

    result, ended = run_until_settled(task, tmp_path / "tries", poison_worker)

    figure(
        f"poison_fails_like_{mirrored.rsplit('.', 1)[1]}", tries=tries(tmp_path / "tries"), expected_tries=expected,
        state=result.state, ended_after_s=round(ended, 1), max_retries=real.max_retries,
    )  # fmt: skip
    assert result.state == "FAILURE"
    assert tries(tmp_path / "tries") == expected  # and no more came in SETTLE_SECONDS


@pytest.mark.parametrize("mirrored", list(MIRRORED))
def test_a_task_whose_worker_child_is_killed_every_time_is_not_delivered_again_forever(
    poison_worker, mirrored, tmp_path, figure
):
    task, real = KILLED[mirrored], MIRRORED[mirrored]

    result, ended = run_until_settled(task, tmp_path / "tries", poison_worker)

    count = tries(tmp_path / "tries")
    figure(
        f"poison_killed_like_{mirrored.rsplit('.', 1)[1]}", tries=count, allowed_tries=allowed_tries(real),
        state=result.state, ended_after_s=round(ended, 1), acks_late=real.acks_late,
        reject_on_worker_lost=real.reject_on_worker_lost,
    )  # fmt: skip
    assert count <= allowed_tries(real), (
        f"{mirrored} is delivered again every time its child dies ({count} tries and counting): "
        f"reject_on_worker_lost=True requeues a task whose worker was lost, and nothing counts the requeues "
        f"(celery discussion #8969). Set reject_on_worker_lost=False on the task (docs/reliability.md)."
    )
    assert result.state == "FAILURE"
