"""Recommendation quality: RecommenderNN against popularity and implicit's ALS and BPR, on one split.

    .venv/bin/python bench/quality.py [--quick] [--ratings PATH] [--seed 42] [--seeds 3] [--threads 1]

Reads ``user item rating timestamp`` lines (``--ratings``; default ml-100k's ``u.data``
under $RECSITE_DATASETS or ../shared/datasets; tab, comma or ``::``, a header allowed),
turns each rating into the event ``manage.py import_movielens`` stores
(``engagement.importing.movielens_event``), folds each customer x product's events with
the engagement score's reference definition (``engagement.scoring.engagement_summarize``,
which the SQL fold is held to) and builds the training arrays as
``training.services.dataset.training_data_load`` does (engaged pairs only, targets
decayed to settings.RECSITE_TRAINING["TARGET_RECENCY"]), in memory: no database. On
ml-100k the arrays equal the database path's to the last bit (docs/model.md).

The protocol (DESIGN.md, docs/model.md), all through training.ml's own code:
- outer split: ``leave_last_out`` (each customer's newest pair is the test item);
- inner split: ``leave_last_out`` of the outer training rows, the split training stops
  early on. Every configuration of ALS, BPR and RecommenderNN is trained on the inner
  training rows and scored on the inner held-out items; full-ranking NDCG@10 picks;
- the chosen configuration is refit on the outer training rows (the NN for its best
  epoch count, without early stopping) with ``--seeds`` seeds and evaluated on the test
  items with ``evaluate_split``: sampled (99 negatives) HR@10 / NDCG@10, full-ranking
  HR@10, NDCG@10, Recall@20, averaged over the seeds. The NN is scored through
  ``CatalogScorer``, as the API serves.

The NN grid's first configuration is settings' defaults: its model (inner rows, early
stopping, no refit) is what ``manage.py train`` serves, and is tested as such too.

Writes bench/results/quality.json: figures against tuned ALS (the targets), BPR and
popularity; every configuration tried with its validation metrics and seconds.
``--quick``: one or two configurations per model, two epochs, one seed, on the same
data (the CI smoke test). If the ratings file is missing it says where to get it and
writes a "skipped" result (exit 0), except with CI=true (exit 1). Needs ``implicit``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
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
from _ratings import read_ratings  # noqa: E402
from _results import Figure, Reference, Target, write_result  # noqa: E402
from django.conf import settings  # noqa: E402

from engagement.importing import CLICK_MIN_RATING, RATING_SIGNALS, movielens_event  # noqa: E402
from engagement.scoring import EngagementWeights, EventSignals, engagement_summarize  # noqa: E402
from engagement.services.events import EventIn  # noqa: E402
from training.ml.data import Interactions, Split, index_ids, leave_last_out, product_prior  # noqa: E402
from training.ml.loop import train  # noqa: E402
from training.ml.metrics import evaluate_split  # noqa: E402
from training.ml.scoring import CatalogScorer  # noqa: E402
from training.services.dataset import channel_targets  # noqa: E402
from training.services.evaluation import model_score_fn, popularity_score_fn  # noqa: E402

# The project's own defaults-to-configs step (settings, per-run options, the automatic batch size).
from training.services.runs import OPTIONS as RUN_OPTIONS  # noqa: E402
from training.services.runs import _configs  # noqa: E402

NAME = "quality"
ScoreFn = Callable[[np.ndarray], np.ndarray]
SELECT = ("full", "ndcg@10")  # what picks a configuration: the metric training stops early on


def datasets_dir() -> Path:
    return Path(os.environ.get("RECSITE_DATASETS") or ROOT.parent / "shared" / "datasets")


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


def rating_event(user: str, item: str, rating: float, timestamp: int) -> EventIn:
    """Map one rating as import_movielens does; half stars round up (3.5 -> 4), 0.5 -> 1."""
    stars = min(max(math.floor(rating + 0.5), min(RATING_SIGNALS)), max(RATING_SIGNALS))
    return movielens_event(user, item, stars, timestamp)


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

    ``positive_floor`` and ``embedding_l2`` are not run options (training/services/runs.py
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


def run_quality(data: Data, *, quick: bool, seeds: list[int], threads: int, log) -> dict[str, Any]:
    x = data.interactions
    outer = leave_last_out(x)
    inner = leave_last_out(outer.train)
    evaluate = {"sampled_negatives": settings.RECSITE_TRAINING["SAMPLED_NEGATIVES"], "seed": seeds[0]}
    cw = data.channel_weights
    log(
        f"{x.num_customers} customers, {x.num_products} products, {len(x)} pairs from {data.events} events; "
        f"{len(outer.test_customers)} test customers, {len(inner.test_customers)} validation customers"
    )
    out: dict[str, Any] = {
        "data": {
            "customers": x.num_customers,
            "products": x.num_products,
            "pairs": len(x),
            "events": data.events,
            "test_customers": len(outer.test_customers),
            "validation_customers": len(inner.test_customers),
            "target_recency": settings.RECSITE_TRAINING["TARGET_RECENCY"],
        },
        "selection_metric": "validation " + "/".join(SELECT),
        "seeds": seeds,
        "test_metrics_are": f"the mean over seeds {seeds} of the chosen config refit on the outer training rows",
    }
    t = time.perf_counter()
    out["popularity"] = {"test": rounded(evaluate_split(popularity_score_fn(outer), split=outer, **evaluate))}
    out["popularity"]["seconds"] = round(time.perf_counter() - t, 2)
    log(f"popularity: test {fmt(out['popularity']['test'])}")
    grids = {"als": als_grid(quick), "bpr": bpr_grid(quick)}
    for kind in ("als", "bpr"):
        log(f"{kind}: {len(grids[kind])} configs")
        out[kind] = search_implicit(kind, grids[kind], outer, inner, cw, evaluate, seeds, threads, log)
        log(f"{kind}: chose {json.dumps(out[kind]['chosen'])}, test {fmt(out[kind]['test'])}")
    grid = nn_grid(quick)
    log(f"nn: {len(grid)} configs")
    out["nn"] = search_nn(grid, outer, inner, cw, evaluate, seeds, log)
    log(f"nn: chose {json.dumps(out['nn']['chosen'])}, refit {json.dumps(out['nn']['refit'])}, "
        f"test {fmt(out['nn']['test'])}")  # fmt: skip
    return out


def figures_of(out: dict, *, label: str = "") -> list[Figure]:
    nn, als, bpr, pop = out["nn"]["test"], out["als"]["test"], out["bpr"]["test"], out["popularity"]["test"]
    als_sampled = out["als"]["test_of_chosen_by_sampled_hr"]
    at_least_one = Target(">=", 1.0, "", of="ratio")
    seeds = f"mean of {len(out['seeds'])} seed(s)"
    figures = [
        Figure(f"RecommenderNN (tuned) full-ranking NDCG@10{label}", nn["full"]["ndcg@10"], "",
               Reference("implicit ALS (tuned)", als["full"]["ndcg@10"], ""), at_least_one, notes=seeds),
        Figure(f"RecommenderNN (tuned) sampled HR@10{label}", nn["sampled"]["hr@10"], "",
               Reference("implicit ALS (tuned)", als["sampled"]["hr@10"], ""), at_least_one, notes=seeds),
        Figure(f"RecommenderNN (tuned) sampled HR@10 vs ALS tuned on sampled HR@10{label}", nn["sampled"]["hr@10"],
               "", Reference("implicit ALS (tuned on validation sampled HR@10)", als_sampled["sampled"]["hr@10"], "")),
        Figure(f"RecommenderNN (tuned) full-ranking NDCG@10 vs BPR{label}", nn["full"]["ndcg@10"], "",
               Reference("implicit BPR (tuned)", bpr["full"]["ndcg@10"], "")),
        Figure(f"RecommenderNN (tuned) sampled HR@10 vs BPR{label}", nn["sampled"]["hr@10"], "",
               Reference("implicit BPR (tuned)", bpr["sampled"]["hr@10"], "")),
        Figure(f"RecommenderNN (tuned) full-ranking NDCG@10 vs popularity{label}", nn["full"]["ndcg@10"], "",
               Reference("popularity", pop["full"]["ndcg@10"], "")),
        Figure(f"RecommenderNN (tuned) full-ranking Recall@20{label}", nn["full"]["recall@20"], "",
               Reference("implicit ALS (tuned)", als["full"]["recall@20"], "")),
    ]  # fmt: skip
    trained = out["nn"].get("as_trained")
    if trained:
        figures.append(
            Figure(f"RecommenderNN as manage.py train makes it, full-ranking NDCG@10{label}",
                   trained["test"]["full"]["ndcg@10"], "",
                   Reference("implicit ALS (tuned)", als["full"]["ndcg@10"], ""),
                   notes="settings' defaults, one seed, trained without the validation item, early stopping, no refit")
        )  # fmt: skip
    return figures


def skip_missing(path: Path, quick: bool, name: str, how: str) -> None:
    message = f"{path} is missing. {how}"
    if os.environ.get("CI", "").lower() == "true":
        print(message, file=sys.stderr)
        raise SystemExit(1)
    print(f"skipped: {message}")
    write_result(name, figures=[], details={"skipped": message}, quick=quick)
    raise SystemExit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny search, few epochs (CI smoke test)")
    parser.add_argument("--ratings", type=Path, default=None, help="user item rating timestamp file")
    parser.add_argument("--seed", type=int, default=settings.RECSITE_TRAINING["SEED"], help="the search's seed")
    parser.add_argument("--seeds", type=int, default=None, help="seeds the chosen configs are refit with (3; quick 1)")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch and implicit")
    args = parser.parse_args()
    path = args.ratings or datasets_dir() / "ml-100k" / "u.data"
    if not path.is_file():
        skip_missing(
            path, args.quick, NAME,
            "Download https://files.grouplens.org/datasets/movielens/ml-100k.zip, unzip it and set "
            "RECSITE_DATASETS to the folder holding ml-100k/ (or pass --ratings PATH).",
        )  # fmt: skip
    # One thread by default: these batches gain little from two, and next to other processes on
    # the same cores two torch threads measured 10x slower (tests/training/ml/test_loop.py says 20x).
    torch.set_num_threads(args.threads)
    threads = args.threads
    seeds = [args.seed + i for i in range(args.seeds or (1 if args.quick else 3))]
    started = time.perf_counter()
    ratings = read_ratings(path)
    data = interactions_from_events(
        (rating_event(r.user, r.item, r.rating, r.timestamp) for r in ratings),
        recency=settings.RECSITE_TRAINING["TARGET_RECENCY"],
    )
    data_seconds = time.perf_counter() - started
    print(f"read {len(ratings)} ratings from {path} in {data_seconds:.1f} s", flush=True)
    out = run_quality(data, quick=args.quick, seeds=seeds, threads=threads, log=lambda m: print(m, flush=True))
    out["ratings"] = str(path)
    out["mapping"] = {
        "rating_signals": {str(k): v for k, v in RATING_SIGNALS.items()},
        "click_min_rating": CLICK_MIN_RATING,
    }
    out["data_seconds"] = round(data_seconds, 1)
    out["total_seconds"] = round(time.perf_counter() - started, 1)
    out["threads"] = threads
    written = write_result(NAME, figures=figures_of(out), details=out, quick=args.quick)
    print(f"wrote {written} in {out['total_seconds']} s")


if __name__ == "__main__":
    main()
