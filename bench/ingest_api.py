"""Measure POST /api/v1/events/ throughput under gunicorn on PostgreSQL, against COPY into the same table.

    .venv/bin/python bench/ingest_api.py [--quick] [--events 100000 --batch 500 --clients 4 --workers 2]

Creates a scratch database (``recsite_bench_ingest``), starts gunicorn on loopback
(``--workers`` sync workers, Redis db 7 as the throttle cache) and sends ``--events`` new
events in batches of ``--batch`` from ``--clients`` concurrent clients (threads of this
process, one keep-alive connection each), then sends them all again (every event a
duplicate: the dedup path). The request bodies are encoded before the clock starts, so
the figure is the server's, not the client's JSON encoder.

Why 4 clients on 2 cores: gunicorn runs one sync worker per core, and a worker handles
one request at a time, so only 2 batches are ever in work. A third and fourth client keep
a request waiting in each worker's queue, so no worker idles while its client reads an
answer and sends the next batch; more clients only lengthen the queue (the full run also
measures 2 and 8 clients on fresh events to show it: ``clients_sweep`` in the details).

The reference, measured in the same run: the events table emptied (TRUNCATE; its primary
key, unique event_id and two indexes stay), the very same rows written with one COPY
(psycopg ``cursor.copy``), one transaction. That is the floor cost of storing those rows
on this machine; the API adds HTTP, JSON, validation, the customer and product lookups,
deduplication (ON CONFLICT) and one commit per batch. The details also give COPY with one
transaction per batch, to show what the commits alone cost.

Checks that every event is stored exactly once, and writes bench/results/ingest.json.
The scratch database and var/bench-ingest are removed, and gunicorn stopped, even on failure.
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
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from _results import Figure, Reference, Target, machine, write_result
from _server import drop_database, fresh_scratch, recreate_database, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "var" / "bench-ingest"
TARGET_EVENTS_PER_SECOND = 10_000  # the issue: >= 10,000 events/s through the API
CUSTOMERS, PRODUCTS = 20_000, 5_000
WARM_UP_EVENTS = 2_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_events(events: int, seed: int, now: datetime) -> list[dict]:
    """Events over CUSTOMERS x PRODUCTS in the last 30 days; mostly hovers, some dwell, few clicks."""
    rng = random.Random(seed)
    rows = []
    for _ in range(events):
        occurred = now - timedelta(seconds=rng.randrange(30 * 86_400))
        rows.append(
            {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "customer": f"c-{rng.randrange(CUSTOMERS)}",
                "product": f"p-{rng.randrange(PRODUCTS)}",
                "hover_ms": rng.randrange(8_000),
                "dwell_ms": rng.randrange(120_000) if rng.random() < 0.3 else 0,
                "clicked": rng.random() < 0.05,
                "occurred_at": occurred.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            }
        )
    return rows


def encode(events: list[dict], batch: int) -> list[bytes]:
    return [json.dumps({"events": events[i : i + batch]}).encode() for i in range(0, len(events), batch)]


def send(url: str, key: str, bodies: list[bytes], clients: int) -> dict:
    """POST every body from ``clients`` threads; return events/s, counts and batch latencies."""
    latencies: list[float] = []
    counts = {"accepted": 0, "duplicates": 0, "rejected": 0, "errors": 0}
    examples: list[str] = []

    def worker(chunk: list[bytes]) -> None:
        with requests.Session() as session:
            session.headers.update({"Authorization": f"Api-Key {key}", "Content-Type": "application/json"})
            for body in chunk:
                started = time.perf_counter()
                response = session.post(url, data=body, timeout=120)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    counts["errors"] += 1
                    if len(examples) < 3:
                        examples.append(f"HTTP {response.status_code}: {response.text[:300]}")
                    continue
                answer = response.json()
                counts["accepted"] += answer["accepted"]
                counts["duplicates"] += answer["duplicates"]
                counts["rejected"] += len(answer["rejected"])

    chunks = [bodies[i::clients] for i in range(clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(worker, chunk) for chunk in chunks]:
            future.result()
    elapsed = time.perf_counter() - started
    total = counts["accepted"] + counts["duplicates"]
    latencies.sort()
    return {
        **counts,
        "clients": clients,
        "batches": len(bodies),
        "seconds": round(elapsed, 3),
        "events_per_second": round(total / elapsed, 1),
        "batch_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "batch_p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))] * 1000, 1),
        "examples": examples,
    }


def copy_rows(conn, events: list[dict]) -> list[bytes]:
    """The rows the API stored, as COPY text lines (ids resolved, timestamps as the API stores them)."""
    customers = dict(conn.execute("SELECT external_id, id FROM engagement_customer").fetchall())
    products = dict(conn.execute("SELECT external_id, id FROM engagement_product").fetchall())
    conn.rollback()
    received = datetime.now(UTC).isoformat()
    return [
        (
            f"{e['event_id']}\t{customers[e['customer']]}\t{products[e['product']]}\t{e['hover_ms']}\t"
            f"{e['dwell_ms']}\t{'t' if e['clicked'] else 'f'}\t{e['occurred_at']}\t{received}\n"
        ).encode()
        for e in events
    ]


COPY_SQL = (
    "COPY engagement_interactionevent (event_id, customer_id, product_id, hover_ms, dwell_ms, clicked, "
    "occurred_at, received_at) FROM STDIN"
)


def time_copy(conn, lines: list[bytes], batch: int | None) -> float:
    """Empty the events table, then COPY ``lines`` (one transaction, or one per ``batch``); return seconds."""
    import psycopg
    conn.execute("TRUNCATE engagement_interactionevent")
    conn.commit()
    try:
        conn.execute("CHECKPOINT")  # nothing the API left dirty is written during the timed COPY
    except psycopg.errors.InsufficientPrivilege:
        pass  # not a superuser (or pg_checkpoint): the COPY may share the disk with a checkpoint
    conn.commit()
    step = batch or len(lines)
    chunks = [b"".join(lines[i : i + step]) for i in range(0, len(lines), step)]
    started = time.perf_counter()
    for data in chunks:
        with conn.cursor() as cur:
            with cur.copy(COPY_SQL) as copy:
                copy.write(data)
        conn.commit()
    seconds = time.perf_counter() - started
    stored = conn.execute("SELECT count(*) FROM engagement_interactionevent").fetchone()[0]
    conn.rollback()
    if stored != len(lines):
        raise SystemExit(f"COPY stored {stored} rows, expected {len(lines)}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 events, no client sweep (the CI smoke test)")
    parser.add_argument("--events", type=int, default=None, help="default 100,000 (quick: 20,000)")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--sweep", default=None, help="other client counts, on fresh events (default 2,8; quick: none)")
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/recsite_bench_ingest")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/7")
    args = parser.parse_args()
    events_n = args.events or (20_000 if args.quick else 100_000)
    sweep = [int(c) for c in (args.sweep if args.sweep is not None else ("" if args.quick else "2,8")).split(",") if c]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    import psycopg

    dbname = recreate_database(args.database)
    fresh_scratch(SCRATCH)

    env = {
        **os.environ,
        "DATABASE_URL": args.database,
        "REDIS_URL": args.redis,
        "CELERY_BROKER_URL": args.redis,
        "RECSITE_API_KEY_RATE": "1000000/min",
        "RECSITE_VAR_DIR": str(SCRATCH),
        "DJANGO_SETTINGS_MODULE": "recsite.settings",
    }
    python = sys.executable
    now = datetime.now(UTC)
    events = make_events(events_n, seed=1, now=now)
    bodies = encode(events, args.batch)
    server = None
    log = SCRATCH / "gunicorn.log"
    failed = True
    try:
        subprocess.run([python, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        key = subprocess.run(
            [python, "manage.py", "create_api_key", "bench"], cwd=ROOT, env=env, check=True,
            capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        port = free_port()
        with open(log, "wb") as log_file:
            server = subprocess.Popen(
                [python, "-m", "gunicorn", "recsite.wsgi", "--bind", f"127.0.0.1:{port}",
                 "--workers", str(args.workers), "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}/api/v1/events/"
        wait_until_serving(f"http://127.0.0.1:{port}", server)
        warm_up = encode(make_events(WARM_UP_EVENTS, seed=2, now=now), args.batch)
        send(url, key, warm_up, args.clients)  # open the connections, load the code paths
        first = send(url, key, bodies, args.clients)
        replay = send(url, key, bodies, args.clients)
        sweep_results = []
        for i, clients in enumerate(sweep):
            fresh = make_events(events_n // 2, seed=10 + i, now=now)
            sweep_results.append(send(url, key, encode(fresh, args.batch), clients))
        server.terminate()
        server.wait(timeout=30)
        server = None

        with psycopg.connect(args.database) as conn:
            stored = conn.execute("SELECT count(*) FROM engagement_interactionevent").fetchone()[0]
            conn.rollback()
            expected = WARM_UP_EVENTS + events_n + len(sweep_results) * (events_n // 2)
            lines = copy_rows(conn, events)
            copy_seconds = time_copy(conn, lines, batch=None)
            copy_batched_seconds = time_copy(conn, lines, batch=args.batch)
            server_settings = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]
                for name in ("server_version", "shared_buffers", "synchronous_commit", "max_connections")
            }
            conn.rollback()
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
        drop_database(args.database)
        shutil.rmtree(SCRATCH, ignore_errors=True)

    copy_rate = events_n / copy_seconds
    problems = []
    if first["accepted"] != events_n or first["errors"] or first["rejected"]:
        problems.append(f"new events: {first}")
    if replay["duplicates"] != events_n or replay["accepted"] or replay["errors"]:
        problems.append(f"replayed events: {replay}")
    for result in sweep_results:
        if result["errors"] or result["rejected"] or result["accepted"] != events_n // 2:
            problems.append(f"sweep with {result['clients']} clients: {result}")
    if stored != expected:
        problems.append(f"{stored} events stored, expected {expected} (each event exactly once)")

    copy_reference = Reference("COPY of the same rows into the emptied events table, one transaction",
                               round(copy_rate, 1), "events/s")  # fmt: skip
    shape = f"batches of {args.batch}, {args.clients} clients, gunicorn {args.workers} workers"
    figures = [
        Figure(
            name=f"POST /api/v1/events/, new events ({shape})",
            value=first["events_per_second"],
            unit="events/s",
            reference=copy_reference,
            target=Target(">=", TARGET_EVENTS_PER_SECOND, "events/s"),
            notes=f"{events_n:,} events; batch p50 {first['batch_p50_ms']} ms, p95 {first['batch_p95_ms']} ms",
        ),
        Figure(
            name=f"POST /api/v1/events/, replayed: every event a duplicate ({shape})",
            value=replay["events_per_second"],
            unit="events/s",
            reference=copy_reference,
            notes=f"batch p50 {replay['batch_p50_ms']} ms, p95 {replay['batch_p95_ms']} ms",
        ),
    ]
    details = {
        "what": "POST /api/v1/events/ on PostgreSQL under gunicorn (sync workers), loopback; "
        "clients are threads of the benchmark process on the same 2 cores",
        "params": {k: v for k, v in vars(args).items() if k not in ("database", "redis")}
        | {"events": events_n, "sweep": sweep, "database": dbname},
        "new_events": first,
        "replayed_events": replay,
        "clients_sweep": sweep_results,
        "copy": {
            "one_transaction_seconds": round(copy_seconds, 3),
            "one_transaction_events_per_second": round(copy_rate, 1),
            f"one_transaction_per_{args.batch}_seconds": round(copy_batched_seconds, 3),
            f"one_transaction_per_{args.batch}_events_per_second": round(events_n / copy_batched_seconds, 1),
        },
        "rows_stored": stored,
        "rows_expected": expected,
        "postgresql": server_settings,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
        "problems": problems,
    }
    path = write_result("ingest", figures=figures, details=details, quick=args.quick)
    print(f"API new events:      {first['events_per_second']:>10,.0f} events/s  ({args.clients} clients)")
    print(f"API replayed events: {replay['events_per_second']:>10,.0f} events/s")
    for result in sweep_results:
        print(f"API new, {result['clients']} clients:  {result['events_per_second']:>10,.0f} events/s")
    print(f"COPY, one transaction: {copy_rate:>8,.0f} events/s; one per {args.batch}: "
          f"{events_n / copy_batched_seconds:,.0f} events/s")  # fmt: skip
    print(f"ratio API / COPY: {first['events_per_second'] / copy_rate:.3f}")
    print(f"-> {path}")
    if problems:
        raise SystemExit("FAILED: " + "; ".join(problems))


if __name__ == "__main__":
    main()
