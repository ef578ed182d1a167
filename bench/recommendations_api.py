"""Measure GET /api/v1/recommendations/<customer>/ latency under gunicorn, on PostgreSQL.

    .venv/bin/python bench/recommendations_api.py [--products 10000 --customers 10000 --requests 5000 --concurrency 4]

Creates a scratch database (``recsite_bench_recs``) and a scratch var directory
(``var/bench-recs``, where the model artifact lives), fills the catalog (``--products``
active products in 20 categories), ``--customers`` customers with about 20 engagement
rows each, and 1,000 more customers the model does not know, all with bulk_create. An
untrained, seeded RecommenderNN (embed_dim 32, prior zeros) over every customer and
product is saved as a ModelVersion and promoted: latency does not depend on the weights.

Before the server starts it times in this process CatalogScorer.score for one customer
over the whole catalog, and the whole recommendations_for() call, so the split between
scoring, the rest of serving and HTTP/DRF is visible. Then it starts gunicorn on loopback
with Redis as the cache, warms every worker up, and times three scenarios from
``--concurrency`` concurrent clients over random (seeded) customers:

- ``model``: ``?k=10`` for customers the model knows (``--requests`` requests);
- ``category``: the same with ``&category=`` one of the 20 (``--side-requests``);
- ``popular``: customers the model does not know, so popular products (``--side-requests``).

Writes the figures to ``bench/results/recommendations_api.json`` and prints a table.
Exits non-zero if any request fails or any answer is wrong (a model scenario answered
by popular products, fewer than k items, a seen product, a product of another category).
The scratch database and directory are removed, and gunicorn stopped, even on failure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import requests
from _server import drop_database, fresh_scratch, recreate_database, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SCRATCH = ROOT / "var" / "bench-recs"
CATEGORIES = 20
UNKNOWN_CUSTOMERS = 1_000  # in the database, with engagement, but not in the model: popular products
K = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def product_id(i: int) -> str:
    return f"p-{i}"


def category_of(i: int) -> str:
    return f"cat-{i % CATEGORIES:02d}"


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# --- data, model, in-process timings (Django set up in this process) ---


def build_data(products: int, customers: int, seed: int) -> dict[str, set[str]]:
    """Fill the catalog, customers and engagement with bulk_create; return each customer's seen products."""
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from engagement.models import Customer, Engagement, Product

    rng = random.Random(seed)
    now = timezone.now()
    catalog = Product.objects.bulk_create(
        [
            Product(
                external_id=product_id(i), name=f"Product {i}", category=category_of(i),
                price=Decimal(rng.randrange(100, 100_000)) / 100, active=True,
            )
            for i in range(products)
        ],
        batch_size=2_000,
    )
    people = Customer.objects.bulk_create(
        [Customer(external_id=f"c-{i}") for i in range(customers)]
        + [Customer(external_id=f"u-{i}") for i in range(UNKNOWN_CUSTOMERS)],
        batch_size=2_000,
    )
    seen: dict[str, set[str]] = {}
    rows: list[Engagement] = []
    for person in people:
        picked = rng.sample(range(products), min(products, rng.randint(15, 25)))  # about 20 each
        seen[person.external_id] = {product_id(i) for i in picked}
        for i in picked:
            rows.append(
                Engagement(
                    customer_id=person.pk, product_id=catalog[i].pk,
                    hover_ms_total=rng.randrange(10_000), dwell_ms_total=rng.randrange(300_000),
                    clicks=int(rng.random() < 0.1), event_count=rng.randint(1, 5),
                    last_event_at=now - timedelta(days=rng.random() * 60),
                    hover_decayed=rng.random(), dwell_decayed=rng.random(), clicks_decayed=rng.random() * 0.1,
                    score=Decimal(rng.randrange(1000)) / 1000,
                )
            )
    Engagement.objects.bulk_create(rows, batch_size=5_000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # planner statistics, as a live database would have
    return seen


def promote_model(products: int, customers: int, seed: int):
    """Save an untrained, seeded model over every customer and product; promote it. Return the version."""
    import numpy as np
    import torch
    from django.conf import settings

    from training.ml.artifact import save_artifact
    from training.ml.model import RecommenderConfig, RecommenderNN
    from training.models import ModelVersion
    from training.artifacts import model_dir
    from training.services.versions import model_version_promote

    customer_ids = [f"c-{i}" for i in range(customers)]
    product_ids = [product_id(i) for i in range(products)]
    torch.manual_seed(seed)
    config = RecommenderConfig(num_customers=customers, num_products=products, embed_dim=32)
    model = RecommenderNN(config)
    weights = settings.RECSITE_ENGAGEMENT
    channel_weights = [weights["HOVER_WEIGHT"], weights["DWELL_WEIGHT"], weights["CLICK_WEIGHT"]]
    name = "bench-recommendations.pt"
    sha256 = save_artifact(
        model_dir() / name, model=model, config=config, prior=np.zeros(products, dtype=np.float32),
        customer_ids=customer_ids, product_ids=product_ids, channel_weights=channel_weights, metrics={},
    )  # fmt: skip
    version = ModelVersion.objects.create(
        artifact_path=name, sha256=sha256, config={"model": config.to_dict()},
        customer_ids=customer_ids, product_ids=product_ids, metrics={},
    )  # fmt: skip
    return model_version_promote(version_id=version.pk, actor="command:bench-recommendations")


def time_in_process(version, key: str, customers: int, calls: int, seed: int) -> dict:
    """Median in-process times: the scorer alone, recommendations_for, the popular ranking query."""
    import numpy as np
    import torch
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from engagement.selectors import products_popular
    from training.serving import recommendations_for, served_model, serving_reset

    rng = random.Random(seed)
    serving_reset()
    # Load the promoted model the way a web process does (and with its torch settings).
    first = recommendations_for(customer="c-0", k=K)
    served = served_model()
    if first.strategy != "model" or served is None or served.version_id != version.pk:
        raise RuntimeError(f"the promoted model does not serve in process: {first}")
    scorer = served.loaded.scorer
    threads = torch.get_num_threads()
    picks = [rng.randrange(customers) for _ in range(calls)]
    for i in picks[:10]:
        scorer.score(np.array([i]))  # warm up allocator and kernels
    score_times = []
    for i in picks:
        started = time.perf_counter()
        scorer.score(np.array([i]))
        score_times.append(time.perf_counter() - started)

    served_times = []
    for i in picks:
        started = time.perf_counter()
        result = recommendations_for(customer=f"c-{i}", k=K)
        served_times.append(time.perf_counter() - started)
        if result.strategy != "model":
            raise RuntimeError(f"c-{i} got {result.strategy} recommendations in process")

    popular_times = []
    for _ in range(5):
        started = time.perf_counter()
        products_popular(k=K, now=timezone.now())  # an explicit now skips the cache: the GROUP BY itself
        popular_times.append(time.perf_counter() - started)

    # The SQL one API request runs when no refresh is due (auth, seen products): Django's test client.
    client = Client(HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_HOST="127.0.0.1")
    url = f"/api/v1/recommendations/c-{picks[0]}/?k={K}"
    client.get(url)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    if response.status_code != 200:
        raise RuntimeError(f"in-process GET {url}: HTTP {response.status_code} {response.content[:300]!r}")
    return {
        "torch_threads": threads,
        "calls": calls,
        "scorer_score_ms_median": ms(statistics.median(score_times)),
        "recommendations_for_ms_median": ms(statistics.median(served_times)),
        "popular_ranking_query_ms_median_of_5": ms(statistics.median(popular_times)),
        "sql_per_model_request": [q["sql"][:160] for q in captured.captured_queries],
    }


# --- the HTTP clients ---


def run_scenario(base: str, key: str, paths: list[tuple[str, str]], concurrency: int) -> tuple[dict, list]:
    """GET every path from ``concurrency`` threads; return the timings and (customer, status, body) answers."""
    latencies: list[float] = []
    answers: list[tuple[str, int, bytes]] = []
    stop = threading.Event()  # set when the main thread gives up (Ctrl-C, SIGTERM): the clients stop too

    def worker(chunk: list[tuple[str, str]]) -> None:
        with requests.Session() as session:
            session.headers.update({"Authorization": f"Api-Key {key}"})
            for customer, path in chunk:
                if stop.is_set():
                    return
                started = time.perf_counter()
                try:
                    response = session.get(base + path, timeout=60)
                except requests.RequestException as exc:
                    latencies.append(time.perf_counter() - started)
                    answers.append((customer, 0, str(exc).encode()))
                    continue
                latencies.append(time.perf_counter() - started)
                answers.append((customer, response.status_code, response.content))

    chunks = [paths[i::concurrency] for i in range(concurrency)]
    pool = ThreadPoolExecutor(concurrency)
    started = time.perf_counter()
    try:
        for future in [pool.submit(worker, chunk) for chunk in chunks]:
            future.result()
    finally:
        stop.set()
        pool.shutdown(wait=True)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": ms(percentile(latencies, 50)),
        "p95_ms": ms(percentile(latencies, 95)),
        "p99_ms": ms(percentile(latencies, 99)),
        "mean_ms": ms(statistics.fmean(latencies)),
        "max_ms": ms(latencies[-1]),
    }, answers


def check_answers(answers: list, *, strategy: str, seen: dict[str, set[str]], category: bool) -> dict:
    """Count failed requests and wrong answers; keep a few examples."""
    errors, wrong, examples = 0, 0, []
    for customer, status, body in answers:
        if status != 200:
            errors += 1
            if len(examples) < 3:
                examples.append(f"{customer}: HTTP {status} {body[:200]!r}")
            continue
        answer = json.loads(body)
        items = [item["product"] for item in answer["items"]]
        problem = None
        if answer["strategy"] != strategy:
            problem = f"strategy {answer['strategy']!r}"
        elif len(items) != K:
            problem = f"{len(items)} items"
        elif set(items) & seen.get(customer, set()):
            problem = "a seen product"
        elif category and len({category_of(int(p.removeprefix("p-"))) for p in items}) != 1:
            problem = "products of several categories"
        if problem:
            wrong += 1
            if len(examples) < 3:
                examples.append(f"{customer}: {problem}")
    return {"errors": errors, "wrong_answers": wrong, "examples": examples}


def warm_up(base: str, key: str, paths: list[tuple[str, str]], concurrency: int, log: Path, workers: int) -> int:
    """Send the warm-up paths until every worker has loaded the model (it logs that once); return how many did."""
    loaded = 0
    for _ in range(10):
        _, answers = run_scenario(base, key, paths, concurrency)
        failed = [a for a in answers if a[1] != 200]
        if failed:
            raise SystemExit(f"warm-up request failed: {failed[0][0]} HTTP {failed[0][1]} {failed[0][2][:300]!r}")
        loaded = log.read_text(errors="replace").count("Serving model version")
        if loaded >= workers:
            break
    return loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=5_000, help="requests of the model scenario")
    parser.add_argument("--side-requests", type=int, default=1_000, help="requests of category and popular each")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up requests per gunicorn worker and scenario")
    parser.add_argument("--scorer-calls", type=int, default=200, help="in-process calls timed (median)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/recsite_bench_recs")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()
    # Ctrl-C and SIGTERM both end in the cleanup below (SIGINT is ignored in a background job otherwise).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    dbname = recreate_database(args.database)

    fresh_scratch(SCRATCH)

    env = {
        **os.environ,
        "DATABASE_URL": args.database,
        "REDIS_URL": args.redis,
        "CELERY_BROKER_URL": args.redis,
        "RECSITE_API_KEY_RATE": "1000000/min",
        "RECSITE_VAR_DIR": str(SCRATCH),
        "RECSITE_MODEL_DIR": str(SCRATCH / "models"),
        "RECSITE_SERVING_REFRESH_SECONDS": "2.0",  # the default, stated: serving behaves as in production
        "LOG_LEVEL": "INFO",  # each worker logs "Serving model version" once: how the warm-up knows it is done
        "DJANGO_SETTINGS_MODULE": "recsite.settings",
    }
    python = sys.executable
    server = None
    log = SCRATCH / "gunicorn.log"
    failed = True
    try:
        subprocess.run([python, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        key = subprocess.run(
            [python, "manage.py", "create_api_key", "bench"], cwd=ROOT, env=env, check=True,
            capture_output=True, text=True,
        ).stdout.strip()

        # This process builds the data and the model through the ORM, with the server's settings.
        os.environ.update(env)
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        import torch
        from django.db import connections

        from engagement.selectors import popular_cache_clear

        started = time.perf_counter()
        seen = build_data(args.products, args.customers, args.seed)
        version = promote_model(args.products, args.customers, args.seed)
        popular_cache_clear()  # nothing cached from an earlier run in this Redis database
        setup_seconds = round(time.perf_counter() - started, 1)
        in_process = time_in_process(version, key, args.customers, args.scorer_calls, args.seed)
        connections.close_all()

        port = free_port()
        with open(log, "wb") as log_file:
            server = subprocess.Popen(
                [python, "-m", "gunicorn", "recsite.wsgi", "--bind", f"127.0.0.1:{port}",
                 "--workers", str(args.workers), "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(base, server)

        rng = random.Random(args.seed + 1)

        def model_paths(n: int) -> list[tuple[str, str]]:
            picks = [f"c-{rng.randrange(args.customers)}" for _ in range(n)]
            return [(c, f"/api/v1/recommendations/{c}/?k={K}") for c in picks]

        def category_paths(n: int) -> list[tuple[str, str]]:
            picks = [(f"c-{rng.randrange(args.customers)}", category_of(rng.randrange(CATEGORIES))) for _ in range(n)]
            return [(c, f"/api/v1/recommendations/{c}/?k={K}&category={cat}") for c, cat in picks]

        def popular_paths(n: int) -> list[tuple[str, str]]:
            picks = [f"u-{rng.randrange(UNKNOWN_CUSTOMERS)}" for _ in range(n)]
            return [(c, f"/api/v1/recommendations/{c}/?k={K}") for c in picks]

        warm = args.warmup * args.workers
        workers_loaded = warm_up(base, key, model_paths(warm), args.concurrency, log, args.workers)
        scenarios = {}
        for name, make, count, strategy in (
            ("model", model_paths, args.requests, "model"),
            ("category", category_paths, args.side_requests, "model"),
            ("popular", popular_paths, args.side_requests, "popular"),
        ):
            run_scenario(base, key, make(warm), args.concurrency)  # this scenario's caches and code paths
            figures, answers = run_scenario(base, key, make(count), args.concurrency)
            checked = check_answers(answers, strategy=strategy, seen=seen, category=name == "category")
            scenarios[name] = figures | checked
        failed = False
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            if failed and log.exists():
                print("--- gunicorn log (tail) ---\n" + log.read_text(errors="replace")[-3000:], file=sys.stderr)
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        drop_database(args.database)
        shutil.rmtree(SCRATCH, ignore_errors=True)

    import numpy
    from django.conf import settings

    serving_settings = {
        name: settings.RECSITE_TRAINING.get(name) for name in ("SERVING_REFRESH_SECONDS", "SERVING_TORCH_THREADS")
    } | {
        "RECSITE_POPULAR_CACHE_SECONDS": settings.RECSITE_POPULAR_CACHE_SECONDS,
        "CONN_MAX_AGE": settings.DATABASES["default"]["CONN_MAX_AGE"],
    }
    result = {
        "what": "GET /api/v1/recommendations/<customer>/?k=10 on PostgreSQL under gunicorn, loopback",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "platform": platform.platform(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "params": vars(args) | {"database": dbname, "k": K},
        "serving_settings": serving_settings,
        "data": {
            "products": args.products,
            "categories": CATEGORIES,
            "model_customers": args.customers,
            "unknown_customers": UNKNOWN_CUSTOMERS,
            "engagement_rows": sum(len(s) for s in seen.values()),
            "embed_dim": 32,
            "setup_seconds": setup_seconds,
        },
        "in_process": in_process,
        "workers_warmed": workers_loaded,
        "scenarios": scenarios,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "recommendations_api.json").write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'scenario':<10}{'requests':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'req/s':>8}{'errors':>8}")
    for name, s in scenarios.items():
        bad = s["errors"] + s["wrong_answers"]
        print(
            f"{name:<10}{s['requests']:>9}{s['p50_ms']:>9}{s['p95_ms']:>9}{s['p99_ms']:>9}"
            f"{s['mean_ms']:>9}{s['requests_per_second']:>8}{bad:>8}"
        )
    print(
        f"in process: CatalogScorer.score {in_process['scorer_score_ms_median']} ms, "
        f"recommendations_for {in_process['recommendations_for_ms_median']} ms (medians of {args.scorer_calls}); "
        f"popular ranking query {in_process['popular_ranking_query_ms_median_of_5']} ms"
    )
    print(f"-> {RESULTS / 'recommendations_api.json'}")
    bad = {name: s["examples"] for name, s in scenarios.items() if s["errors"] or s["wrong_answers"]}
    if workers_loaded < args.workers:
        bad["warm-up"] = [f"only {workers_loaded} of {args.workers} workers loaded the model"]
    if bad:
        raise SystemExit(f"FAILED: {json.dumps(bad)}")


if __name__ == "__main__":
    main()
