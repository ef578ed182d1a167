"""Writes for training (STYLE 4): runs, model versions, and the ORM-to-arrays bridge."""

from .dataset import TrainingData, channel_targets, training_data_load
from training.ml.evaluation import GateDecision, gate_decide
from .options import TrainingOptionsInvalid, training_options_validate
from .runs import (
    BrokerUnavailable,
    training_run_cancel,
    training_run_execute,
    training_run_in_flight,
    training_run_start,
    training_runs_sweep,
)
from ..artifacts import artifact_abspath, model_version_load
from .versions import (
    PromotionRefused,
    model_version_promote,
    model_version_promoted,
    model_version_rollback,
)

__all__ = [
    "BrokerUnavailable",
    "GateDecision",
    "PromotionRefused",
    "TrainingData",
    "TrainingOptionsInvalid",
    "artifact_abspath",
    "channel_targets",
    "gate_decide",
    "model_version_load",
    "model_version_promote",
    "model_version_promoted",
    "model_version_rollback",
    "training_data_load",
    "training_options_validate",
    "training_run_cancel",
    "training_run_execute",
    "training_run_in_flight",
    "training_run_start",
    "training_runs_sweep",
]
