"""Are the explanations faithful? The cited products' score drop against random ones', on ml-100k and the demo shop.

    .venv/bin/python bench/explain_faithfulness.py                  # both data sets (~7 min on the 2 cores)
    .venv/bin/python bench/explain_faithfulness.py --data demo      # the demo shop only
    .venv/bin/python bench/explain_faithfulness.py --customers 200 --epochs 8
    .venv/bin/python bench/explain_faithfulness.py --latency       # the cost of ?explain=true, in process

Each data set is turned into training rows in memory, exactly as bench/quality.py does
(events -> engagement_summarize -> channel targets): ml-100k from its ratings, the demo
shop from ``seed_demo``'s events (2,000 customers, 500 products, 200,000 events). The
network is trained as ``manage.py train`` trains it (training/services/pipeline.py): its
configs, its split (each customer's newest row held out twice: the test item, then the
validation item, which also stops training early), the prior from the remaining rows,
at most ``--epochs`` epochs. A model whose customers are folded from their products
(the default since issue 13) is measured by ``measure_fold_faithfulness``
(training/ml/explain_fold.py): the API's citations (each product's removal from the
fold, exact), then the cited products removed together against as many others of the
fold's window. A per-id model (``customer_vector="id"``) by ``measure_faithfulness``
(training/ml/explain_faithfulness.py) explains the sampled customers' top
products from the rows the model was trained on, with the model's training settings,
as the API does (tests/training/test_explanations.py holds the API's citations equal to
these), and folds the customers in again with and without the cited products and with
and without as many random other engaged products. docs/model.md ("Explanations") has
the method and the numbers.

``--latency`` instead builds the default demo shop (``seed_demo``) in a scratch SQLite
database under ``var/bench-explain-latency``, trains the network on it (``--latency-epochs``, 3),
stores it as runs.py does (the same split; ``extra`` with the train config and ``as_of``),
promotes it and times GET /api/v1/recommendations/<customer>/ through Django's test
client with and without ``explain=true``, alternating, for ``--calls`` random customers
the model knows (precompute off: both computed on the fly), one torch thread as serving
runs and numpy's BLAS pinned to one thread (threadpoolctl). It prints the p50 and p90 of
each and the difference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsite.settings")
LATENCY = "--latency" in sys.argv
os.environ.setdefault("RECSITE_VAR_DIR", str(ROOT / "var" / ("bench-explain-latency" if LATENCY else "bench-explain")))
if LATENCY:  # a scratch SQLite database of its own, whatever the environment points at
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        os.environ.pop(name, None)

import django  # noqa: E402

django.setup()

import torch  # noqa: E402
from django.conf import settings  # noqa: E402
from quality import datasets_dir, interactions_from_events, nn_configs, rating_event  # noqa: E402
from _ratings import read_ratings  # noqa: E402

from engagement import demo  # noqa: E402
from training.ml.data import leave_last_out, product_prior  # noqa: E402
from training.ml.loop import train  # noqa: E402
from training.ml.customers import customer_history  # noqa: E402
from training.ml.explain_faithfulness import FoldInConfig, measure_faithfulness  # noqa: E402
from training.ml.explain_fold import measure_fold_faithfulness  # noqa: E402
from training.ml.explain_space import InfluenceConfig  # noqa: E402


def train_as_runs(x, channel_weights, *, epochs: int, seed: int):
    """Train as training/services/pipeline.py does: the inner split's train rows, early-stopped on its validation item."""
    inner = leave_last_out(leave_last_out(x).train)
    model_config, train_config = nn_configs({}, inner.train)
    train_config = dataclasses.replace(train_config, epochs=epochs, seed=seed)
    prior = product_prior(inner.train)
    result = train(
        model_config=model_config, train_config=train_config, train=inner.train, validation=inner, prior=prior,
        channel_weights=channel_weights,
    )  # fmt: skip
    return result, inner.train, prior, model_config, train_config


def ml100k_data():
    ratings = read_ratings(datasets_dir() / "ml-100k" / "u.data")
    events = (rating_event(r.user, r.item, r.rating, r.timestamp) for r in ratings)
    return interactions_from_events(events, recency="customer")


def demo_data(customers: int = 2000, products: int = 500, events: int = 200_000):
    now = datetime(2026, 11, 1, tzinfo=UTC)
    drawn = demo.demo_events(
        n_customers=customers, n_products=products, n_events=events, seed=42, days=90, now=now,
        max_signal_ms=settings.RECSITE_INGEST["MAX_SIGNAL_MS"],
    )  # fmt: skip
    return interactions_from_events((e for batch in drawn.batches(10_000) for e in batch), recency="customer")


def run(name: str, data, *, epochs: int, customers: int, seed: int) -> dict:
    started = time.perf_counter()
    x = data.interactions
    result, trained_rows, prior, _, train_config = train_as_runs(x, data.channel_weights, epochs=epochs, seed=seed)
    trained = time.perf_counter() - started
    if result.model.config.folds_items:  # the default since issue 13: removal from the fold, measured by refolding
        served = result.refold(x)  # what the run saves
        history = customer_history(x, length=10 * served.config.history_length)
        measured = measure_fold_faithfulness(served, prior, data.channel_weights, history, customers=customers, seed=seed)
        method = "fold removal"
    else:
        influence = InfluenceConfig.of_artifact(
            {"train": train_config.to_dict()}, {"data": {"target_recency": "customer"}}
        )
        measured = measure_faithfulness(
            result.model, prior, data.channel_weights, trained_rows, customers=customers, seed=seed, every_row=x,
            influence=influence, config=FoldInConfig.of_influence(influence),
        )  # fmt: skip
        method = "influence"
    row = {
        "data": name, "customers": x.num_customers, "products": x.num_products, "pairs": len(x),
        "trained_pairs": len(trained_rows), "epochs_run": len(result.history), "best_epoch": result.best_epoch,
        "train_s": round(trained, 1), "measure_s": round(time.perf_counter() - started - trained, 1),
        "method": method, **dataclasses.asdict(measured),
    }  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def latency(*, epochs: int, calls: int, seed: int, reuse: bool) -> dict:
    import random
    import shutil

    import numpy as np
    from django.core.management import call_command
    from django.db import connections
    from rest_framework.test import APIClient
    from threadpoolctl import threadpool_limits

    from engagement.models import Engagement, ShopApiKey
    from training.ml.artifact import save_artifact
    from training.models import ModelVersion
    from training.services import model_version_promote
    from training.services.dataset import training_data_load

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    database = Path(settings.DATABASES["default"]["NAME"])
    call_command("migrate", verbosity=0)
    version = ModelVersion.objects.filter(status=ModelVersion.Status.PROMOTED).first()
    if version is None or not reuse:  # --reuse: the shop and model of the last run, when there is one
        shutil.rmtree(settings.VAR_DIR / "models", ignore_errors=True)
        connections.close_all()  # an open connection would keep writing to the unlinked file
        database.unlink(missing_ok=True)
        call_command("migrate", verbosity=0)
        call_command("seed_demo", verbosity=0)
        call_command("compute_engagement", "--full", verbosity=0)  # seed_demo stores events; the fold makes the pairs
        data = training_data_load(recency=settings.RECSITE_TRAINING["TARGET_RECENCY"])
        result, _, prior, model_config, train_config = train_as_runs(
            data.interactions, data.channel_weights, epochs=epochs, seed=seed
        )
        model = result.model
        model_dir = settings.RECSITE_TRAINING["MODEL_DIR"]
        sha256 = save_artifact(
            model_dir / "latency.pt", model=model, config=model_config, prior=prior, customer_ids=data.customer_ids,
            product_ids=data.product_ids, channel_weights=data.channel_weights,
            metrics={"data": {"target_recency": settings.RECSITE_TRAINING["TARGET_RECENCY"]}},
            extra={"train": train_config.to_dict(), "as_of": data.as_of.isoformat()},
        )  # fmt: skip
        version = ModelVersion.objects.create(
            artifact_path="latency.pt", sha256=sha256, config={"model": model_config.to_dict()},
            customer_ids=data.customer_ids, product_ids=data.product_ids,
        )  # fmt: skip
        model_version_promote(version_id=version.pk, actor="bench")
    customer_ids = list(version.customer_ids)
    pairs = Engagement.objects.count()
    settings.RECSITE_PRECOMPUTE = False
    torch.set_num_threads(1)
    threadpool_limits(1)  # numpy's BLAS too: the influence's matrix products and solve run on one thread
    _, key = ShopApiKey.objects.create_key(name="bench explain")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    rng = random.Random(seed)
    customers = [rng.choice(customer_ids) for _ in range(calls)]
    for customer in customers[:20]:  # warm: the model load, caches
        client.get(f"/api/v1/recommendations/{customer}/", {"explain": "true"})
    times = {"plain": [], "explain": []}
    supports = []
    for customer in customers:
        for mode in ("plain", "explain") if rng.random() < 0.5 else ("explain", "plain"):
            started = time.perf_counter()
            params = {"explain": "true"} if mode == "explain" else {}
            response = client.get(f"/api/v1/recommendations/{customer}/", params)
            times[mode].append(time.perf_counter() - started)
            assert response.status_code == 200 and response.json()["strategy"] == "model", response.content
            if mode == "explain":
                supports.append(np.mean([len(i["because"]["products"]) for i in response.json()["items"]]))
    row = {"customers": len(customer_ids), "products": len(version.product_ids), "pairs": pairs, "calls": calls}
    for mode, values in times.items():
        row[f"{mode}_p50_ms"] = round(float(np.percentile(values, 50)) * 1000, 2)
        row[f"{mode}_p90_ms"] = round(float(np.percentile(values, 90)) * 1000, 2)
    row["extra_p50_ms"] = round(row["explain_p50_ms"] - row["plain_p50_ms"], 2)
    row["supports_per_item"] = round(float(np.mean(supports)), 2)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["ml-100k", "demo", "both"], default="both")
    parser.add_argument("--customers", type=int, default=60, help="customers sampled per data set")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs at most (early stopping as runs.py)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    parser.add_argument("--demo-customers", type=int, default=2000)
    parser.add_argument("--demo-products", type=int, default=500)
    parser.add_argument("--demo-events", type=int, default=200_000)
    parser.add_argument("--latency", action="store_true", help="time ?explain=true instead (module docstring)")
    parser.add_argument("--reuse", action="store_true", help="--latency: keep the last run's shop and model")
    parser.add_argument("--latency-epochs", type=int, default=3, help="--latency: training epochs")
    parser.add_argument("--calls", type=int, default=300, help="--latency: customers timed, each with and without")
    args = parser.parse_args()
    if args.latency:
        latency(epochs=args.latency_epochs, calls=args.calls, seed=args.seed, reuse=args.reuse)
        return
    torch.set_num_threads(args.threads)
    if args.data in ("ml-100k", "both"):
        run("ml-100k", ml100k_data(), epochs=args.epochs, customers=args.customers, seed=args.seed)
    if args.data in ("demo", "both"):
        data = demo_data(args.demo_customers, args.demo_products, args.demo_events)
        run("demo", data, epochs=args.epochs, customers=args.customers, seed=args.seed)


if __name__ == "__main__":
    main()
