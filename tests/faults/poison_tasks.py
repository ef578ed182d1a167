"""Test-only tasks that never succeed, with the retry and crash policy of the project's own tasks.

Each copies the policy of a real task (``POLICY`` below: acks_late, reject_on_worker_lost,
autoretry_for, max_retries, ...), so the test measures what that task would do if its
work always failed. Only the backoff is shortened (1 s, at most 2 s, instead of 5 s up
to 60 s): the number of tries is the same, the test just waits less for them. Every try
appends a line to the file it is given, so the test counts tries from outside.
"""

from __future__ import annotations

import os
import signal

from celery import shared_task
from django.db import OperationalError

from engagement.tasks import compute_engagement
from training.tasks import retrain

POLICY = ("acks_late", "reject_on_worker_lost", "retry_on_worker_lost", "autoretry_for", "max_retries", "retry_jitter")
SHORT_BACKOFF = {"retry_backoff": 1, "retry_backoff_max": 2, "default_retry_delay": 1}
MIRRORED = {task.name: task for task in (compute_engagement, retrain)}


def policy_of(task) -> dict:
    return {name: getattr(task, name) for name in POLICY if getattr(task, name, None) is not None}


def _record(path: str) -> None:
    with open(path, "a") as handle:
        handle.write(f"{os.getpid()}\n")


def _fails(path: str) -> None:
    _record(path)
    raise OperationalError("poison: the database error that never goes away")


def _killed(path: str) -> None:
    _record(path)
    os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does to a pool child


def _name(kind: str, mirrored: str) -> str:
    return f"tests.faults.poison.{kind}_like_{mirrored.rsplit('.', 1)[1]}"


FAILING = {}
KILLED = {}
for _mirrored, _task in MIRRORED.items():
    FAILING[_mirrored] = shared_task(name=_name("fails", _mirrored), **policy_of(_task), **SHORT_BACKOFF)(_fails)
    KILLED[_mirrored] = shared_task(name=_name("killed", _mirrored), **policy_of(_task), **SHORT_BACKOFF)(_killed)
