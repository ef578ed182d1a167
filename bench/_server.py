"""What the benchmarks share: waiting for the gunicorn they started to answer."""

from __future__ import annotations

import subprocess
import time

import requests

START_TIMEOUT_SECONDS = 60


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
