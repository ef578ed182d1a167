"""Recommendation quality on every data set: the served RecommenderNN against popularity and tuned ALS and BPR.

    .venv/bin/python bench/quality.py [--quick] [--data all|ml-100k,yoochoose,diginetica,otto]
        [--ratings PATH] [--seed 42] [--seeds 3] [--threads 1] [--nn-grid]

``--data`` names the data sets, comma-separated (default ``all``: ml-100k, yoochoose,
diginetica, otto); ``--ratings PATH`` adds a ``user item rating timestamp`` file (tab,
comma or ``::``, a header allowed) as one more data set named after the file, and alone
(without ``--data``) measures only that file. Files are found under $RECSITE_DATASETS or
../shared/datasets. Each data set is read into the events the shop would send
(bench/_datasets.py: ml-100k's ratings as ``manage.py import_movielens`` stores them;
YooChoose clicks, DIGINETICA product views and OTTO clicks/carts/orders with sessions as
customers and dwell = the gap to the session's next event), each customer x product's
events are folded with the engagement score's reference definition
(``engagement.scoring.engagement_summarize``, which the SQL fold is held to) and the
training arrays built as ``training.services.dataset.training_data_load`` does
(engaged pairs only, targets decayed to settings.RECSITE_TRAINING["TARGET_RECENCY"]), in
memory: no database. On ml-100k the arrays equal the database path's to the last bit
(docs/model.md).

The protocol (DESIGN.md, docs/model.md), all through training.ml's own code, per data set:
- outer split: ``leave_last_out`` (each customer's newest pair is the test item);
- inner split: ``leave_last_out`` of the outer training rows, the split training stops
  early on. Every configuration of ALS and BPR is trained on the inner training rows and
  scored on the inner held-out items; full-ranking NDCG@10 picks; the chosen one is
  refit on the outer training rows with ``--seeds`` seeds;
- the served model (``served_model``): RecommenderNN exactly as a training run makes it
  with settings' defaults under the options the shop's first run's settings search
  chooses on the inner split (``first_run_search``; not with --quick), which every later
  run reuses (inner training rows, early stopping on the inner split, then
  the refit on the outer training rows for the best epoch's count), each customer's
  vector folded from the outer training rows (``TrainResult.refold``), once per seed
  (settings' seed first);
- everything is evaluated on the test items with ``evaluate_split``: sampled (99
  negatives) HR@10 / NDCG@10, full-ranking HR@10, NDCG@10, Recall@20, averaged over the
  seeds. The NN is scored through ``CatalogScorer``, as the API serves.

``--nn-grid`` also runs the old search around settings' defaults (NN_GRID: each config
stopped early on the inner split, the best refit on the outer rows for its best epoch
count); off by default: the served model's figures are the ones that count.

Writes bench/results/quality.json: per data set, the served model against tuned ALS
(the targets), BPR and popularity; data sizes, every configuration tried with its
validation metrics, seconds. OTTO's sample (20 sessions), and any data set with fewer
than MIN_TEST_CUSTOMERS test customers, gets figures without targets, marked as noise.
``--quick``: one or two configurations per model, two epochs, one seed, and on data sets
with more than 2,000 test customers a seeded 1,000 of them (the CI smoke test). A
missing data set is skipped with a word on where to get it (written as "skipped"; if
all are missing the result is "skipped", exit 0), except with CI=true (exit 1).
Needs ``implicit``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsite.settings")
# Settings may create the var directory; keep the bench's apart from a running site's.
os.environ.setdefault("RECSITE_VAR_DIR", str(ROOT / "var" / "bench-quality"))

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
from _datasets import DATASETS, Dataset, datasets_dir, rating_event, ratings_dataset  # noqa: E402, F401
from _results import Figure, Reference, Target, write_result  # noqa: E402
from django.conf import settings  # noqa: E402

from engagement.importing import CLICK_MIN_RATING, RATING_SIGNALS  # noqa: E402
from engagement.scoring import EngagementWeights, EventSignals, engagement_summarize  # noqa: E402
from engagement.services.events import EventIn  # noqa: E402
from training.ml.data import Interactions, Split, index_ids, leave_last_out, product_prior  # noqa: E402
from training.ml.loop import train  # noqa: E402
from training.ml.metrics import evaluate_split  # noqa: E402
from training.ml.neighbours import Blend, blend_choose, blended_score_fn, neighbours_build  # noqa: E402
from training.ml.refit import refit, refit_adds_enough  # noqa: E402
from training.ml.scoring import CatalogScorer  # noqa: E402
from training.ml.search import candidates, search  # noqa: E402
from training.services.dataset import channel_targets  # noqa: E402
from training.ml.evaluation import model_score_fn, popularity_score_fn  # noqa: E402

# The project's own defaults-to-configs step (settings, per-run options, the automatic batch size).
from training.services.options import OPTIONS as RUN_OPTIONS  # noqa: E402
from training.services.options import _configs, resolved_options  # noqa: E402

NAME = "quality"
ScoreFn = Callable[[np.ndarray], np.ndarray]
SELECT = ("full", "ndcg@10")  # what picks a configuration: the metric training stops early on
# --quick on a data set with more than this many test customers evaluates a seeded QUICK_TEST_CUSTOMERS.
QUICK_SUBSET_ABOVE = 2000
QUICK_TEST_CUSTOMERS = 1000
# Figures the served model is held to (issue 13): at least tuned ALS, well above popularity.
AT_LEAST_ALS = 1.0
OVER_POPULARITY = 1.5


# --- data: events -> engagement -> Interactions, as training builds them ---


@dataclasses.dataclass
class Data:
    interactions: Interactions
    customer_ids: list[str]
    product_ids: list[str]
    weights: EngagementWeights
    events: int

    @property
    def channel_weights(self) -> tuple[float, float, float]:
        w = self.weights
        return (w.hover_weight, w.dwell_weight, w.click_weight)


def interactions_from_events(events: Iterable[EventIn], *, recency: str) -> Data:
    """Fold events per customer x product and build the arrays ``training_data_load`` would read.

    The same steps as the database path: an event id is stored once; each pair's
    numbers come from ``engagement_summarize`` (the fold's reference definition); pairs
    with no signal are not positives; targets are ``channel_targets`` of the decayed
    sums, decayed further to ``recency``'s anchor.
    """
    weights = EngagementWeights.from_settings()
    by_pair: dict[tuple[str, str], dict[Any, EventSignals]] = defaultdict(dict)
    count = 0
    for event in events:
        # The first event with an id is stored, a resent one is a duplicate (as in the API).
        by_pair[(event.customer, event.product)].setdefault(
            event.event_id,
            EventSignals(
                hover_ms=event.hover_ms, dwell_ms=event.dwell_ms, clicked=event.clicked, occurred_at=event.occurred_at
            ),
        )
        count += 1
    customers, products, sums, dwell_ms, timestamp = [], [], [], [], []
    for (customer, product), signals in by_pair.items():
        summary = engagement_summarize(signals.values(), weights=weights)
        s = summary.sums
        if not (s.hover > 0 or s.dwell > 0 or s.clicks > 0):
            continue
        customers.append(customer)
        products.append(product)
        sums.append((s.hover, s.dwell, s.clicks))
        dwell_ms.append(summary.dwell_ms_total)
        timestamp.append(summary.last_event_at.timestamp())
    customer_idx, customer_ids = index_ids(customers)
    product_idx, product_ids = index_ids(products)
    timestamp_array = np.asarray(timestamp, dtype=np.float64)
    if recency == "customer":
        anchor = np.full(len(customer_ids), -np.inf)
        np.maximum.at(anchor, customer_idx, timestamp_array)
        age = anchor[customer_idx] - timestamp_array
    elif recency == "shop":
        age = timestamp_array.max() - timestamp_array
    else:
        age = np.zeros_like(timestamp_array)
    sums_array = np.asarray(sums, dtype=np.float64).reshape(-1, 3)
    targets = channel_targets(
        hover=sums_array[:, 0], dwell=sums_array[:, 1], clicks=sums_array[:, 2], age_seconds=age, weights=weights
    )
    interactions = Interactions(
        customer_idx=customer_idx,
        product_idx=product_idx,
        targets=targets,
        dwell_ms=np.asarray(dwell_ms, dtype=np.float64),
        timestamp=timestamp_array,
        num_customers=len(customer_ids),
        num_products=len(product_ids),
    )
    return Data(interactions, customer_ids, product_ids, weights, count)


# --- models ---


def engagement_values(x: Interactions, weights: tuple[float, float, float]) -> np.ndarray:
    """Each pair's engagement estimate: the channel targets mixed with the score's weights."""
    return (x.targets @ np.asarray(weights, dtype=np.float32)).astype(np.float32)


def user_items(x: Interactions, values: np.ndarray) -> sp.csr_matrix:
    matrix = sp.csr_matrix(
        (values, (x.customer_idx, x.product_idx)), shape=(x.num_customers, x.num_products), dtype=np.float32
    )
    matrix.sum_duplicates()
    return matrix


def factor_score_fn(user_factors: np.ndarray, item_factors: np.ndarray) -> ScoreFn:
    return lambda customers: user_factors[np.asarray(customers)] @ item_factors.T


def fit_implicit(kind: str, params: dict, x: Interactions, channel_weights, seed: int, threads: int) -> ScoreFn:
    """Fit implicit's ALS or BPR on the pairs (binary, or the engagement estimate as confidence)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from threadpoolctl import threadpool_limits

    params = dict(params)
    values_kind = params.pop("values", "binary")
    values = np.ones(len(x), dtype=np.float32) if values_kind == "binary" else engagement_values(x, channel_weights)
    # implicit's own advice (it warns otherwise): one BLAS thread, its loops are parallel themselves.
    with threadpool_limits(limits=1, user_api="blas"):
        if kind == "als":
            model = AlternatingLeastSquares(**params, random_state=seed, num_threads=threads)
        else:
            model = BayesianPersonalizedRanking(**params, random_state=seed, num_threads=threads)
        model.fit(user_items(x, values), show_progress=False)
    return factor_score_fn(np.asarray(model.user_factors), np.asarray(model.item_factors))


def nn_configs(options: dict, x: Interactions):
    """The configs ``manage.py train`` would build with these run options, plus TrainConfig fields it does not map.

    ``positive_floor`` and ``embedding_l2`` are not run options (training/services/pipeline.py
    OPTIONS) yet: they are set on the TrainConfig directly.
    """
    run_options = {k: v for k, v in options.items() if k in RUN_OPTIONS}
    model_config, train_config = _configs(
        run_options, num_customers=x.num_customers, num_products=x.num_products, train_rows=len(x)
    )
    return model_config, dataclasses.replace(train_config, **{k: v for k, v in options.items() if k not in RUN_OPTIONS})


def fit_nn(options: dict, x: Interactions, validation: Split | None, channel_weights) -> tuple[Any, np.ndarray]:
    """Train with early stopping on ``validation`` (or every epoch without); the prior from ``x``, as training does."""
    model_config, train_config = nn_configs(options, x)
    prior = product_prior(x)
    result = train(
        model_config=model_config,
        train_config=train_config,
        train=x,
        validation=validation,
        prior=prior,
        channel_weights=channel_weights,
    )
    return result, prior


def nn_score_fn(model, prior, channel_weights) -> ScoreFn:
    return model_score_fn(CatalogScorer(model, prior, channel_weights))


def fit_served(options: dict, outer: Split, inner: Split, channel_weights) -> tuple[Any, Any, np.ndarray, bool, Any]:
    """Train as a training run does: on the inner rows, stopped early on the inner split, then the refit.

    Returns (the early-stopped result, the served result, its prior, whether it was refit,
    the neighbour blend chosen, or None): with settings' REFIT the chosen epochs are
    trained again on the outer training rows with their prior (training/ml/refit.py), and
    with NEIGHBOURS the blend is chosen with the early-stopped model on the inner split
    (training/ml/neighbours.py), as training/services/pipeline.py does.
    """
    stopped, prior = fit_nn(options, inner.train, inner, channel_weights)
    model_config, train_config = nn_configs(options, inner.train)
    chosen = None
    if train_config.neighbours:
        chosen, _ = blend_choose(nn_score_fn(stopped.model, prior, channel_weights), inner,
                                 sampled_negatives=settings.RECSITE_TRAINING["SAMPLED_NEGATIVES"],
                                 seed=train_config.seed, max_customers=train_config.max_validation_customers)  # fmt: skip
    if not train_config.refit or not refit_adds_enough(
        train_rows=len(inner.train), all_rows=len(outer.train),
        min_share=settings.RECSITE_TRAINING["REFIT_MIN_SHARE"],
    ):  # fmt: skip
        return stopped, stopped, prior, False, chosen
    result, prior = refit(model_config=model_config, train_config=train_config, rows=outer.train,
                          epochs=stopped.best_epoch, channel_weights=channel_weights)  # fmt: skip
    return stopped, result, prior, True, chosen


def served_model(data: Data, outer: Split, inner: Split, *, seed: int, evaluate: dict, options=None) -> dict:
    """RecommenderNN as a training run makes it with settings' defaults (and ``options``), tested on ``outer``.

    Trained as ``fit_served`` says; then every customer's vector is folded from the outer
    training rows (``TrainResult.refold``; a model that does not fold is used as trained)
    and the chosen neighbour blend built from them. The one place that says what "the
    served model" is.
    """
    stopped, result, prior, refitted, chosen = fit_served({"seed": seed} | (options or {}), outer, inner,
                                                          data.channel_weights)  # fmt: skip
    model = result.refold(outer.train)
    blend = None if chosen is None else Blend(neighbours_build(outer.train), chosen["weight"], chosen["decay"])
    score = blended_score_fn(nn_score_fn(model, prior, data.channel_weights), blend, outer.train)
    test = evaluate_split(score, split=outer, **evaluate)
    return {"test": test, "best_epoch": stopped.best_epoch, "epochs_run": len(stopped.history),
            "refit": refitted, "blend": chosen,
            "validation_ndcg@10_by_epoch": [round4(h["validation_ndcg@10"]) for h in stopped.history]}  # fmt: skip


def subset(split: Split, count: int | None, seed: int) -> Split:
    """The same split with at most ``count`` test customers (seeded), for a quicker evaluation."""
    if count is None or len(split.test_customers) <= count:
        return split
    rows = np.sort(np.random.default_rng(seed).choice(len(split.test_customers), count, replace=False))
    return Split(train=split.train, test_customers=split.test_customers[rows], test_products=split.test_products[rows])


# --- the search ---


def rounded(metrics: dict) -> dict:
    return {
        "sampled": {k: round(v, 4) for k, v in metrics["sampled"].items()},
        "full": {k: round(v, 4) for k, v in metrics["full"].items()},
    }


def round4(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def mean_metrics(runs: list[dict]) -> dict:
    """The per-metric mean of several runs' metrics (one per seed)."""
    return {
        group: {name: float(np.mean([run[group][name] for run in runs])) for name in runs[0][group]}
        for group in ("sampled", "full")
    }


def picked(metrics: dict, select: tuple[str, str] = SELECT) -> float:
    group, name = select
    return float(metrics[group][name])


def search_implicit(kind, grid, outer, inner, channel_weights, evaluate, seeds, threads, log) -> dict:
    """Try each config on the inner split (first seed), refit the best on the outer training rows per seed, test.

    Also refits the config that validation's sampled HR@10 would pick, so the sampled
    figure can be read against an ALS tuned for that metric too.
    """
    tried = []
    started = time.perf_counter()
    for params in grid:
        t = time.perf_counter()
        score = fit_implicit(kind, params, inner.train, channel_weights, seeds[0], threads)
        metrics = evaluate_split(score, split=inner, **evaluate)
        tried.append({"config": params, "validation": rounded(metrics), "seconds": round(time.perf_counter() - t, 2)})
        log(f"  {kind} {json.dumps(params)}: validation {fmt(metrics)} ({tried[-1]['seconds']} s)")
    search_seconds = time.perf_counter() - started

    def refit(params: dict) -> tuple[dict, list[dict], float]:
        t = time.perf_counter()
        fits = [fit_implicit(kind, params, outer.train, channel_weights, seed, threads) for seed in seeds]
        seconds = (time.perf_counter() - t) / len(seeds)
        runs = [evaluate_split(score, split=outer, **evaluate) for score in fits]
        return mean_metrics(runs), runs, seconds

    best = max(tried, key=lambda row: picked(row["validation"]))
    test, runs, refit_seconds = refit(best["config"])
    by_sampled = max(tried, key=lambda row: picked(row["validation"], ("sampled", "hr@10")))
    sampled_test = test if by_sampled is best else refit(by_sampled["config"])[0]
    return {
        "chosen": best["config"],
        "test": rounded(test),
        "test_by_seed": [rounded(run) for run in runs],
        "chosen_by_sampled_hr": by_sampled["config"],
        "test_of_chosen_by_sampled_hr": rounded(sampled_test),
        "tried": tried,
        "search_seconds": round(search_seconds, 1),
        "fit_seconds": round(refit_seconds, 2),
    }


def search_nn(grid, outer, inner, channel_weights, evaluate, seeds, log) -> dict:
    """Each config with early stopping on the inner split; the best refit on the outer rows for its best epoch count.

    The first config is settings' defaults: its model (trained on the inner rows, stopped
    early, not refit) is exactly what ``manage.py train`` serves, so it is also tested as such.
    """
    tried = []
    as_trained = None
    started = time.perf_counter()
    for options in grid:
        t = time.perf_counter()
        result, prior = fit_nn(options | {"seed": seeds[0]}, inner.train, inner, channel_weights)
        score = nn_score_fn(result.model, prior, channel_weights)
        metrics = evaluate_split(score, split=inner, **evaluate)
        seconds = round(time.perf_counter() - t, 1)
        tried.append(
            {
                "config": options,
                "validation": rounded(metrics),
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.history),
                "validation_ndcg@10_by_epoch": [round4(h["validation_ndcg@10"]) for h in result.history],
                "seconds": seconds,
            }
        )
        log(
            f"  nn {json.dumps(options)}: validation {fmt(metrics)} "
            f"(best epoch {result.best_epoch} of {len(result.history)}, {seconds} s)"
        )
        if not options:
            test = evaluate_split(score, split=outer, **evaluate)
            as_trained = {"test": rounded(test), "best_epoch": result.best_epoch, "seconds": seconds}
            log(f"  nn as manage.py train makes it (settings' defaults, no refit): test {fmt(test)}")
    search_seconds = time.perf_counter() - started
    best = max(tried, key=lambda row: picked(row["validation"]))
    refit = dict(best["config"]) | {"epochs": best["best_epoch"]}
    t = time.perf_counter()
    runs = []
    for seed in seeds:
        result, prior = fit_nn(refit | {"seed": seed}, outer.train, None, channel_weights)
        runs.append(evaluate_split(nn_score_fn(result.model, prior, channel_weights), split=outer, **evaluate))
    refit_seconds = (time.perf_counter() - t) / len(seeds)
    return {
        "chosen": best["config"],
        "refit": refit,
        "test": rounded(mean_metrics(runs)),
        "test_by_seed": [rounded(run) for run in runs],
        "as_trained": as_trained,
        "tried": tried,
        "search_seconds": round(search_seconds, 1),
        "fit_seconds": round(refit_seconds, 1),
    }


def fmt(metrics: dict) -> str:
    s, f = metrics["sampled"], metrics["full"]
    return (
        f"sampled HR {s['hr@10']:.4f} NDCG {s['ndcg@10']:.4f} | "
        f"full HR {f['hr@10']:.4f} NDCG {f['ndcg@10']:.4f} R@20 {f['recall@20']:.4f}"
    )


# --- the grids ---


def als_grid(quick: bool) -> list[dict]:
    if quick:
        return [{"factors": 64, "regularization": 0.1, "alpha": 10.0, "iterations": 15, "values": v}
                for v in ("binary", "engagement")]  # fmt: skip
    return [
        {"factors": f, "regularization": r, "alpha": a, "iterations": 15, "values": v}
        for f in (32, 64, 128)
        for r in (0.01, 0.1, 1.0)
        for a in (1.0, 10.0, 40.0)
        for v in ("binary", "engagement")
    ]


def bpr_grid(quick: bool) -> list[dict]:
    if quick:
        return [{"factors": 64, "learning_rate": 0.01, "regularization": 0.001, "iterations": 100}]
    return [
        {"factors": f, "learning_rate": lr, "regularization": r, "iterations": it}
        for f in (32, 64, 128)
        for lr in (0.005, 0.01, 0.02)
        for r in (0.001, 0.01)
        for it in (50, 100)
    ]


# Around settings' defaults ({} first: it is also reported as manage.py train makes it).
NN_GRID = [
    {},
    {"lr": 1e-3},
    {"embedding_l2": 1e-2},
    {"positive_floor": 1.0},
    {"negatives_per_positive": 8},
    # The defaults before issue 5 (docs/model.md): soft targets, no embedding L2, lr 1e-3.
    {"positive_floor": 0.0, "embedding_l2": 0.0, "lr": 1e-3},
]


def nn_grid(quick: bool) -> list[dict]:
    # Two epochs each: the smoke test checks the path, not the quality.
    return [{"epochs": 2}, {"epochs": 2, "positive_floor": 0.0, "embedding_l2": 0.0, "lr": 1e-3}] if quick else NN_GRID


# --- the run ---


def first_run_search(data: Data, inner: Split, *, log) -> dict:
    """The settings search a shop's first training run makes (training/ml/search.py), as the pipeline calls it.

    Settings' seed, the inner split, ``RECSITE_TRAINING_SEARCH_SECONDS`` of budget; the
    configuration it keeps is what every later (plain) run trains with, so the served
    model's seeds all train with it.
    """
    x = inner.train
    sizes = {"num_customers": x.num_customers, "num_products": x.num_products, "train_rows": len(x)}
    prior = product_prior(x)

    def fit(options: dict, deadline: float | None = None):
        model_config, train_config = _configs(options, **sizes)
        return train(model_config=model_config, train_config=train_config, train=x, validation=inner, prior=prior,
                     channel_weights=data.channel_weights, deadline=deadline)  # fmt: skip

    budget = settings.RECSITE_TRAINING["SEARCH_SECONDS"]
    def tried(t) -> None:
        log(f"  search tried {json.dumps(t.options)}: validation NDCG@10 {t.validation_ndcg:.4f}, "
            f"best epoch {t.best_epoch} ({t.seconds:.0f} s)")  # fmt: skip

    found = search(fit, candidates({}, resolved_options({}, **sizes)), budget_seconds=budget, on_trial=tried)
    return {"budget_seconds": budget, "seconds": round(found.seconds, 1), "chosen": found.chosen,
            "tried": [t.to_dict() for t in found.trials], "skipped": found.skipped}  # fmt: skip


def run_served(data: Data, outer: Split, inner: Split, *, seeds, evaluate, options, log) -> dict:
    """``served_model`` once per seed; the test metrics averaged, as ALS's refits are."""
    runs = []
    for seed in seeds:
        t = time.perf_counter()
        run = served_model(data, outer, inner, seed=seed, evaluate=evaluate, options=options)
        run["seconds"] = round(time.perf_counter() - t, 1)
        runs.append(run)
        log(f"  served, seed {seed}: test {fmt(run['test'])} (best epoch {run['best_epoch']} of "
            f"{run['epochs_run']}, blend {json.dumps(run['blend'])}, {run['seconds']} s)")  # fmt: skip
    return {
        "options": options or {},
        "test": rounded(mean_metrics([run["test"] for run in runs])),
        "test_by_seed": [rounded(run["test"]) for run in runs],
        "best_epoch_by_seed": [run["best_epoch"] for run in runs],
        "epochs_run_by_seed": [run["epochs_run"] for run in runs],
        "blend_by_seed": [run["blend"] for run in runs],
        "validation_ndcg@10_by_epoch_by_seed": [run["validation_ndcg@10_by_epoch"] for run in runs],
        "seconds_by_seed": [run["seconds"] for run in runs],
    }


def run_quality(
    data: Data, *, quick: bool, seeds: list[int], threads: int, log, nn_grid_too: bool = False, noise: str = ""
) -> dict[str, Any]:
    """Popularity, tuned ALS and BPR, the served model (and with ``nn_grid_too`` the NN grid) on one data set."""
    x = data.interactions
    outer = leave_last_out(x)
    inner = leave_last_out(outer.train)
    evaluate = {"sampled_negatives": settings.RECSITE_TRAINING["SAMPLED_NEGATIVES"], "seed": seeds[0]}
    cw = data.channel_weights
    # --quick on a large data set: a seeded part of the test (and validation) customers.
    few = QUICK_TEST_CUSTOMERS if quick else None
    test = subset(outer, few, seeds[0]) if len(outer.test_customers) > QUICK_SUBSET_ABOVE else outer
    validation = subset(inner, few, seeds[0]) if len(inner.test_customers) > QUICK_SUBSET_ABOVE else inner
    minimum = settings.RECSITE_TRAINING["MIN_TEST_CUSTOMERS"]
    if len(outer.test_customers) < minimum:
        noise = "; ".join(filter(None, [noise, f"{len(outer.test_customers)} test customers, fewer than "
                                        f"MIN_TEST_CUSTOMERS ({minimum}): a training run would reject this data"]))  # fmt: skip
    log(
        f"{x.num_customers} customers, {x.num_products} products, {len(x)} pairs from {data.events} events; "
        f"{len(outer.test_customers)} test customers (evaluated: {len(test.test_customers)}), "
        f"{len(inner.test_customers)} validation customers (searched on: {len(validation.test_customers)})"
    )
    out: dict[str, Any] = {
        "data": {
            "customers": x.num_customers,
            "products": x.num_products,
            "pairs": len(x),
            "events": data.events,
            "test_customers": len(outer.test_customers),
            "evaluated_test_customers": len(test.test_customers),
            "validation_customers": len(inner.test_customers),
            "searched_validation_customers": len(validation.test_customers),
            "dwell_median_s": float(np.median(x.dwell_ms[x.dwell_ms > 0]) / 1000) if (x.dwell_ms > 0).any() else 0.0,
            "target_recency": settings.RECSITE_TRAINING["TARGET_RECENCY"],
        },
        "noise": noise,
        "selection_metric": "validation " + "/".join(SELECT),
        "seeds": seeds,
        "test_metrics_are": f"the mean over seeds {seeds}: the served model trained with each seed, ALS and BPR's "
        "chosen config refit on the outer training rows with each",
    }
    if not len(inner.test_customers):
        out["skipped"] = "no customer has 3 or more products: no validation split to stop early or tune on"
        log(f"skipped: {out['skipped']}")
        return out
    t = time.perf_counter()
    out["popularity"] = {"test": rounded(evaluate_split(popularity_score_fn(test), split=test, **evaluate))}
    out["popularity"]["seconds"] = round(time.perf_counter() - t, 2)
    log(f"popularity: test {fmt(out['popularity']['test'])}")
    grids = {"als": als_grid(quick), "bpr": bpr_grid(quick)}
    for kind in ("als", "bpr"):
        log(f"{kind}: {len(grids[kind])} configs")
        out[kind] = search_implicit(kind, grids[kind], test, validation, cw, evaluate, seeds, threads, log)
        log(f"{kind}: chose {json.dumps(out[kind]['chosen'])}, test {fmt(out[kind]['test'])}")
    options = {"epochs": 2} if quick else {}  # quick: two epochs, the smoke test checks the path
    t = time.perf_counter()
    searched = None
    if not quick and settings.RECSITE_TRAINING["SEARCH_SECONDS"] > 0:
        # A shop's first run searches; every later run reuses its choice (training/services/options.py).
        log(f"served model: the first run's settings search ({settings.RECSITE_TRAINING['SEARCH_SECONDS']:.0f} s)")
        searched = first_run_search(data, inner, log=log)
        options = searched["chosen"]
        log(f"  search chose {json.dumps(options)} in {searched['seconds']} s")
    log(f"served model: settings' defaults{f' with {json.dumps(options)}' if options else ''}, {len(seeds)} seed(s)")
    out["served"] = run_served(data, test, inner, seeds=seeds, evaluate=evaluate, options=options, log=log)
    out["served"]["search"] = searched
    out["served"]["seconds"] = round(time.perf_counter() - t, 1)
    log(f"served model: test {fmt(out['served']['test'])}")
    if nn_grid_too:
        grid = nn_grid(quick)
        log(f"nn grid: {len(grid)} configs")
        out["nn_tuned"] = search_nn(grid, test, inner, cw, evaluate, seeds, log)
        log(f"nn grid: chose {json.dumps(out['nn_tuned']['chosen'])}, refit {json.dumps(out['nn_tuned']['refit'])}, "
            f"test {fmt(out['nn_tuned']['test'])}")  # fmt: skip
    return out


def figures_of(out: dict, *, label: str = "") -> list[Figure]:
    """The served model against tuned ALS (the targets), BPR and popularity; none for a skipped data set.

    A data set marked as noise (``out["noise"]``) gets the same figures without targets.
    """
    if "served" not in out:
        return []
    nn, als, bpr, pop = out["served"]["test"], out["als"]["test"], out["bpr"]["test"], out["popularity"]["test"]
    als_sampled = out["als"]["test_of_chosen_by_sampled_hr"]
    noise = out.get("noise", "")
    seeds = f"mean of {len(out['seeds'])} seed(s)"
    if noise:  # every row says so, without targets; the reason once, in the first row's notes
        label += " [noise]"

    def target(ratio: float) -> Target | None:
        return None if noise else Target(">=", ratio, "", of="ratio")

    served = "RecommenderNN as served"
    als_ref = "implicit ALS (tuned)"
    figures = [
        Figure(f"{served}, full-ranking NDCG@10{label}", nn["full"]["ndcg@10"], "",
               Reference(als_ref, als["full"]["ndcg@10"], ""), target(AT_LEAST_ALS),
               notes=f"{seeds}; {noise}" if noise else seeds),
        Figure(f"{served}, sampled HR@10{label}", nn["sampled"]["hr@10"], "",
               Reference(als_ref, als["sampled"]["hr@10"], ""), target(AT_LEAST_ALS), notes=seeds),
        Figure(f"{served}, sampled HR@10 vs ALS tuned on sampled HR@10{label}", nn["sampled"]["hr@10"], "",
               Reference("implicit ALS (tuned on validation sampled HR@10)", als_sampled["sampled"]["hr@10"], "")),
        Figure(f"{served}, full-ranking NDCG@10 vs BPR{label}", nn["full"]["ndcg@10"], "",
               Reference("implicit BPR (tuned)", bpr["full"]["ndcg@10"], "")),
        Figure(f"{served}, full-ranking NDCG@10 vs popularity{label}", nn["full"]["ndcg@10"], "",
               Reference("popularity", pop["full"]["ndcg@10"], ""), target(OVER_POPULARITY),
               notes="" if noise else "beat popularity by a wide margin"),
        Figure(f"{served}, full-ranking Recall@20{label}", nn["full"]["recall@20"], "",
               Reference(als_ref, als["full"]["recall@20"], "")),
    ]  # fmt: skip
    tuned = out.get("nn_tuned")
    if tuned:
        figures.append(
            Figure(f"RecommenderNN (tuned, --nn-grid) full-ranking NDCG@10{label}", tuned["test"]["full"]["ndcg@10"],
                   "", Reference(als_ref, als["full"]["ndcg@10"], ""),
                   notes=f"the best of NN_GRID on validation, refit on the outer rows; {seeds}")
        )  # fmt: skip
    return figures


def missing_message(path: Path, how: str) -> str:
    return f"{path} is missing. {how}"


def skip_missing(path: Path, quick: bool, name: str, how: str) -> None:
    message = missing_message(path, how)
    if os.environ.get("CI", "").lower() == "true":
        print(message, file=sys.stderr)
        raise SystemExit(1)
    print(f"skipped: {message}")
    write_result(name, figures=[], details={"skipped": message}, quick=quick)
    raise SystemExit(0)


def chosen_datasets(parser: argparse.ArgumentParser, data: str | None, ratings: Path | None) -> list[Dataset]:
    """``--data``'s data sets in DATASETS order, then ``--ratings``'s file; ``--ratings`` alone: only the file."""
    if data is None:
        names = [] if ratings else list(DATASETS)
    else:
        asked = [name.strip() for name in data.split(",") if name.strip()]
        unknown = sorted(set(asked) - set(DATASETS) - {"all"})
        if unknown or not asked:
            parser.error(f"--data: unknown {', '.join(unknown) or '(none given)'}; "
                         f"known: {', '.join(DATASETS)}, all")  # fmt: skip
        names = [name for name in DATASETS if "all" in asked or name in asked]
    chosen = [DATASETS[name] for name in names]
    if ratings:
        chosen.append(ratings_dataset(ratings))
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny search, few epochs (CI smoke test)")
    parser.add_argument("--data", default=None,
                        help=f"comma-separated data sets: {', '.join(DATASETS)} or all (default all; "
                        "with --ratings alone, only that file)")  # fmt: skip
    parser.add_argument("--ratings", type=Path, default=None, help="a user item rating timestamp file, one more data set")
    parser.add_argument("--seed", type=int, default=settings.RECSITE_TRAINING["SEED"], help="the first seed")
    parser.add_argument("--seeds", type=int, default=None, help="seeds the served model and refits use (3; quick 1)")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch and implicit")
    parser.add_argument("--nn-grid", action="store_true", help="also search NN_GRID around settings' defaults")
    args = parser.parse_args()
    datasets = chosen_datasets(parser, args.data, args.ratings)
    missing = {d.name: missing_message(path, d.how) for d in datasets if (path := d.missing()) is not None}
    if missing and os.environ.get("CI", "").lower() == "true":
        for message in missing.values():
            print(message, file=sys.stderr)
        raise SystemExit(1)
    for name, message in missing.items():
        print(f"skipped: {name}: {message}", flush=True)
    if len(missing) == len(datasets):
        write_result(NAME, figures=[], details={"skipped": " ".join(missing.values())}, quick=args.quick)
        raise SystemExit(0)
    # One thread by default: these batches gain little from two, and next to other processes on
    # the same cores two torch threads measured 10x slower (tests/training/ml/test_loop.py says 20x).
    torch.set_num_threads(args.threads)
    seeds = [args.seed + i for i in range(args.seeds or (1 if args.quick else 3))]
    started = time.perf_counter()
    details: dict[str, Any] = {"datasets": {}, "seeds": seeds, "threads": args.threads, "nn_grid": args.nn_grid}
    figures: list[Figure] = []
    for dataset in datasets:
        if dataset.name in missing:
            details["datasets"][dataset.name] = {"skipped": missing[dataset.name]}
            continue
        log = lambda message, name=dataset.name: print(f"[{name}] {message}", flush=True)  # noqa: E731
        t = time.perf_counter()
        data = interactions_from_events(dataset.events(), recency=settings.RECSITE_TRAINING["TARGET_RECENCY"])
        data_seconds = time.perf_counter() - t
        log(f"read {data.events} events from {', '.join(dataset.paths())} in {data_seconds:.1f} s")
        if dataset.noise:
            log(f"note: {dataset.noise}")
        out = run_quality(data, quick=args.quick, seeds=seeds, threads=args.threads, log=log,
                          nn_grid_too=args.nn_grid, noise=dataset.noise)  # fmt: skip
        out["files"] = dataset.paths()
        out["mapping"] = dataset.mapping
        if dataset.ratings:
            out["rating_signals"] = {str(k): v for k, v in RATING_SIGNALS.items()}
            out["click_min_rating"] = CLICK_MIN_RATING
        out["data_seconds"] = round(data_seconds, 1)
        out["seconds"] = round(time.perf_counter() - t, 1)
        details["datasets"][dataset.name] = out
        figures += figures_of(out, label=f" ({dataset.name})")
    details["total_seconds"] = round(time.perf_counter() - started, 1)
    for name, out in details["datasets"].items():
        print(summary(name, out), flush=True)
    written = write_result(NAME, figures=figures, details=details, quick=args.quick)
    print(f"wrote {written} in {details['total_seconds']} s")


def summary(name: str, out: dict) -> str:
    """One line per data set: its size and full-ranking NDCG@10 of each model."""
    if "data" not in out or "served" not in out:
        return f"{name}: skipped: {out.get('skipped', '?')}"
    d = out["data"]

    def ndcg(key: str) -> str:
        return f"{out[key]['test']['full']['ndcg@10']:.4f}"

    als = out["als"]["test"]["full"]["ndcg@10"]
    ratio = f" ({out['served']['test']['full']['ndcg@10'] / als:.2f}x ALS)" if als else ""
    return (
        f"{name}: {d['customers']} customers, {d['products']} products, {d['pairs']} pairs from {d['events']} events, "
        f"{d['test_customers']} test customers (evaluated {d['evaluated_test_customers']}); full NDCG@10: "
        f"popularity {ndcg('popularity')}, ALS {ndcg('als')}, BPR {ndcg('bpr')}, served {ndcg('served')}{ratio}"
        + (f"; NOISE: {out['noise']}" if out.get("noise") else "")
    )


if __name__ == "__main__":
    main()
