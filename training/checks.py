"""System checks: refuse to start with training settings that would misbehave."""

from django.conf import settings
from django.core.checks import Error

from .services.dataset import RECENCY_ANCHORS


def check_training_time_limits(app_configs, **kwargs) -> list[Error]:
    conf = settings.RECSITE_TRAINING
    errors = []
    if not 0 < conf["SOFT_TIME_LIMIT"] < conf["TIME_LIMIT"]:
        errors.append(Error(
            "RECSITE_TRAINING_SOFT_TIME_LIMIT must be positive and below RECSITE_TRAINING_TIME_LIMIT.",
            id="training.E001",
        ))  # fmt: skip
    # Redis redelivers an unacknowledged task after the visibility timeout: shorter than
    # a training run, and the run is started again while it still runs.
    # https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout
    timeout = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}).get("visibility_timeout")
    if timeout is not None and timeout <= conf["TIME_LIMIT"]:
        errors.append(Error(
            f"CELERY_VISIBILITY_TIMEOUT ({timeout} s) must exceed the training time limit ({conf['TIME_LIMIT']} s).",
            hint="Raise CELERY_VISIBILITY_TIMEOUT or lower RECSITE_TRAINING_TIME_LIMIT.",
            id="training.E002",
        ))  # fmt: skip
    if conf["STALE_SECONDS"] <= 2 * conf["HEARTBEAT_SECONDS"]:
        errors.append(Error(
            "RECSITE_TRAINING_STALE_SECONDS must be more than twice RECSITE_TRAINING_HEARTBEAT_SECONDS, or a live "
            "run can be swept as dead.",
            id="training.E003",
        ))  # fmt: skip
    if conf["TARGET_RECENCY"] not in RECENCY_ANCHORS:
        errors.append(Error(
            f"RECSITE_TARGET_RECENCY must be one of {', '.join(RECENCY_ANCHORS)}, got {conf['TARGET_RECENCY']!r}.",
            id="training.E004",
        ))  # fmt: skip
    return errors
