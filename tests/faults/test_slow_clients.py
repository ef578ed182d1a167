"""Slow clients (issue 17, row 4): connections that trickle their request stall nobody else.

gunicorn's sync workers give a process to a connection from its first byte, so two
clients sending a header line a second stalled a 2-worker gunicorn. The fixes, tested
here as they run:

- production: gunicorn behind nginx with the README's `location` block, read from the
  README itself (PostgreSQL pass: the production settings);
- `make run`: waitress, which reads each whole request before a thread runs it (SQLite
  pass: the embedded mode).

Each test first shows the stall on what was there before (gunicorn's sync workers, with
nothing in front), so a harness that could not see a stall cannot pass.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.celery_worker import stop_process
from tests.embedded_runner import free_port, runner_env, start_runner, wait_for_health
from tests.faults.conftest import GUNICORN_WORKERS, ROOT, gunicorn_server, needs_postgres_and_redis
from tests.slow_clients import SlowClients, probe

# The 2 slow connections stalled gunicorn's 2 sync workers; gthread with 2 x 8
# threads stalled at 16. These are well past both.
SLOW_HEADERS = 64
SLOW_BODIES = 16
PROBES = 20
PROBE_TIMEOUT_SECONDS = 5.0  # a loaded CI machine answers /healthz in milliseconds
STALL_PROBE_TIMEOUT_SECONDS = 3.0
NGINX = os.environ.get("RECSITE_NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"
HOW_TO_INSTALL = "Install nginx: apt-get install nginx (or set RECSITE_NGINX to an nginx binary)."


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def stalled_gunicorn(url: str) -> list[float | None]:
    """Probe a 2-worker gunicorn, with nothing in front, while GUNICORN_WORKERS clients trickle headers."""
    with SlowClients(*address(url), headers=GUNICORN_WORKERS):
        return probe(f"{url}/healthz", requests_count=2, timeout=STALL_PROBE_TIMEOUT_SECONDS)


def under_slow_clients(url: str) -> dict:
    """Probe ``url`` while SLOW_HEADERS + SLOW_BODIES clients trickle their requests to it."""
    with SlowClients(*address(url), headers=SLOW_HEADERS, bodies=SLOW_BODIES) as slow:
        health = probe(f"{url}/healthz", requests_count=PROBES, timeout=PROBE_TIMEOUT_SECONDS)
        pages = probe(f"{url}/accounts/login/", requests_count=5, timeout=PROBE_TIMEOUT_SECONDS)
        still_open = slow.open
    answered = [t for t in health + pages if t is not None]
    return {
        "slow_clients": SLOW_HEADERS + SLOW_BODIES, "still_open": still_open, "requests": len(health + pages),
        "answered": len(answered), "max_s": round(max(answered, default=0.0), 3),
    }  # fmt: skip


# --- production: gunicorn behind nginx, with the README's block ---


def readme_nginx_block() -> str:
    found = re.findall(r"^```nginx\n(.*?)^```", (ROOT / "README.md").read_text(), re.MULTILINE | re.DOTALL)
    assert len(found) == 1, "README.md should have exactly one ```nginx block (Production)"
    return found[0]


@contextmanager
def nginx_in_front_of(upstream: str, folder: Path) -> Iterator[str]:
    """Run nginx with the README's block, its proxy_pass pointed at ``upstream``; yield its URL."""
    if not Path(NGINX).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"No nginx at {NGINX}. {HOW_TO_INSTALL}", pytrace=False)
        pytest.skip(f"No nginx at {NGINX}. {HOW_TO_INSTALL}")
    block = readme_nginx_block()
    assert "proxy_pass http://127.0.0.1:8000;" in block
    port = free_port()
    temp = {name: folder / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    # As root, nginx's workers would run as nobody and could not use the test's private folder.
    user = "user root;" if os.geteuid() == 0 else ""
    (folder / "nginx.conf").write_text(f"""
{user}
worker_processes 1;
pid {folder / "nginx.pid"};
events {{ worker_connections 1024; }}
http {{
    access_log off;
    {" ".join(f"{name}_temp_path {path};" for name, path in temp.items())}
    server {{
        listen 127.0.0.1:{port};
        {block.replace("http://127.0.0.1:8000", upstream)}
    }}
}}
""")
    log = folder / "error.log"
    command = [NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", str(log), "-g", "daemon off;"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        probe_until_up(url, process, log)
        yield url
    finally:
        process.send_signal(signal.SIGQUIT)  # nginx's graceful stop
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def probe_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    for _ in range(100):
        if process.poll() is not None:
            pytest.fail(f"nginx exited ({process.returncode}):\n{log.read_text() if log.exists() else ''}")
        if probe(f"{url}/healthz", requests_count=1, timeout=1) != [None]:
            return
        # A connection refused returns at once: wait on the process, which also notices an exit.
        try:
            process.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            pass
    pytest.fail(f"nginx did not answer:\n{log.read_text() if log.exists() else ''}")


@needs_postgres_and_redis("the production settings behind nginx")
@pytest.mark.usefixtures("transactional_db")
def test_behind_the_readmes_nginx_slow_clients_stall_no_request_of_gunicorns_sync_workers(
    app_server, tmp_path, figure
):
    before = stalled_gunicorn(app_server.url)
    with nginx_in_front_of(app_server.url, tmp_path) as url:
        after = under_slow_clients(url)

    figure("slow_clients_production", gunicorn_workers=GUNICORN_WORKERS,
           alone_with_2_slow_answered=sum(t is not None for t in before), **after)  # fmt: skip
    assert before == [None, None]  # with nothing in front, 2 slow clients stall it
    assert after["answered"] == after["requests"], after
    assert after["still_open"] == after["slow_clients"], after  # they held their connections throughout


# --- make run: waitress ---


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="the embedded mode runs on SQLite; the SQLite pass covers it")
def test_make_runs_web_server_answers_everyone_while_slow_clients_trickle_their_requests(tmp_path, figure):
    port = free_port()
    env = runner_env(tmp_path / "var", port)
    output = tmp_path / "run_embedded.log"
    runner = start_runner(env, output)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_for_health(runner, base_url, output)
        after = under_slow_clients(base_url)
        # What `make run` ran before: gunicorn with 2 sync workers, on the same database.
        with gunicorn_server(env, tmp_path / "gunicorn.log") as gunicorn:
            before = stalled_gunicorn(gunicorn.url)
    finally:
        stop_process(runner)

    figure("slow_clients_make_run", alone_gunicorn_with_2_slow_answered=sum(t is not None for t in before), **after)
    assert before == [None, None]
    assert after["answered"] == after["requests"], (after, output.read_text()[-4000:])
    assert after["still_open"] == after["slow_clients"], after
