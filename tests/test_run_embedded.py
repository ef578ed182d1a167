"""`make run`'s script: prepares, serves web + worker + beat, and stops them all on SIGTERM."""

import os
import re
import signal
import uuid

import pytest
import requests

from tests.celery_worker import STOP_TIMEOUT_SECONDS, stop_process
from tests.embedded_runner import free_port, processes, runner_env, start_runner, wait_for_health

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")), reason="the embedded mode runs on SQLite; the SQLite pass covers it"
)


@pytest.fixture
def embedded_site(tmp_path):
    port = free_port()
    output = tmp_path / "run_embedded.log"
    process = start_runner(runner_env(tmp_path / "var", port), output)
    try:
        yield process, f"http://127.0.0.1:{port}", output
    finally:
        if process.poll() is None:  # the test failed before stopping it: stop it the same way
            stop_process(process)


def test_it_serves_the_site_and_stops_every_process_on_sigterm(embedded_site):
    process, base_url, output = embedded_site
    wait_for_health(process, base_url, output)

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
    sessions = {pid for pid, (ppid, session, _) in processes().items() if ppid == process.pid and session == pid}
    assert len(sessions) == 3, printed
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=STOP_TIMEOUT_SECONDS) == 0, output.read_text()
    # Nothing is left in those sessions: no gunicorn worker, no pool process (Z: exited).
    assert [pid for pid, (_, session, state) in processes().items() if session in sessions and state != "Z"] == []
    assert "run_embedded: stopped." in output.read_text()
