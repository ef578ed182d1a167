"""Settings of the poison-task worker: the test settings, plus the test-only tasks (tests/faults/poison_tasks.py)."""

from tests.settings import *  # noqa: F403

CELERY_IMPORTS = ["tests.faults.poison_tasks"]
# How long the worker waits for the result of a pool child that died before it calls the
# task lost (default 10 s). Shortened so each kill costs the test 1 s, not 10.
CELERY_WORKER_LOST_WAIT = 1.0
