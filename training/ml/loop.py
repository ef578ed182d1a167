"""The training loop: Adam on per-channel BCE plus an embedding L2, fresh negatives every epoch, early stopping.

Validation ranks with ``CatalogScorer``, the function the API serves with, so the epoch
kept is the one that ranks best the way customers will see it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training.ml.customers import History, HistoryTensors, customer_history, fold_customers, fold_examples
from training.ml.data import Interactions, Split, items_by_customer, sample_pairs
from training.ml.losses import SampledSoftmax, embedding_penalty
from training.ml.metrics import evaluate_ranking
from training.ml.model import RecommenderConfig, RecommenderNN, _from_dict
from training.ml.scoring import CatalogScorer

# A gain smaller than this is noise, not an improvement (NDCG is a mean over <= 2000 customers).
MIN_IMPROVEMENT = 1e-6


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimiser, sampling, stopping, seed and device."""

    epochs: int = 20
    batch_size: int = 1024
    lr: float = 1e-3
    # Adam's step size for the embedding tables (0: ``lr``). A product row moves only in the
    # steps whose batch holds it: on a sparse shop (a product in 1-2 sessions) that is a
    # step or two an epoch, so the tables need a larger step than the shared dense layers.
    embedding_lr: float = 0.0
    weight_decay: float = 0.0
    negatives_per_positive: int = 4
    # 0: negatives drawn uniformly; > 0: in proportion to (1 + rows) ** this (data.sample_examples).
    negative_exponent: float = 0.0
    # "bce": per-channel binary cross-entropy on each pair and its negatives_per_positive
    # sampled negatives; "softmax": each engaged pair against softmax_negatives products
    # shared by the batch (sampled as negative_exponent says, log-q corrected, the
    # customer's own products masked), on one channel drawn by the engagement weights.
    loss: str = "bce"
    softmax_negatives: int = 128
    # 0: learn each channel's intensity; 1: only that a pair was engaged with (data.sample_examples).
    # 0.5: an engaged pair counts at least half on every channel (docs/model.md, issue 5).
    positive_floor: float = 0.5
    # L2 on the embedding rows a batch looks up (mean squared norm per example), the usual
    # matrix-factorisation regulariser; unlike weight_decay it leaves the dense layers alone.
    embedding_l2: float = 1e-3
    patience: int = 3
    # After early stopping, train again on the training and validation rows together for
    # the best epoch's count (the caller does: training/ml/refit.py).
    refit: bool = True
    # Choose on validation whether, and how much, products engaged with together are
    # blended into the served ranking (the caller does: training/ml/neighbours.py).
    neighbours: bool = True
    seed: int = 42
    device: str = "auto"  # "auto": CUDA when available, else CPU; or "cpu", "cuda", "cuda:1"
    max_validation_customers: int = 2000

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience", "max_validation_customers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("negatives_per_positive", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}.")
        if not (
            isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay) and self.weight_decay >= 0
        ):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}.")
        if not (
            isinstance(self.embedding_lr, (int, float)) and math.isfinite(self.embedding_lr) and self.embedding_lr >= 0
        ):
            raise ValueError(f"embedding_lr must be a number >= 0, got {self.embedding_lr!r}.")
        if not (
            isinstance(self.negative_exponent, (int, float)) and not isinstance(self.negative_exponent, bool)
            and 0 <= self.negative_exponent <= 2
        ):  # fmt: skip
            raise ValueError(f"negative_exponent must be a number in [0, 2], got {self.negative_exponent!r}.")
        for name in ("refit", "neighbours"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}.")
        if self.loss not in ("bce", "softmax"):
            raise ValueError(f"loss must be 'bce' or 'softmax', got {self.loss!r}.")
        if isinstance(self.softmax_negatives, bool) or not isinstance(self.softmax_negatives, int) or not (
            1 <= self.softmax_negatives <= 4096
        ):
            raise ValueError(f"softmax_negatives must be an integer in [1, 4096], got {self.softmax_negatives!r}.")
        if not (isinstance(self.positive_floor, (int, float)) and 0 <= self.positive_floor <= 1):
            raise ValueError(f"positive_floor must be a number in [0, 1], got {self.positive_floor!r}.")
        if not (
            isinstance(self.embedding_l2, (int, float)) and math.isfinite(self.embedding_l2) and self.embedding_l2 >= 0
        ):
            raise ValueError(f"embedding_l2 must be a number >= 0, got {self.embedding_l2!r}.")
        if not isinstance(self.device, str) or not (
            self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda")
        ):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}.")

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a plain JSON-able dict."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build a config from ``to_dict`` output (or part of it); unknown keys are an error."""
        return _from_dict(cls, data)


@dataclass(frozen=True)
class Progress:
    """Where training stands after one optimiser step."""

    epoch: int  # 1-based
    epochs: int
    step: int  # 1-based, within the epoch
    steps: int  # per epoch
    loss: float  # mean loss of this epoch's steps so far
    eta_seconds: float  # until the last epoch ends, if none stops early
    validation_ndcg: float | None  # the last finished epoch's full-ranking NDCG@10
    # Early stopping: the epoch with the best validation so far (0: none validated yet) and
    # how many epochs without a gain end training (0: no early stopping, every epoch runs).
    # Training ends after epoch best_epoch + patience unless a later epoch beats it.
    best_epoch: int = 0
    patience: int = 0


class TrainingCancelled(Exception):
    """Raised by an ``on_progress`` callback to stop training; ``train`` lets it through."""


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite: the weights are lost, and no later epoch brings them back."""

    def __init__(self, *, loss: float, epoch: int, step: int, lr: float) -> None:
        super().__init__(
            f"The loss diverged ({loss}) at epoch {epoch}, step {step}: training stopped. The step size is "
            f"probably too large (lr {lr:g}); try a smaller lr."
        )
        self.loss, self.epoch, self.step = loss, epoch, step


@dataclass
class TrainResult:
    """The trained model (best epoch, on CPU, eval mode) and how training went."""

    model: RecommenderNN
    history: list[dict[str, Any]] = field(default_factory=list)  # epoch, loss, validation_ndcg@10, seconds
    best_epoch: int = 0
    stopped_early: bool = False
    device: str = "cpu"
    examples_per_second: float = 0.0
    # With a folded customer vector (RecommenderConfig.customer_vector != "id"): the best
    # epoch's weights before the fold, so a caller can fold customers from other rows (refold).
    unfolded: RecommenderNN | None = None

    def refold(self, data: Interactions) -> RecommenderNN:
        """Return the model with every customer folded from ``data``'s rows (``model`` itself without a fold)."""
        if self.unfolded is None:
            return self.model
        return _fold(self.unfolded, customer_history(data, self.unfolded.config.history_length))


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too
    # cuDNN is unused by these layers; pinned anyway so a future conv/RNN layer stays repeatable.
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    """Turn "auto" into CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(
    *,
    model_config: RecommenderConfig,
    train_config: TrainConfig,
    train: Interactions,
    validation: Split | None,
    prior: np.ndarray,
    channel_weights: Sequence[float],
    on_progress: Callable[[Progress], None] | None = None,
    deadline: float | None = None,
) -> TrainResult:
    """Fit a RecommenderNN on ``train`` and keep the epoch with the best validation NDCG@10.

    ``validation.train`` names the rows excluded from each validation customer's ranking,
    ``validation.test_*`` the held-out pairs. Without validation customers every epoch
    runs and the last one is kept. ``on_progress`` is called after every step; raising
    ``TrainingCancelled`` in it stops training. Past ``deadline`` (``time.monotonic()``),
    no further epoch starts: the best epoch so far is kept (the settings search's budget).
    A loss that becomes NaN or infinite raises ``TrainingDiverged``.
    """
    if (train.num_customers, train.num_products) != (model_config.num_customers, model_config.num_products):
        raise ValueError(
            f"training data has {train.num_customers} customers x {train.num_products} products, the config "
            f"{model_config.num_customers} x {model_config.num_products}."
        )
    prior = np.asarray(prior, dtype=np.float32)
    if prior.shape != (model_config.num_products,):
        raise ValueError(f"prior must have shape ({model_config.num_products},), got {prior.shape}.")
    if len(train) == 0:
        raise ValueError("no training rows.")

    cfg = train_config
    set_seed(cfg.seed)
    device = resolve_device(cfg.device)
    model = RecommenderNN(model_config).to(device)
    optimizer = _optimizer(model, cfg)
    prior_on_device = torch.as_tensor(prior, device=device)
    validate = _validation_plan(validation, cfg) if validation is not None else None
    softmax = (
        SampledSoftmax(train, count=cfg.softmax_negatives, exponent=cfg.negative_exponent,
                       channel_weights=channel_weights, seed=cfg.seed, device=device)
        if cfg.loss == "softmax" else None
    )  # fmt: skip
    # The customer side of a folded model: each customer's training rows (customers.py).
    past = customer_history(train, model_config.history_length) if model_config.folds_items else None
    past_on_device = HistoryTensors(past, device) if past is not None else None

    history: list[dict[str, Any]] = []
    best_ndcg = -math.inf
    best_epoch = 0
    best_state: dict[str, torch.Tensor] | None = None
    epochs_without_gain = 0
    stopped_early = False
    last_ndcg: float | None = None
    examples_seen = 0
    fit_seconds = 0.0
    validation_seconds = 0.0

    for epoch in range(1, cfg.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        # One stream per (seed, epoch): the negatives of epoch e do not depend on how many were drawn before.
        rng = np.random.default_rng([cfg.seed, epoch])
        pairs = sample_pairs(
            train,
            negatives_per_positive=0 if softmax is not None else cfg.negatives_per_positive,
            rng=rng,
            positive_floor=cfg.positive_floor,
            negative_exponent=cfg.negative_exponent,
        )
        customers = torch.from_numpy(pairs.customers).to(device)
        products = torch.from_numpy(pairs.products).to(device)
        targets = torch.from_numpy(pairs.targets).to(device)
        # batch_size counts examples (a pair asks every channel: one example per channel).
        channels_per_pair = targets.shape[1]
        pairs_per_step = max(1, cfg.batch_size // channels_per_pair)
        count = len(pairs) * channels_per_pair
        order = torch.from_numpy(rng.permutation(len(pairs))).to(device)
        steps = math.ceil(len(pairs) / pairs_per_step)
        loss_sum = torch.zeros((), device=device)
        loss_value = 0.0

        for step in range(1, steps + 1):
            batch = order[(step - 1) * pairs_per_step : step * pairs_per_step]
            batch_customers, batch_products = customers[batch], products[batch]
            batch_prior = prior_on_device[batch_products]
            if past_on_device is None:
                users = [table(batch_customers) for table in model.customer_tables()]
                folded = None
            else:
                users = folded = fold_examples(model, past_on_device, batch_customers, batch_products)
                if model_config.learns_ids:
                    users = folded = [v + table(batch_customers) for v, table in zip(folded, model.customer_tables())]
            gmf_user = users[-1] if model_config.dot_branch else None
            if softmax is None:
                logits = model.channel_logits_for(users[0], gmf_user, batch_products, batch_prior)  # [pairs, channels]
                # BCE with logits is BCE on the sigmoid output, without its log(0) at saturation.
                loss = F.binary_cross_entropy_with_logits(logits, targets[batch])
                penalised = batch_products
            else:
                loss, negatives = softmax.loss(
                    model, users[0], gmf_user, batch_customers, batch_products, targets[batch], prior_on_device
                )
                penalised = torch.cat([batch_products, negatives])
            objective = loss
            if cfg.embedding_l2:
                objective = loss + cfg.embedding_l2 * embedding_penalty(model, batch_customers, penalised, folded)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            loss_sum += loss.detach() * (len(batch) * channels_per_pair)
            if on_progress is not None:
                done = min(step * pairs_per_step * channels_per_pair, count)
                loss_value = float(loss_sum) / done
                # Checked here, where the loss is read anyway (no extra device sync), and
                # before it is reported: NaN is no JSON, and no database column takes it.
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(loss=loss_value, epoch=epoch, step=step, lr=cfg.lr)
                elapsed = fit_seconds + (time.perf_counter() - epoch_started)
                seen = examples_seen + done
                remaining = (count - done) + (cfg.epochs - epoch) * count
                validation_each = validation_seconds / (epoch - 1) if epoch > 1 else 0.0
                eta = remaining * elapsed / seen + validation_each * (cfg.epochs - epoch + 1)
                on_progress(
                    Progress(
                        epoch=epoch,
                        epochs=cfg.epochs,
                        step=step,
                        steps=steps,
                        loss=loss_value,
                        eta_seconds=eta,
                        validation_ndcg=last_ndcg,
                        best_epoch=best_epoch if validate is not None else 0,
                        patience=cfg.patience if validate is not None else 0,
                    )
                )
        epoch_loss = float(loss_sum) / count
        if not math.isfinite(epoch_loss):  # without on_progress, once an epoch
            raise TrainingDiverged(loss=epoch_loss, epoch=epoch, step=steps, lr=cfg.lr)
        fit_seconds += time.perf_counter() - epoch_started
        examples_seen += count

        validation_started = time.perf_counter()
        if validate is None:
            ndcg = None
        else:
            ndcg = validate(_fold(model, past) if past is not None else model, prior, channel_weights)
        validation_seconds += time.perf_counter() - validation_started
        history.append(
            {
                "epoch": epoch,
                "loss": epoch_loss,
                "validation_ndcg@10": ndcg,
                "seconds": time.perf_counter() - epoch_started,
            }
        )
        last_ndcg = ndcg
        if ndcg is None or ndcg > best_ndcg + MIN_IMPROVEMENT:
            best_ndcg = ndcg if ndcg is not None else best_ndcg
            best_epoch = epoch
            best_state = {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}
            epochs_without_gain = 0
        else:
            epochs_without_gain += 1
            if epochs_without_gain >= cfg.patience:
                stopped_early = epoch < cfg.epochs
                break
        if deadline is not None and time.monotonic() > deadline and epoch < cfg.epochs:
            stopped_early = True
            break

    model = model.cpu()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    unfolded = None
    if past is not None:
        unfolded, model = model, _fold(model, past)
    return TrainResult(
        model=model,
        unfolded=unfolded,
        history=history,
        best_epoch=best_epoch,
        stopped_early=stopped_early,
        device=str(device),
        examples_per_second=examples_seen / fit_seconds if fit_seconds > 0 else 0.0,
    )


def _optimizer(model: RecommenderNN, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam, with the embedding tables in a group of their own when ``embedding_lr`` is set."""
    tables = [p for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()]
    table_ids = {id(p) for p in tables}
    dense = [p for p in model.parameters() if id(p) not in table_ids]
    groups = [{"params": dense}, {"params": tables, "lr": cfg.embedding_lr or cfg.lr}]
    # fused: one kernel over every parameter; the per-tensor step was 1.7 ms of a ~21 ms
    # ml-100k step on one core, fused 0.5 ms (docs/model.md "Training speed").
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def _fold(model: RecommenderNN, past: History) -> RecommenderNN:
    """Fold every customer from ``past``, adding the learnt offsets when the model has them."""
    offsets = [table.weight.detach() for table in model.customer_tables()] if model.config.learns_ids else None
    return fold_customers(model, past, offsets=offsets)


def _validation_plan(
    validation: Split, cfg: TrainConfig
) -> Callable[[RecommenderNN, np.ndarray, Sequence[float]], float] | None:
    """Return a function computing full-ranking NDCG@10 on a fixed, seeded customer subset."""
    test_count = len(validation.test_customers)
    if test_count == 0:
        return None
    rows = np.arange(test_count)
    if test_count > cfg.max_validation_customers:
        rows = np.sort(np.random.default_rng(cfg.seed).choice(test_count, cfg.max_validation_customers, replace=False))
    test_customers = validation.test_customers[rows]
    test_products = validation.test_products[rows]
    indptr, indices = items_by_customer(validation.train)

    def validate(model: RecommenderNN, prior: np.ndarray, channel_weights: Sequence[float]) -> float:
        scorer = CatalogScorer(model, prior, channel_weights)
        metrics = evaluate_ranking(
            scorer.score,
            test_customers=test_customers,
            test_products=test_products,
            train_indptr=indptr,
            train_indices=indices,
            num_products=scorer.num_products,
            # Early stopping reads full-ranking NDCG only; skip drawing sampled negatives.
            sampled_negatives=0,
            seed=cfg.seed,
        )
        return float(metrics["full"]["ndcg@10"])

    return validate
