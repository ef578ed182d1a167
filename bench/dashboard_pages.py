"""Time every dashboard page on the demo shop: server time per request, and its query count.

    .venv/bin/python bench/dashboard_pages.py [--database-url postgres://...] [--repeat 20]

Builds the demo shop of the dashboard issue in a scratch var directory
(``var/bench-dashboard``): ``seed_demo`` (2,000 customers, 500 products, 200,000 events),
the fold, and one training run (``manage.py train``), so a model serves. SQLite by
default (the embedded mode of ``make run``); ``--database-url`` points it at an empty
PostgreSQL database instead (created if missing, emptied first).

Each page is requested once with an empty cache ("cold": rankings and popular lists
recomputed), then ``--repeat`` times through Django's test client, signed in as a
superuser; the time is the whole request in this process (middleware, view, queries,
template), without a network. The model is loaded once before the first page, as a
serving process does on its first request. Product reach (every customer's top 10
through the model) is the one partial whose cold time is over the page budget: the
product page loads it after it has rendered.
Writes ``bench/results/dashboard_pages_<database>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SCRATCH = ROOT / "var" / "bench-dashboard"
BUDGET_MS = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="", help="PostgreSQL URL of a scratch database (default: SQLite)")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir(parents=True)
    os.environ.update({"RECSITE_VAR_DIR": str(SCRATCH), "DJANGO_SETTINGS_MODULE": "recsite.settings"})
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    if args.database_url:
        os.environ["DATABASE_URL"] = args.database_url
        _recreate_postgres(args.database_url)
    sys.path.insert(0, str(ROOT))

    import django

    django.setup()
    from django.core.management import call_command

    started = time.perf_counter()
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)  # the manifest the pages' {% static %} reads
    call_command("seed_demo", verbosity=0)
    call_command("compute_engagement", verbosity=0)
    call_command("train", verbosity=0)
    setup_seconds = time.perf_counter() - started

    rows = time_pages(repeat=args.repeat)
    from django.db import connection

    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "database": connection.vendor,
        "shop": {"customers": 2000, "products": 500, "events": 200_000},
        "setup_seconds": round(setup_seconds, 1),
        "repeat": args.repeat,
        "budget_ms": BUDGET_MS,
        "pages": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"dashboard_pages_{connection.vendor}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'page':40s} {'p50 ms':>8s} {'max ms':>8s} {'cold ms':>8s} {'queries':>8s}")
    for row in rows:
        print(f"{row['page']:40s} {row['p50_ms']:8.1f} {row['max_ms']:8.1f} {row['cold_ms']:8.1f} {row['queries']:8d}")
    print(f"Wrote {out} ({connection.vendor}; setup {setup_seconds:.0f} s)")
    shutil.rmtree(SCRATCH, ignore_errors=True)


def time_pages(*, repeat: int) -> list[dict]:
    from django.contrib.auth.models import User
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from engagement.models import Customer, Engagement, Product
    from training.models import TrainingRun

    admin = User.objects.create_superuser("bench-admin", password="unused-in-bench")
    client = Client(HTTP_HOST="localhost")
    client.force_login(admin)
    run = TrainingRun.objects.first()
    # A busy customer and a popular product: the pages' worst cases on this shop.
    customer = Engagement.objects.values("customer__external_id").order_by("-event_count").first()["customer__external_id"]
    product = Engagement.objects.values("product__external_id").order_by("-score").first()["product__external_id"]
    category = Product.objects.values_list("category", flat=True).first()
    prefix = Customer.objects.values_list("external_id", flat=True).first()[:-2]
    htmx = {"HX-Request": "true"}
    pages = [
        ("overview", "/dashboard/", {}),
        ("training runs", "/dashboard/runs/", {}),
        ("training run", f"/dashboard/runs/{run.pk}/", {}),
        ("training run, live partial", f"/dashboard/runs/{run.pk}/", htmx),
        ("retrain confirm", "/dashboard/runs/retrain/", {}),
        ("customers", "/dashboard/customers/", {}),
        ("customer search partial", f"/dashboard/customers/?q={prefix}", htmx),
        ("customer", f"/dashboard/customers/{customer}/", {}),
        ("customer, history page 2 by dwell", f"/dashboard/customers/{customer}/?sort=dwell&page=2", {}),
        ("products (30 days, engagement)", "/dashboard/products/", {}),
        ("products (90 days, clicks)", "/dashboard/products/?days=90&sort=clicks", {}),
        ("products (7 days, dwell, category)", f"/dashboard/products/?days=7&sort=dwell&category={category}", {}),
        ("product", f"/dashboard/products/{product}/", {}),
        ("merchandising rules", "/dashboard/rules/", {}),
    ]
    client.get(f"/dashboard/customers/{customer}/")  # once per process: imports, the model's load
    rows = []
    for name, url, headers in pages:
        # Cold: the first request after the cache is emptied (rankings, popular lists).
        cache.clear()
        started = time.perf_counter()
        client.get(url, headers=headers)
        cold = (time.perf_counter() - started) * 1000
        rows.append({**_measure(client, name, url, headers, repeat=repeat), "cold_ms": round(cold, 1)})
    # Reach: every customer's top 10 through the model; cached per model version.
    reach_url = f"/dashboard/products/{product}/reach/"
    cache.clear()
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reach_url, headers=htmx)
    cold = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, (reach_url, response.status_code)
    rows.append({**_measure(client, "product reach partial", reach_url, htmx, repeat=repeat), "cold_ms": round(cold, 1),
                 "cold_queries": len(queries)})  # fmt: skip
    return rows


def _measure(client, name: str, url: str, headers: dict, *, repeat: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code in (200, 286), (url, response.status_code)
    return {"page": name, "url": url, "p50_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1),
            "queries": len(queries)}  # fmt: skip


def _recreate_postgres(url: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


if __name__ == "__main__":
    main()
