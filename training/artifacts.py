"""Where model artifacts live, and loading one safely: what serving and the services share.

Its own module so that serving (which loads the promoted version) and the services
(which write, verify and promote versions) both build on it without importing each other.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from django.conf import settings

from training.ml.artifact import LoadedModel, load_artifact
from training.models import ModelVersion


# The artifact's extra key holding the fold watermark its data was read at (an event id):
# a customer with events after it has changed since the model was trained.
FOLDED_THROUGH = "folded_through_event_id"
# What a run's artifact is called: run-<run pk>-<time>.pt, and while save_artifact writes
# it, .run-<run pk>-<time>.pt.<random>.tmp (the sweeper deletes those of ended runs).
RUN_ARTIFACT = re.compile(r"^\.?run-(?P<run>\d+)-[^/]*\.pt(\.[^/]*\.tmp)?$")


def run_artifact_name(run_id: int, at: datetime) -> str:
    return f"run-{run_id}-{at:%Y%m%dT%H%M%S}.pt"


def model_dir() -> Path:
    path = Path(settings.RECSITE_TRAINING["MODEL_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifact_abspath(version: ModelVersion) -> Path:
    return model_dir() / version.artifact_path


def model_version_load(version: ModelVersion) -> LoadedModel:
    """Load a version's artifact after checking its sha256; raise ArtifactError if it is not the one stored."""
    return load_artifact(artifact_abspath(version), sha256=version.sha256)
