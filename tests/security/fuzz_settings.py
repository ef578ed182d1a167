"""Settings of the fuzz test's gunicorn (tests/security/test_fuzz_api.py): the test settings, with
training runs sent to a queue of their own, which no worker consumes and the test purges."""

from tests.settings import *  # noqa: F403

FUZZ_TRAINING_QUEUE = "fuzz-training"
CELERY_TASK_ROUTES = {"training.tasks.retrain": {"queue": FUZZ_TRAINING_QUEUE}}
