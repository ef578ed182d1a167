"""`make run`'s script: prepares, serves web + worker + beat, and stops them all on SIGTERM."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.celery_worker import STOP_TIMEOUT_SECONDS, stop_process

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 90  # migrate + collectstatic on a new database, then three processes

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")), reason="the embedded mode runs on SQLite; the SQLite pass covers it"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, state) for every process, read from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it exited while we looked
                continue
            # After the command name (which may hold spaces): state, ppid, pgrp, session.
            state, ppid, _, session = stat.rsplit(")", 1)[1].split()[:4]
            found[int(entry.name)] = (int(ppid), int(session), state)
    return found


@pytest.fixture
def embedded_site(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "RECSITE_VAR_DIR": str(tmp_path / "var"),
        "RECSITE_SEED": "0",  # the demo data is seed_demo's to test; here it only costs time
        "PORT": str(port),
        "DJANGO_SETTINGS_MODULE": "recsite.settings",
    }
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "RECSITE_SQLITE_PATH"):
        env.pop(name, None)
    output = tmp_path / "run_embedded.log"
    with output.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "scripts/run_embedded.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield process, f"http://127.0.0.1:{port}", output
    finally:
        if process.poll() is None:  # the test failed before stopping it: stop it the same way
            stop_process(process)


def _wait_for_health(process, base_url: str, output: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, f"run_embedded exited early:\n{output.read_text()}"
        try:
            if requests.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or workers still booting
            pass
        time.sleep(0.5)
    pytest.fail(f"No answer on /healthz within {START_TIMEOUT_SECONDS} s:\n{output.read_text()}")


def test_it_serves_the_site_and_stops_every_process_on_sigterm(embedded_site):
    process, base_url, output = embedded_site
    _wait_for_health(process, base_url, output)

    assert requests.get(f"{base_url}/admin/login/", timeout=10).status_code == 200
    # The dashboard's login page, with its vendored stylesheet and htmx served by whitenoise.
    login = requests.get(f"{base_url}/accounts/login/", timeout=10)
    assert login.status_code == 200
    for asset in re.findall(r'(?:href|src)="(/static/[^"]+)"', login.text):
        assert requests.get(f"{base_url}{asset}", timeout=10).status_code == 200, asset
    assert requests.get(f"{base_url}/api/docs/", timeout=10).status_code == 200
    printed = output.read_text()
    assert re.search(r"^  password: \S{12,}$", printed, re.MULTILINE), printed
    key = re.search(r"^  api key: (\S+)$", printed, re.MULTILINE).group(1)
    event = {"event_id": str(uuid.uuid4()), "customer": "c-1", "product": "p-1", "dwell_ms": 5000}
    response = requests.post(
        f"{base_url}/api/v1/events/", json={"events": [event]}, headers={"Authorization": f"Api-Key {key}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1

    # The web server, the worker and beat each lead a session of their own.
    sessions = {pid for pid, (ppid, session, _) in _processes().items() if ppid == process.pid and session == pid}
    assert len(sessions) == 3, printed
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=STOP_TIMEOUT_SECONDS) == 0, output.read_text()
    # Nothing is left in those sessions: no gunicorn worker, no pool process (Z: exited).
    assert [pid for pid, (_, session, state) in _processes().items() if session in sessions and state != "Z"] == []
    assert "run_embedded: stopped." in output.read_text()
