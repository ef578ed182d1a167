"""A real Celery worker process for tests (STYLE 15): same broker, same test database.

Use the session fixture ``celery_worker_process`` together with ``transactional_db``:
the worker is another process and sees only committed rows. When such a test fails,
the end of the worker's log is added to the report.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from celery.exceptions import TimeoutError as CeleryTimeoutError
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 20
LOG_TAIL_LINES = 200
_log_path_key = pytest.StashKey[Path]()


def _test_database_env() -> dict[str, str]:
    """Point the worker at the test database; after django_db_setup NAME is its name."""
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        return {"RECSITE_SQLITE_PATH": str(database["NAME"])}
    url = urlsplit(os.environ["DATABASE_URL"])
    return {"DATABASE_URL": urlunsplit(url._replace(path="/" + database["NAME"]))}


def _die_with_parent() -> None:
    # A worker outliving a killed pytest would take the next run's tasks and run them
    # against a database file that no longer exists; PR_SET_PDEATHSIG (1) prevents it.
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _log_tail(path: Path) -> str:
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:])


def worker_env(**extra: str) -> dict[str, str]:
    """The environment of a worker on the test database and this run's var folder."""
    # Not the browser tests' async allowance: the worker must fail where production would.
    inherited = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    return {
        **inherited,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "RECSITE_VAR_DIR": str(settings.VAR_DIR),
        **_test_database_env(),
        **extra,
    }


def start_worker(*, log_path: Path, queues: str, hostname: str, pool: str = "solo", env: dict | None = None):
    """Start ``celery -A recsite worker`` as a child process that dies with pytest."""
    command = [
        sys.executable, "-m", "celery", "-A", "recsite", "worker", "--pool", pool, "--concurrency", "1",
        "--loglevel", "INFO", "--queues", queues,
        # A fixed node name: the filesystem transport never removes a worker's remote
        # control binding, so each new name would be one more broadcast target nobody reads.
        "--hostname", hostname,
        # Talk to other workers: there are none, and on Redis start-up would wait on mingle.
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command, cwd=ROOT, env=env or worker_env(), stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )  # fmt: skip


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM (a graceful stop), then SIGKILL if it has not exited in time."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, tmp_path_factory, pytestconfig):
    """Start ``celery -A recsite worker`` on the test database; stop it at the end."""
    from recsite.celery import app

    # Tasks left over from an earlier run would otherwise run first, against this one's data.
    app.control.purge()
    log_path = tmp_path_factory.mktemp("celery-worker") / "worker.log"
    pytestconfig.stash[_log_path_key] = log_path
    process = start_worker(log_path=log_path, queues="celery,training", hostname="tests@%h")
    try:
        _wait_until_ready(app, process, log_path)
        yield process
    finally:
        stop_process(process)


def _wait_until_ready(app, process: subprocess.Popen, log_path: Path) -> None:
    """Return once the worker has run a task sent through the real broker and backend."""
    result = app.tasks["celery.accumulate"].delay("ready")
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            result.get(timeout=1)
            return
        except CeleryTimeoutError:
            # Short waits, so a worker that crashed at start-up fails fast with its log.
            if process.poll() is not None:
                problem = f"exited with code {process.returncode}"
            elif time.monotonic() > deadline:
                problem = f"did not answer within {START_TIMEOUT_SECONDS} s"
            else:
                continue
            pytest.fail(f"The Celery worker {problem}. Its log:\n{_log_tail(log_path)}", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    log_path = item.config.stash.get(_log_path_key, None)
    if report.failed and log_path is not None and "celery_worker_process" in item.fixturenames:
        report.sections.append(("Celery worker log (last lines)", _log_tail(log_path)))
    return report
