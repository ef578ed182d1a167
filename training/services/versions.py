"""Model versions: where artifacts live, loading them safely, promote and roll back."""

from __future__ import annotations

from django.db import connection, transaction
from django.utils import timezone

from training.artifacts import model_version_load
from training.ml.artifact import ArtifactError
from training.models import ModelPromotion, ModelVersion
from training.services.precompute import recommendations_precompute_on_commit


class PromotionRefused(Exception):
    """The version cannot become the promoted one; the message says why."""


def model_version_promoted() -> ModelVersion | None:
    return ModelVersion.objects.without_id_maps().filter(status=ModelVersion.Status.PROMOTED).first()


# Serialises promotions on PostgreSQL: two concurrent promotes would both lock the old
# promoted row, and the second, finding it retired after the wait, would read "nothing
# promoted" and break the single-promoted index. SQLite serialises writers already.
PROMOTION_ADVISORY_LOCK = 0x7265_6370  # "recp"


def model_version_verify(version: ModelVersion) -> None:
    """Raise PromotionRefused unless the version's artifact passes its checksum and loads."""
    try:
        model_version_load(version)
    except ArtifactError as exc:
        raise PromotionRefused(f"Model version {version.pk} cannot be loaded: {exc}") from exc


def model_version_promote(
    *, version_id: int, actor: str, action: str = ModelPromotion.Action.PROMOTE
) -> ModelVersion:
    """Make ``version_id`` the served model; the one before it is retired (and can be rolled back to).

    Idempotent: promoting the promoted version changes nothing.
    """
    version = ModelVersion.objects.without_id_maps().get(pk=version_id)
    if version.status == ModelVersion.Status.PROMOTED:
        return version
    # Read and hash the artifact before taking any lock: it is slow I/O, and a version
    # whose file is corrupt or tampered with must never become the promoted one (the
    # current one keeps serving).
    model_version_verify(version)
    with transaction.atomic():
        return model_version_promote_verified(version_id=version_id, actor=actor, action=action)


def model_version_promote_verified(*, version_id: int, actor: str, action: str) -> ModelVersion:
    """Swap the promoted version inside the caller's transaction; the artifact was verified."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PROMOTION_ADVISORY_LOCK])
    versions = ModelVersion.objects.without_id_maps().select_for_update()
    current = versions.filter(status=ModelVersion.Status.PROMOTED).first()
    version = versions.get(pk=version_id)
    if version.status == ModelVersion.Status.PROMOTED:  # a concurrent promote won
        return version
    if current is not None:
        current.status = ModelVersion.Status.RETIRED
        current.save(update_fields=["status"])
    version.status = ModelVersion.Status.PROMOTED
    version.promoted_at = timezone.now()
    version.save(update_fields=["status", "promoted_at"])
    ModelPromotion.objects.create(action=action, model_version=version, previous=current, actor=actor)
    # Every promotion (a run's, an admin's, a rollback) comes through here.
    recommendations_precompute_on_commit(version_id=version.pk)
    return version


def model_version_rollback(*, actor: str) -> ModelVersion:
    """Promote again the version that served before the current one was promoted.

    Follows promotions, not rollbacks: after promoting v1, v2, v3, rolling back twice
    serves v2 then v1 (never v3 again, the version rolled away from).
    """
    current = model_version_promoted()
    if current is None:
        raise PromotionRefused("No model is promoted, so there is nothing to roll back.")
    promoted = ModelPromotion.objects.filter(model_version=current, action=ModelPromotion.Action.PROMOTE)
    last = promoted.order_by("-created_at", "-id").first()
    if last is None or last.previous_id is None:
        raise PromotionRefused(f"Model version {current.pk} is the first promoted one; nothing served before it.")
    return model_version_promote(version_id=last.previous_id, actor=actor, action=ModelPromotion.Action.ROLLBACK)
