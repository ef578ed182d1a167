"""What a training run would train: its rows, ids, configs and settings as one sha256.

Training is deterministic (the same rows, options and seed give the same weights), so a
run whose fingerprint is the promoted version's would only store that version again;
the pipeline ends such a run without training (pipeline.py, ``training_pipeline_run``).
The fingerprint is stored in the version's ``config`` under FINGERPRINT.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import numpy as np
from django.conf import settings

from training.ml.artifact import FORMAT
from training.ml.loop import TrainConfig
from training.ml.model import RecommenderConfig

from .dataset import TrainingData

FINGERPRINT = "fingerprint"  # the key in ModelVersion.config

# Settings outside the two configs that change what a run saves: the targets' recency
# anchor, whether the refit runs (REFIT_MIN_SHARE), and the sampled negatives the
# neighbour blend is chosen with (and the stored metrics are measured with).
ARTIFACT_SETTINGS = ("TARGET_RECENCY", "REFIT_MIN_SHARE", "SAMPLED_NEGATIVES")


def training_fingerprint(
    *, data: TrainingData, model_config: RecommenderConfig, train_config: TrainConfig, searched: bool
) -> str:
    """Return the sha256 of what a run trains on and with: equal fingerprints, the same artifact.

    ``searched``: whether the run searches its settings first. A search's choice depends
    on its time budget, so a searched model is never the same as a plain one.
    """
    digest = hashlib.sha256()
    rows = data.interactions
    for array in (rows.customer_idx, rows.product_idx, rows.targets, rows.dwell_ms, rows.timestamp):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape};".encode())  # the same bytes in another shape differ
        digest.update(array.data)
    described = {
        "format": FORMAT,
        "customer_ids": data.customer_ids,
        "product_ids": data.product_ids,
        "model": model_config.to_dict(),
        "train": train_config.to_dict(),
        "searched": searched,
        "weights": asdict(data.weights),
        # Stored in the artifact: serving folds customers with events after it at request time.
        "folded_through": data.folded_through,
        "settings": {name: settings.RECSITE_TRAINING[name] for name in ARTIFACT_SETTINGS},
    }
    digest.update(json.dumps(described, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()
