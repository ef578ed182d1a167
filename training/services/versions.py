"""Model versions: where artifacts live, loading them safely, promote and roll back."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from training.ml.artifact import ArtifactError, LoadedModel, load_artifact
from training.models import ModelPromotion, ModelVersion


class PromotionRefused(Exception):
    """The version cannot become the promoted one; the message says why."""


def model_dir() -> Path:
    path = Path(settings.RECSITE_TRAINING["MODEL_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifact_abspath(version: ModelVersion) -> Path:
    return model_dir() / version.artifact_path


def model_version_load(version: ModelVersion) -> LoadedModel:
    """Load a version's artifact after checking its sha256; raise ArtifactError if it is not the one stored."""
    return load_artifact(artifact_abspath(version), sha256=version.sha256)


def model_version_promoted() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.PROMOTED).first()


def model_version_promote(
    *, version_id: int, actor: str, action: str = ModelPromotion.Action.PROMOTE
) -> ModelVersion:
    """Make ``version_id`` the served model; the one before it is retired (and can be rolled back to).

    Idempotent: promoting the promoted version changes nothing.
    """
    version = ModelVersion.objects.get(pk=version_id)
    if version.status == ModelVersion.Status.PROMOTED:
        return version
    # Read and hash the artifact before touching a row: it is slow I/O that must not
    # hold a lock, and a version whose file is corrupt or tampered with must never
    # become the promoted one (the current one keeps serving).
    try:
        model_version_load(version)
    except ArtifactError as exc:
        raise PromotionRefused(f"Model version {version.pk} cannot be loaded: {exc}") from exc
    with transaction.atomic():
        current = ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.PROMOTED).first()
        version = ModelVersion.objects.select_for_update().get(pk=version_id)
        if version.status == ModelVersion.Status.PROMOTED:  # a concurrent promote won
            return version
        if current is not None:
            current.status = ModelVersion.Status.RETIRED
            current.save(update_fields=["status"])
        version.status = ModelVersion.Status.PROMOTED
        version.promoted_at = timezone.now()
        version.save(update_fields=["status", "promoted_at"])
        ModelPromotion.objects.create(action=action, model_version=version, previous=current, actor=actor)
    return version


def model_version_rollback(*, actor: str) -> ModelVersion:
    """Promote again the version that served before the current one."""
    current = model_version_promoted()
    if current is None:
        raise PromotionRefused("No model is promoted, so there is nothing to roll back.")
    last = ModelPromotion.objects.filter(model_version=current).order_by("-created_at", "-id").first()
    if last is None or last.previous_id is None:
        raise PromotionRefused(f"Model version {current.pk} is the first promoted one; nothing served before it.")
    return model_version_promote(version_id=last.previous_id, actor=actor, action=ModelPromotion.Action.ROLLBACK)
