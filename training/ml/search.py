"""The settings search inside a training run: a few configurations, each early-stopped on the shop's validation split.

A shop gets the model ``manage.py train`` makes, and nobody tunes it for them. So a run
may try a short list of variations around its base options (the step size, the
embedding L2, the embedding size, how negatives are drawn, the loss), each trained on
the same rows with early stopping on the same validation items, and keep the one whose
best epoch ranks the validation items best (full-ranking NDCG@10, the metric early
stopping reads).
The base options always run first, so the search can only keep them or beat them on
validation; the test items stay unseen until the run's final evaluation.

Plain Python: the caller passes the function that trains one configuration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from training.ml.loop import TrainingDiverged, TrainResult

# Variations tried after the base options, most useful first (docs/model.md "The search"
# has the sweep they come from). Each is applied on top of the base options.
VARIATIONS: tuple[dict[str, Any], ...] = (
    {"lr_scale": 0.5},
    {"embedding_l2_scale": 10.0},
    # Twice the embedding size: DIGINETICA's validation 0.032 -> 0.037, test 0.040 -> 0.048
    # with the refit (one seed, docs/model.md); about 1.5x an epoch's time.
    {"embed_dim_scale": 2.0},
    {"lr_scale": 2.0},
    {"embedding_l2_scale": 0.1},
    {"loss": "bce"},
    {"negative_exponent": 0.0},
)


@dataclass
class Trial:
    """One configuration tried: its options and how it did on validation."""

    options: dict[str, Any]
    validation_ndcg: float
    best_epoch: int
    epochs_run: int
    seconds: float
    diverged: bool = False  # its loss became NaN or infinite: not kept, whatever its score

    def to_dict(self) -> dict[str, Any]:
        return {
            "options": self.options,
            "validation_ndcg": round(self.validation_ndcg, 4),  # full-ranking NDCG@10 of the epoch kept
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "seconds": round(self.seconds, 1),
            "diverged": self.diverged,
        }


@dataclass
class SearchResult:
    """The best configuration's training result, and every trial in the order tried."""

    best: TrainResult
    chosen: dict[str, Any]
    trials: list[Trial] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # not tried: the time budget ran out
    seconds: float = 0.0


def candidates(
    base: dict[str, Any], resolved: dict[str, Any], bounds: dict[str, tuple[float, float]] | None = None
) -> list[dict[str, Any]]:
    """The options to try: ``base`` first, then each variation of it that changes something.

    ``resolved`` holds the values ``base`` stands for (settings' defaults under the run's
    options): a scale multiplies that value, held within ``bounds`` (name -> (low, high))
    where given, and a variation that would change nothing (``loss: bce`` when the loss
    is already bce, twice an embed_dim already at its cap) is left out.
    """
    bounds = bounds or {}
    out = [dict(base)]
    for variation in VARIATIONS:
        options = dict(base)
        touched = []
        for key, value in variation.items():
            name = key.removesuffix("_scale")
            if key.endswith("_scale"):  # an integer setting (embed_dim) stays an integer
                scaled = float(resolved[name]) * value
                if name in bounds:
                    scaled = min(max(scaled, bounds[name][0]), bounds[name][1])
                options[name] = round(scaled) if isinstance(resolved[name], int) else scaled
            else:
                options[name] = value
            touched.append(name)
        if any(options[name] != resolved[name] for name in touched) and options not in out:
            out.append(options)
    return out


def best_validation(result: TrainResult) -> float:
    """The validation NDCG@10 of the epoch ``result`` kept (-1 without validation)."""
    scores = [h["validation_ndcg@10"] for h in result.history if h["validation_ndcg@10"] is not None]
    return max(scores) if scores else -1.0


def search(
    fit: Callable[[dict[str, Any], float | None], TrainResult],
    options: list[dict[str, Any]],
    *,
    budget_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    on_trial: Callable[[Trial], None] | None = None,
) -> SearchResult:
    """Train each of ``options`` with ``fit`` while the budget lasts; keep the best on validation.

    ``fit(options, deadline)`` trains one configuration; past ``deadline`` (on ``clock``)
    it starts no further epoch and keeps its best so far. The first options always run
    whole (no deadline). Another starts only if the time spent so far plus the slowest
    trial yet still fits in ``budget_seconds``, and stops its epochs at the budget's end,
    so the search overruns its budget by at most one epoch. Ties keep the earlier options.
    """
    if not options:
        raise ValueError("nothing to search: no options.")
    started = clock()
    best: TrainResult | None = None
    chosen: dict[str, Any] = options[0]
    best_score = -float("inf")
    trials: list[Trial] = []
    skipped: list[dict[str, Any]] = []
    slowest = 0.0
    for i, candidate in enumerate(options):
        spent = clock() - started
        if i > 0 and spent + slowest > budget_seconds:
            skipped = [dict(o) for o in options[i:]]
            break
        trial_started = clock()
        try:
            result = fit(candidate, None if i == 0 else started + budget_seconds)
        except TrainingDiverged as exc:
            if i == 0:  # the run's own options diverge: there is nothing to compare with
                raise
            # A variation (twice the lr) diverged: it loses, the search goes on.
            trial = Trial(dict(candidate), -1.0, 0, exc.epoch, clock() - trial_started, diverged=True)
            trials.append(trial)
            if on_trial is not None:
                on_trial(trial)
            continue
        seconds = clock() - trial_started
        slowest = max(slowest, seconds)
        score = best_validation(result)
        trial = Trial(dict(candidate), score, result.best_epoch, len(result.history), seconds)
        trials.append(trial)
        if on_trial is not None:
            on_trial(trial)
        if score > best_score:
            best, best_score, chosen = result, score, dict(candidate)
    assert best is not None
    return SearchResult(best=best, chosen=chosen, trials=trials, skipped=skipped, seconds=clock() - started)
