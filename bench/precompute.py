"""Precompute and cache: customers/s of the fan-out with 1 and 2 Celery workers, then cached serving latency.

    .venv/bin/python bench/precompute.py [--quick] [--customers 100000] [--products 10000]
                                         [--chunk 2000] [--duration 15] [--throughput-connections 8]

Builds a scratch PostgreSQL database (``recsite_bench_precompute``), Redis database 8
(flushed: broker, results and cache) and var directory (``var/bench-precompute``):
``--products`` active products, ``--customers`` customers with 15 to 25 engagement rows
each (one INSERT ... SELECT), and two untrained, seeded RecommenderNN versions over every
customer and product (latency and throughput do not depend on the weights).

1. Precompute: starts one Celery worker process (prefork, ``--concurrency 1``), promotes
   version 1 (the promotion enqueues the fan-out when it commits, as in production) and
   times from the commit until every chunk task has finished. Then the same with two
   worker processes and version 2. Each chunk task uses one torch thread
   (RECSITE_PRECOMPUTE_TORCH_THREADS), so N workers use N cores.
2. Serving: checks in this process that the cached answer equals the on-the-fly one for
   a sample of customers, times both functions, then starts gunicorn on loopback (Redis
   as the cache) and runs wrk (``bench/wrk/recommendations.lua``: random, seeded
   customers, ``?k=10``) for ``--duration`` seconds against the precomputed lists, with
   1 connection (latency) and ``--throughput-connections`` (throughput), then 1 connection
   against the reference, a minimal DRF view with the same authentication, permission and
   throttle (``bench/bench_site/urls.py``, served by the same gunicorn: issue 15's target
   is cached p50 <= 1.5x its p50); then clears the lists and runs the same two against
   the same server: computed on the fly.

Needs PostgreSQL, Redis and wrk (``/usr/bin/wrk``; ``apt-get install wrk``). Writes
bench/results/precompute.json; exits non-zero on a failed request or a wrong answer.
The scratch database, Redis database and directory are cleaned, and every process it
started stopped, even on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests
from _results import Figure, Reference, Target, machine, write_result
from _server import drop_database, fresh_scratch, recreate_database, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "var" / "bench-precompute"
BENCH = ROOT / "bench"
WRK_SCRIPT = BENCH / "wrk" / "recommendations.lua"
RECOMMENDATIONS = "/api/v1/recommendations/"
MINIMAL = "/bench/minimal/"  # bench_site's reference view: the same auth, permission and throttle, no work
CATEGORIES = 20
K = 10
GUNICORN_WORKERS = 2  # one per core, as bench/serving.py


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# --- the shop and its model versions (Django set up in this process) ---


def build_shop(*, customers: int, products: int) -> int:
    """Insert products, customers and 15-25 engagement rows each in three statements; return the engagement rows."""
    from django.db import connection

    from engagement.models import Customer, Engagement, Product

    product_table, customer_table = Product._meta.db_table, Customer._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {product_table}
                    (external_id, name, category, price, active, is_stub, created_at, updated_at)
                SELECT 'p-' || i, 'Product ' || i, 'cat-' || lpad((i %% {CATEGORIES})::text, 2, '0'),
                       1 + (i %% 997), true, false, now(), now()
                FROM generate_series(0, %s - 1) AS i""",
            [products],
        )
        cursor.execute(
            f"INSERT INTO {customer_table} (external_id, created_at) SELECT 'c-' || i, now() "
            "FROM generate_series(0, %s - 1) AS i",
            [customers],
        )
        # Customer i engaged with products (31 i + 977 j) mod P, j = 1 .. 15 + i mod 11: distinct
        # for each i (977 is prime to P), spread over the catalog. Ids are dense from the inserts.
        cursor.execute(
            f"""INSERT INTO {Engagement._meta.db_table}
                    (customer_id, product_id, hover_ms_total, dwell_ms_total, clicks, event_count, last_event_at,
                     hover_decayed, dwell_decayed, clicks_decayed, score, updated_at)
                SELECT c.first + i, p.first + ((31 * i + 977 * j) %% %(products)s),
                       (i * j) %% 10000, (i * j * 7) %% 300000, (i + j) %% 2, 1 + (i + j) %% 5,
                       now() - ((i + j) %% 60) * interval '1 day', 0.5, 0.5, 0.05, 0.5, now()
                FROM (SELECT min(id) AS first FROM {customer_table}) AS c,
                     (SELECT min(id) AS first FROM {product_table}) AS p,
                     generate_series(0, %(customers)s - 1) AS i,
                     LATERAL generate_series(1, 15 + i %% 11) AS j""",
            {"products": products, "customers": customers},
        )
        rows = cursor.rowcount
        cursor.execute("ANALYZE")  # planner statistics, as a live database would have
    return rows


def save_version(*, customers: int, products: int, seed: int):
    """Save an untrained, seeded model over every customer and product as a candidate ModelVersion."""
    import numpy as np
    import torch
    from django.conf import settings

    from training.ml.artifact import save_artifact
    from training.ml.model import RecommenderConfig, RecommenderNN
    from training.models import ModelVersion
    from training.artifacts import model_dir

    customer_ids = [f"c-{i}" for i in range(customers)]
    product_ids = [f"p-{i}" for i in range(products)]
    torch.manual_seed(seed)
    config = RecommenderConfig(num_customers=customers, num_products=products, embed_dim=32)
    weights = settings.RECSITE_ENGAGEMENT
    name = f"bench-precompute-{seed}.pt"
    sha256 = save_artifact(
        model_dir() / name, model=RecommenderNN(config), config=config, prior=np.zeros(products, dtype=np.float32),
        customer_ids=customer_ids, product_ids=product_ids, metrics={},
        channel_weights=[weights["HOVER_WEIGHT"], weights["DWELL_WEIGHT"], weights["CLICK_WEIGHT"]],
    )  # fmt: skip
    return ModelVersion.objects.create(
        artifact_path=name, sha256=sha256, config={"model": config.to_dict()},
        customer_ids=customer_ids, product_ids=product_ids, metrics={},
    )  # fmt: skip


# --- precompute with N workers ---


def start_workers(count: int, env: dict, logs: list[Path]) -> list[subprocess.Popen]:
    """Start ``count`` worker processes (prefork, one child each) on the default queue; wait until each answers."""
    from celery.exceptions import TimeoutError as CeleryTimeoutError

    from recsite.celery import app

    workers = []
    for n in range(count):
        log = SCRATCH / f"worker-{len(logs)}.log"
        logs.append(log)
        with open(log, "wb") as out:
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "recsite", "worker", "--pool", "prefork",
                     "--concurrency", "1", "--queues", "celery", "--hostname", f"bench-{len(logs)}@%h",
                     "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
            )
    # Each worker logs "ready" once it consumes; then one task through the broker and back.
    deadline = time.monotonic() + 120
    for log, worker in zip(logs[-count:], workers, strict=True):
        while " ready." not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit(f"a Celery worker did not start; see {log}")
            time.sleep(0.1)  # polling a process starting up
    try:
        app.tasks["celery.accumulate"].delay("ready").get(timeout=60)
    except CeleryTimeoutError:
        raise SystemExit("the Celery workers do not answer") from None
    return workers


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def precompute_by_promotion(version_id: int, timeout: float) -> dict:
    """Promote ``version_id``; return the seconds from its commit until every chunk task is done."""
    from django.db import transaction

    from training.services import model_version_promote
    from training.services.precompute import precompute_progress

    committed: list[float] = []
    with transaction.atomic():
        model_version_promote(version_id=version_id, actor="command:bench-precompute")
        # Registered after the promotion's: runs just after the fan-out task is sent.
        transaction.on_commit(lambda: committed.append(time.perf_counter()))
    deadline = time.monotonic() + timeout
    while True:
        progress = precompute_progress(version_id=version_id)
        if progress is not None and progress["done"] == progress["chunks"]:
            finished = time.perf_counter()
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the precompute of version {version_id} did not finish in {timeout:.0f} s: {progress}")
        time.sleep(0.02)  # polling the workers' progress
    seconds = finished - committed[0]
    return {
        "customers": progress["customers"],
        "chunks": progress["chunks"],
        "seconds": round(seconds, 3),
        "customers_per_second": round(progress["customers"] / seconds, 1),
    }


# --- serving ---


def check_and_time_in_process(customers: int, samples: int, seed: int) -> dict:
    """Check cached == on the fly for sampled customers; median time of each function."""
    from training.recommendation_cache import recommendations_cached
    from training.serving import recommendations_for, serving_reset

    serving_reset()
    rng = random.Random(seed)
    picks = [f"c-{rng.randrange(customers)}" for _ in range(samples)]
    recommendations_for(customer=picks[0], k=K)  # load the model as a web process does
    cached_times, fly_times, wrong = [], [], []
    for customer in picks:
        started = time.perf_counter()
        cached = recommendations_cached(customer=customer, k=K)
        cached_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        fresh = recommendations_for(customer=customer, k=K)
        fly_times.append(time.perf_counter() - started)
        if cached is None or cached != fresh or fresh.strategy != "model" or len(fresh.items) != K:
            wrong.append(customer)
    return {
        "samples": samples,
        "wrong_or_missing": len(wrong),
        "examples": wrong[:3],
        "recommendations_cached_ms_median": ms(statistics.median(cached_times)),
        "recommendations_for_ms_median": ms(statistics.median(fly_times)),
    }


def time_django_request(key: str, customers: int, samples: int, seed: int) -> float:
    """Median ms of a cached request through Django's test client: the server's share, without HTTP."""
    from django.test import Client

    rng = random.Random(seed)
    client = Client(HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_HOST="127.0.0.1")
    times = []
    for _ in range(samples):
        path = f"/api/v1/recommendations/c-{rng.randrange(customers)}/?k={K}"
        started = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise SystemExit(f"in-process GET {path}: HTTP {response.status_code} {response.content[:300]!r}")
    return ms(statistics.median(times))


def check_http(base: str, key: str, customers: int, samples: int, seed: int) -> int:
    """Return how many sampled HTTP answers differ from this process's recommendations_for."""
    from training.serving import recommendations_for

    rng = random.Random(seed)
    wrong = 0
    with requests.Session() as session:
        session.headers["Authorization"] = f"Api-Key {key}"
        for _ in range(samples):
            customer = f"c-{rng.randrange(customers)}"
            body = session.get(f"{base}/api/v1/recommendations/{customer}/?k={K}", timeout=30).json()
            expected = recommendations_for(customer=customer, k=K)
            got = [(i["product"], i["score"], i["rank"]) for i in body["items"]]
            want = [(i.product, i.score, i.rank) for i in expected.items]
            if body["model_version"] != expected.model_version or got != want:
                wrong += 1
    return wrong


def run_wrk(
    base: str, key: str, *, customers: int, seconds: float, connections: int, seed: int, prefix: str = RECOMMENDATIONS
) -> dict:
    """Run wrk with the recommendations script on ``prefix``; return its JSON line."""
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(WRK_SCRIPT), base,
        "--", prefix, str(customers), str(seed), f"?k={K}",
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "RECSITE_BENCH_API_KEY": key}, timeout=seconds + 60
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr[-2000:]} {done.stdout[-2000:]}")
    result = json.loads(lines[-1])
    if any(result["errors"].values()):
        raise SystemExit(f"wrk saw failed requests: {result['errors']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 customers, 2,000 products, 3 s of wrk")
    parser.add_argument("--customers", type=int)
    parser.add_argument("--products", type=int)
    parser.add_argument("--chunk", type=int, help="customers per chunk task (RECSITE_PRECOMPUTE_CHUNK)")
    parser.add_argument("--duration", type=float, help="seconds of wrk per scenario")
    parser.add_argument("--throughput-connections", type=int, default=8, help="wrk connections for throughput")
    parser.add_argument("--samples", type=int, default=300, help="customers checked cached == on the fly")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/recsite_bench_precompute")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/8")
    args = parser.parse_args()
    args.customers = args.customers or (5_000 if args.quick else 100_000)
    args.products = args.products or (2_000 if args.quick else 10_000)
    args.chunk = args.chunk or (500 if args.quick else 2_000)
    args.duration = args.duration or (3.0 if args.quick else 15.0)
    if shutil.which("wrk") is None:
        raise SystemExit("bench/precompute.py needs wrk: apt-get install wrk")
    # Ctrl-C and SIGTERM both end in the cleanup below (SIGINT is ignored in a background job otherwise).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    import redis

    dbname = recreate_database(args.database)
    scratch_redis = redis.Redis.from_url(args.redis)
    scratch_redis.flushdb()
    fresh_scratch(SCRATCH)

    env = {
        **os.environ,
        "DATABASE_URL": args.database,
        "REDIS_URL": args.redis,
        "CELERY_BROKER_URL": args.redis,
        "RECSITE_PRECOMPUTE": "true",
        "RECSITE_PRECOMPUTE_CHUNK": str(args.chunk),
        "RECSITE_API_KEY_RATE": "100000000/min",
        "RECSITE_VAR_DIR": str(SCRATCH),
        "RECSITE_MODEL_DIR": str(SCRATCH / "models"),
        "LOG_LEVEL": "INFO",  # each gunicorn worker logs "Serving model version" once: the warm-up's sign
        # recsite plus the minimal DRF view (bench/bench_site/urls.py), the cached path's reference.
        "DJANGO_SETTINGS_MODULE": "bench_site.settings",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH), str(ROOT), os.environ.get("PYTHONPATH", "")])),
    }
    python = sys.executable
    processes: list[subprocess.Popen] = []
    logs: list[Path] = []
    failed = True
    try:
        subprocess.run([python, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        key = subprocess.run(
            [python, "manage.py", "create_api_key", "bench"], cwd=ROOT, env=env, check=True,
            capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip

        os.environ.update(env)
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.conf import settings
        from django.db import connections

        from training.services.precompute import recommendations_precompute_clear

        started = time.perf_counter()
        engagement_rows = build_shop(customers=args.customers, products=args.products)
        versions = [save_version(customers=args.customers, products=args.products, seed=s) for s in (1, 2)]
        setup_seconds = round(time.perf_counter() - started, 1)
        timeout = max(600.0, args.customers / 50)

        precompute = {}
        redis_before = scratch_redis.info("memory")["used_memory"]
        for workers, version in ((1, versions[0]), (2, versions[1])):
            started_workers = start_workers(workers, env, logs)
            processes += started_workers
            precompute[workers] = precompute_by_promotion(version.pk, timeout)
            stop(started_workers)
            print(f"precompute, {workers} worker(s): {precompute[workers]}", flush=True)
            if workers == 1:  # one version's lists (and the group's results, a few KB)
                bytes_per_list = round((scratch_redis.info("memory")["used_memory"] - redis_before) / args.customers)
        redis_bytes = scratch_redis.info("memory")["used_memory"]

        in_process = check_and_time_in_process(args.customers, args.samples, args.seed)
        connections.close_all()

        port = free_port()
        gunicorn_log = SCRATCH / "gunicorn.log"
        logs.append(gunicorn_log)
        with open(gunicorn_log, "wb") as out:
            server = subprocess.Popen(
                [python, "-m", "gunicorn", "recsite.wsgi", "--bind", f"127.0.0.1:{port}",
                 "--workers", str(GUNICORN_WORKERS), "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        processes.append(server)
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(base, server)
        for _ in range(10):  # until every worker has loaded the model (it logs that once)
            run_wrk(base, key, customers=args.customers, seconds=1, connections=GUNICORN_WORKERS * 2, seed=99)
            if gunicorn_log.read_text(errors="replace").count("Serving model version") >= GUNICORN_WORKERS:
                break
        http_wrong = check_http(base, key, args.customers, 50, args.seed + 2)

        request_ms = time_django_request(key, args.customers, args.samples, args.seed + 4)
        wrk: dict = {"seconds": args.duration}
        loads = {"latency": 1, "throughput": args.throughput_connections}
        for path in ("cached", "on_the_fly"):
            if path == "on_the_fly":
                recommendations_precompute_clear(version_id=versions[1].pk)
            for load, clients in loads.items():
                wrk[f"{path}, {load}"] = run_wrk(
                    base, key, customers=args.customers, seconds=args.duration, connections=clients, seed=args.seed
                ) | {"connections": clients}
            if path == "cached":  # the reference, on the same server between the two
                wrk["minimal, latency"] = run_wrk(
                    base, key, customers=args.customers, seconds=args.duration, connections=1, seed=args.seed,
                    prefix=MINIMAL,
                ) | {"connections": 1}
        http_wrong += check_http(base, key, args.customers, 20, args.seed + 3)
        failed = False
    finally:
        stop(processes)
        if failed:
            for log in logs[-3:]:
                if log.exists():
                    print(f"--- {log.name} (tail) ---\n" + log.read_text(errors="replace")[-3000:], file=sys.stderr)
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        drop_database(args.database)
        scratch_redis.flushdb()
        shutil.rmtree(SCRATCH, ignore_errors=True)

    one, two = precompute[1], precompute[2]
    cached, fly, minimal = wrk["cached, latency"], wrk["on_the_fly, latency"], wrk["minimal, latency"]
    cached_busy, fly_busy = wrk["cached, throughput"], wrk["on_the_fly, throughput"]
    size = f"{args.customers:,} customers, {args.products:,} products"
    figures = [
        Figure(
            f"precompute customers/s, 2 workers ({size})", two["customers_per_second"], "customers/s",
            reference=Reference("1 worker", one["customers_per_second"], "customers/s"),
            notes="from the promotion's commit until every chunk task is done; one torch thread per worker",
        ),
        Figure(
            f"cached recommendations p50, k={K}, 1 connection ({size})", cached["p50_ms"], "ms",
            reference=Reference("computed on the fly, same server, lists cleared", fly["p50_ms"], "ms"),
            target=Target("<=", 2.0, "ms"),
            notes=f"wrk, gunicorn {GUNICORN_WORKERS} workers, loopback",
        ),
        Figure(
            f"cached recommendations p50 vs the minimal view, k={K}, 1 connection ({size})", cached["p50_ms"], "ms",
            reference=Reference("minimal DRF view, same server and run, p50", minimal["p50_ms"], "ms"),
            target=Target("<=", 1.5, "", of="ratio"),
            notes="issue 15: a cached answer costs at most half again the framework's floor (auth, throttle, DRF)",
        ),
        Figure(
            f"cached recommendations p99, k={K}, 1 connection ({size})", cached["p99_ms"], "ms",
            reference=Reference("computed on the fly, same server, lists cleared", fly["p99_ms"], "ms"),
        ),
        Figure(
            f"cached recommendations throughput, {args.throughput_connections} connections ({size})",
            cached_busy["requests_per_second"], "req/s",
            reference=Reference("computed on the fly, same server, lists cleared", fly_busy["requests_per_second"],
                                "req/s"),  # fmt: skip
        ),
    ]
    details = {
        "machine": machine(),
        "params": {**vars(args), "database": dbname},
        "settings": {
            "RECSITE_PRECOMPUTE_K": settings.RECSITE_PRECOMPUTE_K,
            "RECSITE_PRECOMPUTE_CHUNK": args.chunk,
            "RECSITE_PRECOMPUTE_TORCH_THREADS": settings.RECSITE_PRECOMPUTE_TORCH_THREADS,
            "gunicorn_workers": GUNICORN_WORKERS,
        },
        "data": {"customers": args.customers, "products": args.products, "engagement_rows": engagement_rows,
                 "embed_dim": 32, "setup_seconds": setup_seconds},  # fmt: skip
        "precompute": {"1 worker": one, "2 workers": two, "speed-up": round(two["customers_per_second"] /
                       one["customers_per_second"], 3), "redis_used_memory_bytes_after": redis_bytes,
                       "redis_bytes_per_list": bytes_per_list},  # fmt: skip
        "in_process": in_process | {"django_request_cached_ms_median": request_ms},
        "http_answers_checked_wrong": http_wrong,
        "wrk": wrk,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    path = write_result("precompute", figures=figures, details=details, quick=args.quick)
    print(f"precompute: 1 worker {one['customers_per_second']} customers/s, 2 workers {two['customers_per_second']}")
    print(f"cached:     p50 {cached['p50_ms']} ms, p99 {cached['p99_ms']} ms, {cached['requests_per_second']} req/s")
    print(f"minimal:    p50 {minimal['p50_ms']} ms, p99 {minimal['p99_ms']} ms (the reference view, same server)")
    print(f"on the fly: p50 {fly['p50_ms']} ms, p99 {fly['p99_ms']} ms, {fly['requests_per_second']} req/s")
    print(f"throughput ({args.throughput_connections} connections): cached {cached_busy['requests_per_second']} "
          f"req/s, on the fly {fly_busy['requests_per_second']} req/s")  # fmt: skip
    print(f"in process: {in_process}; a cached request through Django's test client {request_ms} ms")
    print(f"-> {path}")
    if in_process["wrong_or_missing"] or http_wrong:
        raise SystemExit(f"FAILED: {in_process['wrong_or_missing']} in-process and {http_wrong} HTTP answers wrong")


if __name__ == "__main__":
    main()
