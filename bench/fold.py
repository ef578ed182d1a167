"""Time the engagement fold on PostgreSQL: 1,000,000 events, cold and incremental.

    .venv/bin/python bench/fold.py [--quick] [--events 1000000 --customers 20000 --products 2000]

Creates a scratch database (``recsite_bench_fold``), migrates it, and loads a demo shop
with COPY (not the API: this measures the fold): ``--customers`` customers, ``--products``
products and ``--events`` events drawn by ``engagement.demo.demo_events`` (planted tastes,
Zipf-like product popularity within a category, 90 days with a weekly and daily rhythm,
mostly hovers, some dwell, few clicks). Then VACUUM ANALYZE, as a live database's
autovacuum would have done, and:

- the reference: ``SELECT customer_id, product_id, COUNT(*), SUM(...), MAX(occurred_at)
  FROM events GROUP BY 1, 2`` over the same rows, every group consumed in the server
  (the floor of reading and grouping them), best of ``--repeats``;
- the cold fold: ``engagement_fold()`` into an empty Engagement and ProductDay, commit
  (and its deferred foreign-key checks) included, best of ``--repeats`` (both tables
  truncated and the watermark reset between repeats);
- the incremental fold: ``--incremental`` new events (today's, on the same customers and
  products) COPYed in and folded on top, median of ``--repeats``.

The default shape is a demanding one: 1,000,000 events make ~780,000 distinct pairs, so
nearly every event becomes an Engagement row. Next to each wall time the details give
the PostgreSQL backend's CPU seconds (read from /proc), which other work on the machine
disturbs far less. Checks that Engagement's event counts and ProductDay's add up to the
events folded, and writes bench/results/fold.json. The scratch database is dropped at
the end (``--keep`` keeps it, for EXPLAIN ANALYZE).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _results import Figure, Reference, Target, machine, write_result
from _server import drop_database, recreate_database

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "var" / "bench-fold"
DAYS = 90
TARGET_SECONDS = 20.0  # the issue: fold 1,000,000 events in <= 20 s


def demo_shop(*, customers: int, products: int, events: int, seed: int, now: datetime, days: int = DAYS):
    from engagement.demo import demo_events

    return demo_events(n_customers=customers, n_products=products, n_events=events, seed=seed, days=days, now=now)


def copy_catalog(conn, *, customers: int, products: int) -> None:
    """COPY customers and products with ids 1..n, so events can name them by index + 1."""
    now = datetime.now(UTC).isoformat()
    with conn.cursor() as cur:
        with cur.copy("COPY engagement_customer (id, external_id, created_at) FROM STDIN") as copy:
            copy.write("".join(f"{i + 1}\tbench-c{i}\t{now}\n" for i in range(customers)))
        with cur.copy(
            "COPY engagement_product (id, external_id, name, category, active, is_stub, created_at, updated_at) "
            "FROM STDIN"
        ) as copy:
            rows = (f"{i + 1}\tbench-p{i}\tProduct {i}\tcat-{i % 10}\tt\tf\t{now}\t{now}\n" for i in range(products))
            copy.write("".join(rows))
        for table in ("engagement_customer", "engagement_product"):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    conn.commit()


def copy_events(conn, shop, *, first_id: int) -> float:
    """COPY the demo events (ids first_id, first_id + 1, ...); return the COPY's seconds."""
    import numpy as np

    n = len(shop)
    occurred = np.datetime_as_string(shop.occurred_at.astype("datetime64[s]"), unit="s")
    received = datetime.now(UTC).isoformat()
    lines = [
        # A 32-hex-digit event id: unique per event, cheaper to make than a million uuid objects.
        f"{first_id + i}\t{shop.seed:08x}{first_id + i:024x}\t{c + 1}\t{p + 1}\t{h}\t{d}\t{'t' if k else 'f'}"
        f"\t{t}+00\t{received}\n"
        for i, (c, p, h, d, k, t) in enumerate(
            zip(
                shop.customer.tolist(), shop.product.tolist(), shop.hover_ms.tolist(), shop.dwell_ms.tolist(),
                shop.clicked.tolist(), occurred.tolist(),
            )
        )
    ]  # fmt: skip
    data = "".join(lines).encode()
    started = time.perf_counter()
    with conn.cursor() as cur:
        with cur.copy(
            "COPY engagement_interactionevent (id, event_id, customer_id, product_id, hover_ms, dwell_ms, clicked, "
            "occurred_at, received_at) FROM STDIN"
        ) as copy:
            copy.write(data)
        cur.execute(
            "SELECT setval(pg_get_serial_sequence('engagement_interactionevent', 'id'), %s)", [first_id + n - 1]
        )
    conn.commit()
    return time.perf_counter() - started


REFERENCE_SQL = """
    SELECT count(*), sum(n), sum(hover), sum(dwell), sum(clicks), max(last_at)
    FROM (
        SELECT customer_id, product_id, COUNT(*) AS n, SUM(hover_ms) AS hover, SUM(dwell_ms) AS dwell,
               SUM(CASE WHEN clicked THEN 1 ELSE 0 END) AS clicks, MAX(occurred_at) AS last_at
        FROM engagement_interactionevent
        GROUP BY 1, 2
    ) AS pairs
"""
# The outer sums use every column: PostgreSQL drops subquery outputs nobody reads, and the
# SUMs with them. The groups stay in the server, so no row transfer is timed.


def backend_cpu_seconds(pid: int) -> float | None:
    """CPU seconds a PostgreSQL backend on this machine has used (None if it is elsewhere).

    Less sensitive than wall time to whatever else runs on the machine: what the
    statement itself costs, not what it waited for.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_used(before: float | None, pid: int) -> float | None:
    after = backend_cpu_seconds(pid)
    return None if before is None or after is None else round(after - before, 2)


def time_reference(conn) -> tuple[float, float | None, tuple]:
    pid = conn.info.backend_pid
    cpu = backend_cpu_seconds(pid)
    started = time.perf_counter()
    row = conn.execute(REFERENCE_SQL).fetchone()
    seconds = time.perf_counter() - started
    conn.rollback()
    return seconds, cpu_used(cpu, pid), row


def reset_fold(conn) -> None:
    conn.execute("TRUNCATE engagement_engagement, engagement_productday")
    conn.execute("DELETE FROM engagement_engagementwatermark")
    conn.commit()


def vacuum(admin_conn, *tables: str) -> None:
    for table in tables:
        admin_conn.execute(f"VACUUM (ANALYZE) {table}")


def time_fold() -> tuple[float, float | None, object]:
    """Run engagement_fold(); return its wall seconds, its PostgreSQL backend's CPU seconds, its result."""
    from django.db import connection

    from engagement.services import engagement_fold

    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    cpu = backend_cpu_seconds(pid)
    started = time.perf_counter()
    result = engagement_fold()
    seconds = time.perf_counter() - started
    used = cpu_used(cpu, pid)
    connection.close()  # next fold on a fresh connection, as each beat task's would be
    return seconds, used, result


def totals(conn) -> dict:
    engagement = conn.execute("SELECT count(*), coalesce(sum(event_count), 0) FROM engagement_engagement").fetchone()
    days = conn.execute("SELECT count(*), coalesce(sum(events), 0) FROM engagement_productday").fetchone()
    events = conn.execute("SELECT count(*) FROM engagement_interactionevent").fetchone()[0]
    conn.rollback()
    return {
        "events": events,
        "engagement_rows": engagement[0],
        "engagement_event_count": int(engagement[1]),
        "product_day_rows": days[0],
        "product_day_events": int(days[1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 events, one repeat (the CI smoke test)")
    parser.add_argument("--events", type=int, default=None, help="default 1,000,000 (quick: 100,000)")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--products", type=int, default=2_000)
    parser.add_argument("--incremental", type=int, default=10_000, help="new events per incremental fold")
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (quick: 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/recsite_bench_fold")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (for EXPLAIN ANALYZE)")
    args = parser.parse_args()
    events = args.events or (100_000 if args.quick else 1_000_000)
    repeats = args.repeats or (1 if args.quick else 3)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    import psycopg

    recreate_database(args.database)
    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir(parents=True)
    env = {
        "DATABASE_URL": args.database,
        "RECSITE_VAR_DIR": str(SCRATCH),
        "DJANGO_SETTINGS_MODULE": "recsite.settings",
        "CELERY_BROKER_URL": "memory://",  # nothing is sent; the fold runs in this process
    }
    os.environ.update(env)
    os.environ.pop("REDIS_URL", None)
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True)
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.conf import settings

        now = datetime.now(UTC)
        with psycopg.connect(args.database) as conn, psycopg.connect(args.database, autocommit=True) as admin:
            started = time.perf_counter()
            shop = demo_shop(customers=args.customers, products=args.products, events=events, seed=args.seed, now=now)
            copy_catalog(conn, customers=args.customers, products=args.products)
            copy_seconds = copy_events(conn, shop, first_id=1)
            vacuum(admin, "engagement_interactionevent", "engagement_customer", "engagement_product")
            load_seconds = time.perf_counter() - started

            reference_runs, reference_cpu = [], []
            for _ in range(repeats):
                seconds, cpu, reference_row = time_reference(conn)
                reference_runs.append(seconds)
                reference_cpu.append(cpu)
            pairs = reference_row[0]

            cold_runs, cold_cpu, cold_result = [], [], None
            for i in range(repeats):
                if i:
                    reset_fold(conn)
                    vacuum(admin, "engagement_engagement", "engagement_productday")
                seconds, cpu, cold_result = time_fold()
                cold_runs.append(seconds)
                cold_cpu.append(cpu)
            cold_totals = totals(conn)

            # A live shop's autovacuum has seen Engagement since its first fill.
            vacuum(admin, "engagement_engagement", "engagement_productday")
            incremental_runs, incremental_cpu, incremental_results = [], [], []
            next_id = events + 1
            for i in range(repeats):
                # Today's events (days=1): mostly pairs already in Engagement, some new ones.
                extra = demo_shop(
                    customers=args.customers, products=args.products, events=args.incremental,
                    seed=args.seed + 1 + i, now=now, days=1,
                )  # fmt: skip
                copy_events(conn, extra, first_id=next_id)
                next_id += len(extra)
                seconds, cpu, result = time_fold()
                incremental_runs.append(seconds)
                incremental_cpu.append(cpu)
                incremental_results.append(result)
            final_totals = totals(conn)
            server = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]
                for name in ("server_version", "work_mem", "shared_buffers", "max_parallel_workers_per_gather",
                             "synchronous_commit")
            }  # fmt: skip
            conn.rollback()
    finally:
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        if not args.keep:
            drop_database(args.database)
        shutil.rmtree(SCRATCH, ignore_errors=True)

    problems = []
    if cold_totals["engagement_event_count"] != events or cold_totals["product_day_events"] != events:
        problems.append(f"cold fold totals do not add up to {events} events: {cold_totals}")
    if cold_totals["engagement_rows"] != pairs:
        problems.append(f"cold fold stored {cold_totals['engagement_rows']} pairs, GROUP BY found {pairs}")
    expected = events + repeats * args.incremental
    if final_totals["engagement_event_count"] != expected or final_totals["product_day_events"] != expected:
        problems.append(f"incremental folds do not add up to {expected} events: {final_totals}")

    cold = min(cold_runs)
    reference = min(reference_runs)
    incremental = statistics.median(incremental_runs)
    figures = [
        Figure(
            name=f"engagement_fold(), cold, {events:,} events",
            value=round(cold, 2),
            unit="s",
            reference=Reference(f"SELECT ... GROUP BY customer, product over the same {events:,} events",
                                round(reference, 3), "s"),  # fmt: skip
            target=Target("<=", TARGET_SECONDS, "s") if events >= 1_000_000 else None,
            notes=f"{pairs:,} pairs, {cold_totals['product_day_rows']:,} product-days; best of {repeats}; "
            f"PostgreSQL backend CPU {min(cold_cpu) if None not in cold_cpu else '?'} s "
            f"(GROUP BY: {min(reference_cpu) if None not in reference_cpu else '?'} s)",
        ),
        Figure(
            name=f"engagement_fold(), {args.incremental:,} new events on top",
            value=round(incremental, 3),
            unit="s",
            reference=Reference(f"engagement_fold(), cold, {events:,} events", round(cold, 2), "s"),
            notes=f"median of {repeats}",
        ),
    ]
    details = {
        "what": "engagement_fold() on PostgreSQL, in process; events loaded with COPY",
        "data": {
            "shape": "engagement.demo.demo_events: planted tastes, Zipf-like popularity, 90 days, "
            "mostly hovers, some dwell, few clicks",
            "events": events,
            "customers": args.customers,
            "products": args.products,
            "days": DAYS,
            "pairs": pairs,
            "product_days": cold_totals["product_day_rows"],
            "incremental_events": args.incremental,
            "seed": args.seed,
        },
        "cold_events_per_second": round(events / cold),
        "seconds": {
            "load_total": round(load_seconds, 1),
            "copy_events": round(copy_seconds, 2),
            "reference_runs": [round(s, 3) for s in reference_runs],
            "cold_runs": [round(s, 2) for s in cold_runs],
            "incremental_runs": [round(s, 3) for s in incremental_runs],
        },
        # The PostgreSQL backend's CPU seconds for the same runs: what the statements cost,
        # less what they waited for (other processes on the machine, I/O).
        "backend_cpu_seconds": {
            "reference_runs": reference_cpu,
            "cold_runs": cold_cpu,
            "incremental_runs": incremental_cpu,
        },
        "cold_result": {"events_folded": cold_result.events_folded, "pairs_touched": cold_result.pairs_touched},
        "incremental_results": [
            {"events_folded": r.events_folded, "pairs_touched": r.pairs_touched} for r in incremental_results
        ],
        "totals_after_cold": cold_totals,
        "totals_at_end": final_totals,
        "postgresql": server,
        "engagement_settings": {k: v for k, v in settings.RECSITE_ENGAGEMENT.items()},
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
        "problems": problems,
    }
    path = write_result("fold", figures=figures, details=details, quick=args.quick)
    seconds, cpu = details["seconds"], details["backend_cpu_seconds"]
    print(f"reference GROUP BY: {reference:.3f} s (runs {seconds['reference_runs']}, "
          f"backend CPU {cpu['reference_runs']})")  # fmt: skip
    print(f"cold fold of {events:,} events: {cold:.2f} s (runs {seconds['cold_runs']}, "
          f"backend CPU {cpu['cold_runs']}), {pairs:,} pairs")  # fmt: skip
    print(f"incremental fold of {args.incremental:,}: {incremental:.3f} s (runs {seconds['incremental_runs']}, "
          f"backend CPU {cpu['incremental_runs']})")  # fmt: skip
    print(f"-> {path}")
    if problems:
        raise SystemExit("FAILED: " + "; ".join(problems))


if __name__ == "__main__":
    main()
