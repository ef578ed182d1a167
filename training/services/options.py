"""Per-run training options: which there are, their check, the configs they make, and which a run trains with.

A run's options override settings.RECSITE_TRAINING; a plain run also reuses what the
last settings search chose (training/ml/search.py), and this module says when a run
searches again.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from training.ml.loop import TrainConfig
from training.ml.model import RecommenderConfig
from training.models import TrainingRun

# Per-run options: name -> (type, settings.RECSITE_TRAINING key).
OPTIONS: dict[str, tuple[type, str]] = {
    "epochs": (int, "EPOCHS"),
    "batch_size": (int, "BATCH_SIZE"),
    "lr": (float, "LR"),
    "weight_decay": (float, "WEIGHT_DECAY"),
    "negatives_per_positive": (int, "NEGATIVES_PER_POSITIVE"),
    "patience": (int, "PATIENCE"),
    "refit": (bool, "REFIT"),
    "neighbours": (bool, "NEIGHBOURS"),
    "seed": (int, "SEED"),
    "max_validation_customers": (int, "MAX_VALIDATION_CUSTOMERS"),
    "embed_dim": (int, "EMBED_DIM"),
    "dropout": (float, "DROPOUT"),
    "dot_branch": (bool, "DOT_BRANCH"),
    "positive_floor": (float, "POSITIVE_FLOOR"),
    "embedding_l2": (float, "EMBEDDING_L2"),
    "customer_vector": (str, "CUSTOMER_VECTOR"),
    "history_length": (int, "HISTORY_LENGTH"),
    "history_decay": (float, "HISTORY_DECAY"),
    "tied_context": (bool, "TIED_CONTEXT"),
    "loss": (str, "LOSS"),
    "softmax_negatives": (int, "SOFTMAX_NEGATIVES"),
    "negative_exponent": (float, "NEGATIVE_EXPONENT"),
    # Not a setting: true runs the settings search now, false skips it (search.py; absent:
    # the search runs when none has, or the last is older than SEARCH_EVERY_DAYS).
    "search": (bool, None),
}


# The largest (and smallest) value of each numeric option a run may ask for: what this
# service runs in reasonable time and memory on the machine it was sized for (a few
# cores, a few GB), checked by the API's serializer (and shown in its schema) and again
# here for the train command. Issue 17, row 6: embed_dim 8192 took a worker from 0.6 to
# 2.1 GB with a 40-minute epoch; lr 1e30 only diverged; a seed past 2**64 crashed torch.
# Defaults (settings) sit well inside: embed_dim 32, epochs 20, lr 3e-3.
BOUNDS: dict[str, tuple[float, float]] = {
    "epochs": (1, 200),
    "batch_size": (0, 65_536),  # 0: chosen from the training set's size
    # Adam moves each weight by about lr a step: past 1 a run only diverges, below 1e-6 it learns nothing.
    "lr": (1e-6, 1.0),
    "weight_decay": (0.0, 1.0),
    "embedding_l2": (0.0, 1.0),
    # Examples per pair grow linearly with it (an epoch's time too).
    "negatives_per_positive": (0, 50),
    "patience": (1, 200),
    # numpy takes seeds below 2**32 (the loop seeds it with seed % 2**32; torch crashed past 2**64).
    "seed": (0, 2**32 - 1),
    # Each validation customer ranks the whole catalogue after every epoch.
    "max_validation_customers": (1, 20_000),
    # Tables and Adam's state grow with it: 8x the default. The settings search tries
    # twice a run's size, held to this cap too (pipeline passes BOUNDS to candidates).
    "embed_dim": (1, 256),
    "positive_floor": (0.0, 1.0),
    # The fold reads this many products per customer, for every customer at once.
    "history_length": (1, 1_000),
    "history_decay": (0.01, 1.0),
    "softmax_negatives": (1, 4096),
    "negative_exponent": (0.0, 2.0),
}


class TrainingOptionsInvalid(ValueError):
    """Run options that are not known or not of the right type; the message names them."""


def training_options_validate(options: dict[str, Any]) -> dict[str, Any]:
    """Return ``options`` if they name known settings with values the two configs accept.

    The configs check types and ranges themselves (a bool is not an int there, "3" not
    a number), so building them is the check.
    """
    if not isinstance(options, dict):
        raise TrainingOptionsInvalid("options must be an object.")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TrainingOptionsInvalid(f"Unknown options: {', '.join(unknown)}; known: {', '.join(sorted(OPTIONS))}.")
    for name, (kind, key) in OPTIONS.items():
        # Options that are no setting are checked here; the configs check the rest.
        if key is None and name in options and not isinstance(options[name], kind):
            raise TrainingOptionsInvalid(f"{name} must be a {kind.__name__}, got {options[name]!r}.")
    try:
        _configs(options, num_customers=1, num_products=1)
    except (TypeError, ValueError) as exc:
        raise TrainingOptionsInvalid(str(exc)) from exc
    # The configs took the types; what they accept may still not run here.
    for name, value in options.items():
        if name in BOUNDS and not isinstance(value, bool):
            low, high = BOUNDS[name]
            if not low <= value <= high:
                raise TrainingOptionsInvalid(f"{name} must be between {low!r} and {high!r}, got {value!r}.")
    return dict(options)


AUTO_BATCH_BOUNDS = (128, 1024)


def auto_batch_size(*, train_rows: int, negatives_per_positive: int) -> int:
    """Return a batch size that gives an epoch MIN_STEPS_PER_EPOCH steps, within AUTO_BATCH_BOUNDS.

    Each training row makes 3 examples (one per channel) and as many per negative.
    """
    examples = train_rows * (1 + negatives_per_positive) * 3
    low, high = AUTO_BATCH_BOUNDS
    return int(min(high, max(low, examples // settings.RECSITE_TRAINING["MIN_STEPS_PER_EPOCH"])))


def _configs(
    options: dict[str, Any], *, num_customers: int, num_products: int, train_rows: int = 0
) -> tuple[RecommenderConfig, TrainConfig]:
    """Settings, overridden by the run's options, as the two ML configs."""
    defaults = settings.RECSITE_TRAINING
    values = {name: options.get(name, defaults[key]) for name, (_, key) in OPTIONS.items() if key is not None}
    if values["batch_size"] == 0:
        values["batch_size"] = auto_batch_size(
            train_rows=train_rows, negatives_per_positive=values["negatives_per_positive"]
        )
    model_fields = {f.name for f in fields(RecommenderConfig)}
    train_fields = {f.name for f in fields(TrainConfig)}
    model_config = RecommenderConfig(
        num_customers=num_customers,
        num_products=num_products,
        **{k: v for k, v in values.items() if k in model_fields},
    )
    train_config = TrainConfig(**{k: v for k, v in values.items() if k in train_fields})
    return model_config, train_config


def base_options(run: TrainingRun) -> tuple[dict[str, Any], str]:
    """The options a run trains with, and why it searches first ("" when it does not).

    A plain run reuses the settings the last search chose, under the run's own options.
    The search runs when asked (``search: true``), or when none has run or the last one
    is older than SEARCH_EVERY_DAYS, unless the run says ``search: false`` or
    SEARCH_SECONDS is 0.
    """
    conf = settings.RECSITE_TRAINING
    asked = run.options.get("search")
    own = {k: v for k, v in run.options.items() if k != "search"}
    last = (
        TrainingRun.objects.filter(metrics__search__chosen__isnull=False, finished_at__isnull=False)
        .exclude(pk=run.pk)
        .order_by("-finished_at")
        .first()
    )
    reused = dict(last.metrics["search"]["chosen"]) if last is not None else {}
    base = {k: v for k, v in reused.items() if k in OPTIONS and OPTIONS[k][1] is not None} | own
    if asked is False or conf["SEARCH_SECONDS"] <= 0:
        return base, ""
    # A search starts from settings under the run's own options, not from the last
    # choice: a choice is never the centre of the next search, so it cannot drift.
    if asked:
        return own, "asked for"
    if last is None:
        return own, "no search has run yet"
    age = timezone.now() - last.finished_at
    if age > timedelta(days=conf["SEARCH_EVERY_DAYS"]):
        return own, f"the last search (run {last.pk}) is {age.days} days old"
    return base, ""


def resolved_options(options: dict[str, Any], **sizes: int) -> dict[str, Any]:
    """Every option's value under ``options``: settings' defaults, overridden."""
    model_config, train_config = _configs(options, **sizes)
    values = model_config.to_dict() | train_config.to_dict()
    return {name: values[name] for name, (_, key) in OPTIONS.items() if key is not None}
