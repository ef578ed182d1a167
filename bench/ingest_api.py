"""Measure POST /api/v1/events/ throughput under gunicorn, on PostgreSQL, with dedup.

    .venv/bin/python bench/ingest_api.py [--events 100000 --batch 500 --clients 4 --workers 2]

Creates a scratch database (``recsite_bench_ingest``), starts gunicorn on loopback with
Redis as the throttle cache, sends ``--events`` new events in batches from ``--clients``
concurrent clients, then resends them all (every event a duplicate), and writes the
figures to ``bench/results/ingest_api.json``. The request bodies are encoded before the
clock starts, so the figure is the server's, not the client's JSON encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from _server import wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_bodies(events: int, batch: int, seed: int) -> list[bytes]:
    import random

    rng = random.Random(seed)
    bodies = []
    for start in range(0, events, batch):
        rows = [
            {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "customer": f"c-{rng.randrange(20_000)}",
                "product": f"p-{rng.randrange(5_000)}",
                "hover_ms": rng.randrange(8_000),
                "dwell_ms": rng.randrange(120_000),
                "clicked": rng.random() < 0.05,
                "occurred_at": "2026-11-01T12:00:00Z",
            }
            for _ in range(min(batch, events - start))
        ]
        bodies.append(json.dumps({"events": rows}).encode())
    return bodies


def send(url: str, key: str, bodies: list[bytes], clients: int) -> dict:
    latencies: list[float] = []
    counts = {"accepted": 0, "duplicates": 0, "rejected": 0, "errors": 0}

    def worker(chunk: list[bytes]) -> None:
        with requests.Session() as session:
            session.headers.update({"Authorization": f"Api-Key {key}", "Content-Type": "application/json"})
            for body in chunk:
                started = time.perf_counter()
                response = session.post(url, data=body, timeout=120)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    counts["errors"] += 1
                    continue
                answer = response.json()
                counts["accepted"] += answer["accepted"]
                counts["duplicates"] += answer["duplicates"]
                counts["rejected"] += len(answer["rejected"])

    chunks = [bodies[i::clients] for i in range(clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, chunks))
    elapsed = time.perf_counter() - started
    total = counts["accepted"] + counts["duplicates"]
    latencies.sort()
    return {
        **counts,
        "seconds": round(elapsed, 3),
        "events_per_second": round(total / elapsed, 1),
        "batch_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "batch_p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))] * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/recsite_bench_ingest")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()

    dbname = args.database.rsplit("/", 1)[1]
    admin_url = args.database.rsplit("/", 1)[0] + "/postgres"
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')

    env = {
        **os.environ,
        "DATABASE_URL": args.database,
        "REDIS_URL": args.redis,
        "CELERY_BROKER_URL": args.redis,
        "RECSITE_API_KEY_RATE": "1000000/min",
        "DJANGO_SETTINGS_MODULE": "recsite.settings",
    }
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    key = subprocess.run(
        [python, "manage.py", "create_api_key", "bench"], cwd=ROOT, env=env, check=True,
        capture_output=True, text=True,
    ).stdout.strip()

    port = free_port()
    server = subprocess.Popen(
        [python, "-m", "gunicorn", "recsite.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", str(args.workers), "--log-level", "warning"],
        cwd=ROOT, env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/v1/events/"
        wait_until_serving(f"http://127.0.0.1:{port}", server)
        bodies = make_bodies(args.events, args.batch, seed=1)
        send(url, key, make_bodies(2_000, args.batch, seed=2), args.clients)  # warm up connections
        first = send(url, key, bodies, args.clients)
        replay = send(url, key, bodies, args.clients)
    finally:
        server.terminate()
        server.wait(timeout=30)

    with psycopg.connect(args.database) as conn:
        stored = conn.execute("SELECT count(*) FROM engagement_interactionevent").fetchone()[0]
    result = {
        "what": "POST /api/v1/events/ on PostgreSQL under gunicorn, loopback",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "params": vars(args) | {"database": dbname},
        "new_events": first,
        "replayed_events": replay,
        "rows_stored": stored,
        "rows_expected": args.events + 2_000,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ingest_api.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
