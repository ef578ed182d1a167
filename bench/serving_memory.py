"""Memory: peak RSS of one serving worker with 100,000 products and 1,000,000 customers in the model.

    .venv/bin/python bench/serving_memory.py [--quick] [--products 100000] [--customers 1000000] [--requests 20]

Builds a scratch PostgreSQL database (``recsite_bench_serving_memory``) and var directory
(``var/bench-serving-memory``): ``--products`` active products, and an untrained, seeded
RecommenderNN over ``--customers`` customers and those products, saved and promoted as a
ModelVersion whose row holds both id lists, as a trained one's does. Only the customers
the requests ask for are in the database (with about 20 engagement rows each): serving
reads the model's customers from the artifact, never from the database.

Then a fresh Python process (the worker) records its RSS after ``import django;
django.setup()`` and ``import torch`` (the reference: what any worker costs before a
model), answers ``--requests`` GET /api/v1/recommendations/<customer>/ through Django's
test client (all middleware, DRF; the first request loads the promoted model through
training.serving) and records its peak RSS (VmHWM in /proc/self/status). It also checks
that no query read the version's customer_ids column. Then it reads every customer's
embedding row (scoring each against one product: what serving all of them would read)
and records its RSS again: the embeddings are mapped from the artifact file, so those
pages are file-backed, shared by every worker serving the version, and the kernel can
drop them under pressure; Pss splits them among the processes mapping them.

Writes bench/results/serving_memory.json. The scratch database and directory are removed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from _results import Figure, Reference, Target, machine, write_result
from _server import drop_database, recreate_database

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SCRATCH = ROOT / "var" / "bench-serving-memory"
MB = 1024 * 1024


def memory() -> dict[str, float]:
    """This process's memory in MB: RSS and its peak (VmHWM), anonymous and file-backed parts, and PSS."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    kb = {key: int(status[key].split()[0]) for key in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}
    rollup = Path("/proc/self/smaps_rollup")
    if rollup.exists():
        for line in rollup.read_text().splitlines():
            if line.startswith("Pss:"):
                kb["Pss"] = int(line.split()[1])
    return {name: round(value / 1024, 1) for name, value in kb.items()}


# --- the worker: a fresh process, measured ---


def worker(args: argparse.Namespace) -> None:
    """Measure one serving process; print the figures as one JSON line."""
    import django

    django.setup()
    import torch  # noqa: F401 (the reference includes torch, as every serving process imports it)

    reference = memory()
    from django.db import connection
    from django.test import Client

    from training import serving

    customers = json.loads(os.environ["RECSITE_BENCH_CUSTOMERS"])
    client = Client(HTTP_AUTHORIZATION=f"Api-Key {os.environ['RECSITE_BENCH_API_KEY']}", HTTP_HOST="127.0.0.1")
    queries: list[str] = []

    def record(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    answers, started = [], time.perf_counter()
    with connection.execute_wrapper(record):
        for customer in customers:
            response = client.get(f"/api/v1/recommendations/{customer}/", {"k": 10})
            body = response.json() if response.status_code == 200 else {}
            answers.append((customer, response.status_code, body.get("strategy"), len(body.get("items", []))))
    first_seconds = time.perf_counter() - started
    served = memory()
    loaded = serving.served_model().loaded

    # Read every customer's embedding row, as serving every customer would.
    import numpy as np

    one_product = np.array([0])
    for first in range(0, loaded.scorer.num_customers, 50_000):
        loaded.scorer.score(np.arange(first, min(first + 50_000, loaded.scorer.num_customers)), one_product)
    every_customer = memory()

    print(json.dumps({
        "reference": reference,
        "after_requests": served,
        "after_every_customer_row": every_customer,
        "requests_seconds": round(first_seconds, 2),
        "answers": answers,
        "queries": len(queries),
        "queries_reading_customer_ids": [q[:200] for q in queries if "customer_ids" in q],
        "customer_index_mb": round(loaded.customer_index.nbytes / MB, 1),
        "torch_threads": torch.get_num_threads(),
    }))  # fmt: skip


# --- the parent: the scratch shop and model, then the worker ---


def build(args: argparse.Namespace, customers: list[str]) -> None:
    """Products, the requested customers with engagement, and the promoted model over every customer."""
    import numpy as np
    import torch
    from django.conf import settings

    import serving as serving_bench  # bench/serving.py: COPY helpers
    from engagement.models import Customer
    from training.ml.artifact import save_artifact
    from training.ml.model import RecommenderConfig, RecommenderNN
    from training.models import ModelVersion
    from training.artifacts import model_dir
    from training.services.versions import model_version_promote

    product_pks = serving_bench.add_products(0, args.products, args.seed)
    Customer.objects.bulk_create([Customer(external_id=c) for c in customers])
    customer_pks = dict(Customer.objects.values_list("external_id", "pk"))
    serving_bench.add_engagement(customer_pks, product_pks, args.products, args.seed)

    customer_ids = [f"c-{i}" for i in range(args.customers)]
    product_ids = [serving_bench.product_id(i) for i in range(args.products)]
    torch.manual_seed(args.seed)
    config = RecommenderConfig(num_customers=args.customers, num_products=args.products, embed_dim=32)
    weights = settings.RECSITE_ENGAGEMENT
    name = "bench-serving-memory.pt"
    sha256 = save_artifact(
        model_dir() / name, model=RecommenderNN(config), config=config,
        prior=np.zeros(args.products, dtype=np.float32), customer_ids=customer_ids, product_ids=product_ids,
        channel_weights=[weights["HOVER_WEIGHT"], weights["DWELL_WEIGHT"], weights["CLICK_WEIGHT"]], metrics={},
    )  # fmt: skip
    version = ModelVersion.objects.create(
        artifact_path=name, sha256=sha256, config={"model": config.to_dict()},
        customer_ids=customer_ids, product_ids=product_ids, metrics={},
    )  # fmt: skip
    model_version_promote(version_id=version.pk, actor="command:bench-serving-memory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 products, 50,000 customers")
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=20, help="recommendation requests the worker answers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/recsite_bench_serving_memory")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # the measured process
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.products, args.customers = 10_000, 50_000
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    recreate_database(args.database)

    shutil.rmtree(SCRATCH, ignore_errors=True)
    (SCRATCH / "static").mkdir(parents=True)

    env = {
        **os.environ,
        "DATABASE_URL": args.database,
        "REDIS_URL": args.redis,
        "CELERY_BROKER_URL": args.redis,
        "RECSITE_PRECOMPUTE": "0",  # the on-the-fly path: the model in the worker is what is measured
        "RECSITE_VAR_DIR": str(SCRATCH),
        "RECSITE_MODEL_DIR": str(SCRATCH / "models"),
        "DJANGO_SETTINGS_MODULE": "recsite.settings",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH), str(ROOT), os.environ.get("PYTHONPATH", "")])),
    }
    rng = random.Random(args.seed)
    customers = [f"c-{i}" for i in sorted(rng.sample(range(args.customers), args.requests))]
    python = sys.executable
    started = time.perf_counter()
    try:
        subprocess.run([python, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        key = subprocess.run([python, "manage.py", "create_api_key", "bench"], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
        os.environ.update(env)
        sys.path[:0] = [str(BENCH), str(ROOT)]
        import django

        django.setup()
        from django.db import connections

        build(args, customers)
        connections.close_all()
        artifact_mb = round(sum(p.stat().st_size for p in (SCRATCH / "models").glob("*.pt")) / MB, 1)
        setup_seconds = round(time.perf_counter() - started, 1)
        done = subprocess.run(
            [python, str(Path(__file__).resolve()), "--worker"], cwd=ROOT, check=True, capture_output=True, text=True,
            env={**env, "RECSITE_BENCH_API_KEY": key, "RECSITE_BENCH_CUSTOMERS": json.dumps(customers)},
        )  # fmt: skip
    finally:
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        drop_database(args.database)
        shutil.rmtree(SCRATCH, ignore_errors=True)

    measured = json.loads(done.stdout.strip().splitlines()[-1])
    reference, served, every = measured["reference"], measured["after_requests"], measured["after_every_customer_row"]
    scale = f"{args.products:,} products, {args.customers:,} customers"
    baseline = Reference(
        "the same process after django.setup() and import torch, before the model", reference["VmRSS"], "MB"
    )
    figures = [
        Figure(
            f"peak RSS of a serving worker, {scale}", served["VmHWM"], "MB", reference=baseline,
            target=Target("<=", 500, "MB") if not args.quick else None,
            notes=f"VmHWM after {args.requests} recommendation requests (the first loads the model); "
            f"{served['RssFile']} MB of the RSS is file-backed (libraries, mapped model pages)",
        ),
        Figure(
            f"RSS once every customer's embedding was read, {scale}", every["VmRSS"], "MB", reference=baseline,
            notes=f"file-backed {every['RssFile']} MB (the mapped artifact, shared by every worker serving it, "
            f"reclaimable); anonymous {every['RssAnon']} MB; PSS {every.get('Pss')} MB",
        ),
    ]  # fmt: skip
    wrong = [a for a in measured["answers"] if a[1] != 200 or a[2] != "model" or a[3] != 10]
    details = {
        "what": "memory of one process serving GET /api/v1/recommendations/ (Django test client, full stack) "
        "with the promoted model loaded through training.serving",
        "machine": machine(),
        "params": {k: v for k, v in vars(args).items() if k not in ("database", "redis", "worker")},
        "artifact_mb": artifact_mb,
        "memory_mb": {"reference": reference, "after_requests": served, "after_every_customer_row": every},
        "model_added_mb": round(served["VmHWM"] - reference["VmRSS"], 1),
        "customer_index_mb": measured["customer_index_mb"],
        "requests_seconds_incl_model_load": measured["requests_seconds"],
        "queries": measured["queries"],
        "queries_reading_customer_ids": measured["queries_reading_customer_ids"],
        "wrong_answers": wrong,
        "setup_seconds": setup_seconds,
        "notes": "The artifact's tensors are mapped from the file (torch.load mmap=True): a worker holds the "
        "embedding pages it has read, shared with every other worker through the page cache. Customer "
        "ids are one UTF-8 buffer and a sorted hash array (training.ml.artifact.IdIndex), not a dict.",
    }
    path = write_result("serving_memory", figures=figures, details=details, quick=args.quick)
    print(f"reference {reference['VmRSS']} MB; peak after {args.requests} requests {served['VmHWM']} MB "
          f"(file-backed {served['RssFile']} MB); after every customer's row {every['VmRSS']} MB "
          f"(file-backed {every['RssFile']} MB, PSS {every.get('Pss')} MB)\n-> {path}")  # fmt: skip
    problems = {}
    if wrong:
        problems["answers"] = wrong[:3]
    if measured["queries_reading_customer_ids"]:
        problems["customer_ids read"] = measured["queries_reading_customer_ids"][:3]
    if problems:
        raise SystemExit(f"FAILED: {json.dumps(problems)}")


if __name__ == "__main__":
    main()
