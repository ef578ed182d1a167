"""Engagement against click-only training on real clicks: the YooChoose sample, each session a customer.

    .venv/bin/python bench/quality_yoochoose.py [--quick] [--dataset DIR] [--seed 42]

Reads ../shared/datasets/yoochoose-rsc15-100k (or $RECSITE_DATASETS/yoochoose-rsc15-100k,
or ``--dataset``): ``yoochoose-clicks-100k_train_full.txt`` and ``..._test.txt`` (tab,
header ``SessionId ItemId Time``; the prepared sample has no category column). Both
files together are the shop's history: their sessions are disjoint (the test file is
the following day).

Each click becomes one event of customer ``yc-<session>`` on product ``yc-<item>``:
``clicked`` true, ``hover_ms`` 0 (not logged), ``dwell_ms`` the gap to the session's next
click, capped at the API's limit for one event (1 hour; the engagement score clips it
further, at RECSITE_ENGAGEMENT's DWELL_CAP_MS). A session's last click has no next click,
so its dwell is unknown and is recorded as 0, not guessed: it is never inflated, and in
the leave-last-out split that click belongs to the held-out pair anyway (``read_clicks``
and ``click_events`` in bench/_datasets.py, which ``bench/quality.py --data yoochoose``
reads too). Events are folded and turned into training arrays exactly as
bench/quality.py does (``engagement_summarize``, ``channel_targets``).

``bench/quality.py --data yoochoose`` measures the served model against tuned ALS, BPR
and popularity on these events; this script asks another question: does training on
dwell as well as clicks help, against the same network trained on clicks alone.

Compared, on one leave-last-out split (a session's last distinct item is its test item;
sessions with fewer than 2 distinct items stay in training only), all evaluated with
``evaluate_split``:
- RecommenderNN trained on engagement: dwell and click (settings' defaults, trained as
  ``manage.py train`` does: inner rows, early stopping on the inner split, but with up
  to ``--epochs`` 60 epochs and ``--patience`` 10: short sessions learn slowly);
- RecommenderNN trained click-only: the same events with ``dwell_ms`` zeroed, so only
  the click channel carries signal (and the dwell prior is 0 for every product);
- implicit ALS on the same pairs (binary), a small search on the inner split, the
  chosen one refit on the outer training rows; popularity.

Writes bench/results/quality_yoochoose.json. ``--quick``: two epochs, one ALS config,
evaluated on 1,000 test sessions. Missing data: says where to get it and writes a
"skipped" result (exit 0), except with CI=true (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from quality import (
    round4,
    fit_nn,
    fmt,
    interactions_from_events,
    nn_score_fn,
    rounded,
    search_implicit,
    skip_missing,
    subset,
)
from quality import datasets_dir as _datasets_dir

import numpy as np  # noqa: E402  (after quality: it sets Django up)
import torch  # noqa: E402
from _datasets import DATASETS, click_events, read_clicks  # noqa: E402
from _datasets import YOOCHOOSE_FILES as FILES  # noqa: E402
from _results import Figure, Reference, write_result  # noqa: E402
from django.conf import settings  # noqa: E402

from training.ml.data import leave_last_out  # noqa: E402
from training.ml.metrics import evaluate_split  # noqa: E402
from training.ml.evaluation import popularity_score_fn  # noqa: E402

NAME = "quality_yoochoose"


def nn_run(name, data, options, evaluate, test_split, log) -> dict:
    """Train as manage.py train does (inner rows, early stopping) and test once."""
    x = data.interactions
    outer = leave_last_out(x)
    inner = leave_last_out(outer.train)
    started = time.perf_counter()
    result, prior = fit_nn(options, inner.train, inner, data.channel_weights)
    seconds = time.perf_counter() - started
    score = nn_score_fn(result.model, prior, data.channel_weights)
    test = evaluate_split(score, split=test_split(outer), **evaluate)
    row = {
        "test": rounded(test),
        "validation_ndcg@10_by_epoch": [round4(h["validation_ndcg@10"]) for h in result.history],
        "best_epoch": result.best_epoch,
        "seconds": round(seconds, 1),
    }
    log(f"{name}: test {fmt(test)} (best epoch {result.best_epoch} of {len(result.history)}, {seconds:.0f} s)")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two epochs, one ALS config, 1,000 test sessions")
    parser.add_argument("--dataset", type=Path, default=None, help="the yoochoose-rsc15-100k folder")
    parser.add_argument("--seed", type=int, default=settings.RECSITE_TRAINING["SEED"])
    parser.add_argument("--test-sessions", type=int, default=None, help="evaluate on this many test sessions")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch and implicit")
    parser.add_argument("--epochs", type=int, default=60, help="most epochs of each NN (early stopping decides)")
    parser.add_argument("--patience", type=int, default=10, help="early stopping's patience, for both NNs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    directory = args.dataset or _datasets_dir() / "yoochoose-rsc15-100k"
    missing = [directory / name for name in FILES if not (directory / name).is_file()]
    if missing:
        skip_missing(missing[0], args.quick, NAME, DATASETS["yoochoose"].how + " Or pass --dataset.")
    log = lambda message: print(message, flush=True)  # noqa: E731
    started = time.perf_counter()
    rows = read_clicks(directory)
    recency = settings.RECSITE_TRAINING["TARGET_RECENCY"]
    engaged = interactions_from_events(click_events(rows, dwell=True), recency=recency)
    clicks_only = interactions_from_events(click_events(rows, dwell=False), recency=recency)
    data_seconds = time.perf_counter() - started
    x = engaged.interactions
    outer = leave_last_out(x)
    inner = leave_last_out(outer.train)
    test_sessions = args.test_sessions or (1000 if args.quick else None)
    test_split = lambda split: subset(split, test_sessions, args.seed)  # noqa: E731
    evaluate = {"sampled_negatives": settings.RECSITE_TRAINING["SAMPLED_NEGATIVES"], "seed": args.seed}
    log(
        f"{len(rows)} clicks, {x.num_customers} sessions, {x.num_products} items, {len(x)} session x item pairs; "
        f"{len(outer.test_customers)} test sessions (evaluated: {len(test_split(outer).test_customers)}); "
        f"data in {data_seconds:.1f} s"
    )
    # Same events, same pairs, same order: the two data sets differ only in their dwell.
    assert np.array_equal(x.customer_idx, clicks_only.interactions.customer_idx)
    assert np.array_equal(x.product_idx, clicks_only.interactions.product_idx)

    # Sessions are short (about 3 products), so each session's embedding gets few updates an
    # epoch: with settings' 20 epochs both variants were still improving at the last one, and
    # with patience 3 a flat stretch of the slowly rising, noisy curve stopped one of them
    # 20 epochs before the other (docs/model.md). So: more epochs, more patience, for both.
    options = {"epochs": 2} if args.quick else {"epochs": args.epochs, "patience": args.patience}
    out: dict = {
        "data": {
            "clicks": len(rows),
            "sessions": x.num_customers,
            "items": x.num_products,
            "pairs": len(x),
            "test_sessions": len(outer.test_customers),
            "evaluated_test_sessions": len(test_split(outer).test_customers),
            "dwell": "gap to the session's next click, capped at 1 h per event (the score clips at DWELL_CAP_MS); "
                     "the session's last click: 0 (unknown)",
            "dwell_median_s": float(np.median(x.dwell_ms[x.dwell_ms > 0]) / 1000) if (x.dwell_ms > 0).any() else 0.0,
        },  # fmt: skip
        "nn_options": options,
        "seed": args.seed,
    }
    test = test_split(outer)
    out["popularity"] = {"test": rounded(evaluate_split(popularity_score_fn(outer), split=test, **evaluate))}
    log(f"popularity: test {fmt(out['popularity']['test'])}")
    out["nn_engagement"] = nn_run("RecommenderNN, engagement (dwell + click)", engaged, options, evaluate,
                                  test_split, log)  # fmt: skip
    out["nn_click_only"] = nn_run("RecommenderNN, click only", clicks_only, options, evaluate, test_split, log)
    als_grid = (
        [{"factors": 64, "regularization": 0.1, "alpha": 10.0, "iterations": 15}]
        if args.quick
        else [
            {"factors": f, "regularization": 0.1, "alpha": a, "iterations": 15}
            for f in (32, 64, 128)
            for a in (1.0, 10.0, 40.0, 100.0)
        ]
    )
    out["als"] = search_implicit(
        "als", als_grid, test, inner, engaged.channel_weights, evaluate, [args.seed], args.threads, log
    )  # fmt: skip
    log(f"als: chose {json.dumps(out['als']['chosen'])}, test {fmt(out['als']['test'])}")
    out["total_seconds"] = round(time.perf_counter() - started, 1)
    eng, clk, als = out["nn_engagement"]["test"], out["nn_click_only"]["test"], out["als"]["test"]
    figures = [
        Figure("YooChoose: RecommenderNN engagement-trained full-ranking NDCG@10", eng["full"]["ndcg@10"], "",
               Reference("RecommenderNN click-only", clk["full"]["ndcg@10"], ""),
               notes="sessions as customers; dwell = gap to the next click"),
        Figure("YooChoose: RecommenderNN engagement-trained full-ranking HR@10", eng["full"]["hr@10"], "",
               Reference("RecommenderNN click-only", clk["full"]["hr@10"], "")),
        Figure("YooChoose: RecommenderNN engagement-trained full-ranking NDCG@10 vs ALS", eng["full"]["ndcg@10"], "",
               Reference("implicit ALS (tuned)", als["full"]["ndcg@10"], "")),
        Figure("YooChoose: RecommenderNN click-only full-ranking NDCG@10 vs ALS", clk["full"]["ndcg@10"], "",
               Reference("implicit ALS (tuned)", als["full"]["ndcg@10"], "")),
    ]  # fmt: skip
    written = write_result(NAME, figures=figures, details=out, quick=args.quick)
    log(f"wrote {written} in {out['total_seconds']} s")


if __name__ == "__main__":
    sys.exit(main())
