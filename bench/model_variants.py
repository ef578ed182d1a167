"""Compare RecommenderNN variants on the engagement table, popularity in the same run.

    RECSITE_TARGET_RECENCY=customer .venv/bin/python bench/model_variants.py '[{"epochs": 30}, {"epochs": 30, "dot_branch": true}]'

Reads the database the settings point at (import a data set and fold it first, e.g.
``manage.py import_movielens ../shared/datasets/ml-100k`` then ``compute_engagement
--full``), makes the leave-last-out split once, and for each variant (a JSON object of
RecommenderConfig and TrainConfig fields) trains with early stopping on the inner
validation item and prints sampled and full-ranking metrics. docs/model.md's tables come
from this script.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsite.settings")

import django
import numpy as np

django.setup()

from django.conf import settings

from training.ml.data import leave_last_out, product_prior
from training.ml.loop import TrainConfig, train
from training.ml.metrics import evaluate_split
from training.ml.model import RecommenderConfig
from training.ml.scoring import CatalogScorer
from training.services.dataset import training_data_load
from training.ml.evaluation import (
    model_score_fn,
    popularity_score_fn,
)

MODEL_FIELDS = {f.name for f in fields(RecommenderConfig)} - {"num_customers", "num_products"}
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


def rounded(metrics: dict) -> str:
    s, f = metrics["sampled"], metrics["full"]
    return (
        f"sampled {s['hr@10']:.4f} / {s['ndcg@10']:.4f}   "
        f"full {f['hr@10']:.4f} / {f['ndcg@10']:.4f} / {f['recall@20']:.4f}"
    )


def main(variants: list[dict]) -> None:
    data = training_data_load(recency=settings.RECSITE_TRAINING["TARGET_RECENCY"])
    x = data.interactions
    outer = leave_last_out(x)
    inner = leave_last_out(outer.train)
    prior = product_prior(inner.train)
    evaluate = {"split": outer, "sampled_negatives": 99, "seed": 42}
    print(f"{x.num_customers} customers, {x.num_products} products, {len(x.customer_idx)} pairs; "
          f"recency {settings.RECSITE_TRAINING['TARGET_RECENCY']}")  # fmt: skip
    print(f"{'popularity':50} {rounded(evaluate_split(popularity_score_fn(outer), **evaluate))}", flush=True)
    for variant in variants:
        variant = dict(variant)
        # "prior": "zeros" measures what the dwell prior adds (docs/model.md).
        variant_prior = np.zeros_like(prior) if variant.pop("prior", "dwell") == "zeros" else prior
        unknown = set(variant) - MODEL_FIELDS - TRAIN_FIELDS
        if unknown:
            raise SystemExit(f"unknown fields: {sorted(unknown)}")
        model_config = RecommenderConfig(
            num_customers=x.num_customers, num_products=x.num_products,
            **{k: v for k, v in variant.items() if k in MODEL_FIELDS},
        )  # fmt: skip
        train_config = TrainConfig(**{k: v for k, v in variant.items() if k in TRAIN_FIELDS})
        started = time.perf_counter()
        result = train(
            model_config=model_config, train_config=train_config, train=inner.train, validation=inner,
            prior=variant_prior, channel_weights=data.channel_weights,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        scorer = CatalogScorer(result.model, variant_prior, data.channel_weights)
        metrics = evaluate_split(model_score_fn(scorer), **evaluate)
        label = f"{json.dumps(variant | ({'prior': 'zeros'} if variant_prior is not prior else {}))} ({seconds:.0f} s, {len(result.history)} ep, best {result.best_epoch})"
        print(f"{label:50} {rounded(metrics)}", flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else [{}])
