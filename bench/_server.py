"""What the benchmarks share: a fresh scratch database and folder, and waiting for the gunicorn they started."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import requests

START_TIMEOUT_SECONDS = 60


def _admin_url_and_name(database_url: str) -> tuple[str, str]:
    """Split ``postgres://.../NAME`` into the maintenance database's URL and NAME."""
    base, name = database_url.rsplit("/", 1)
    return f"{base}/postgres", name


def recreate_database(database_url: str) -> str:
    """Drop the benchmark's own PostgreSQL database if an earlier run left it, create it empty; return its name."""
    import psycopg

    admin_url, name = _admin_url_and_name(database_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(database_url: str) -> None:
    """Drop the benchmark's database, even with connections still open to it."""
    import psycopg

    admin_url, name = _admin_url_and_name(database_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_scratch(scratch: Path) -> None:
    """Empty the benchmark's runtime folder; ``static/`` exists because whitenoise warns when STATIC_ROOT is missing."""
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "static").mkdir(parents=True)


def wait_until_serving(base_url: str, server: subprocess.Popen) -> None:
    """Return once ``/healthz`` answers; exit if gunicorn died or took over a minute."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            requests.get(f"{base_url}/healthz", timeout=5)
            return
        except requests.RequestException:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("gunicorn did not start") from None
            time.sleep(0.2)  # polling a server starting up in another process
