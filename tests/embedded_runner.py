"""Start `make run`'s script for real (scripts/run_embedded.py) and look at its processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 90  # migrate + collectstatic on a new database, then three processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes() -> dict[int, tuple[int, int, str]]:
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


def children_running(parent: int, word: str) -> list[int]:
    """Pids of the live children of ``parent`` whose command line holds ``word`` (e.g. worker)."""
    found = []
    for pid, (ppid, _, state) in processes().items():
        if ppid != parent or state == "Z":
            continue
        try:
            argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if word.encode() in argv:
            found.append(pid)
    return found


def runner_env(var_dir: Path, port: int) -> dict[str, str]:
    """The embedded mode on its own var folder and port, whatever pass the tests run in."""
    env = {
        **os.environ,
        "RECSITE_VAR_DIR": str(var_dir),
        "RECSITE_SEED": "0",  # the demo data is seed_demo's to test; here it only costs time
        "PORT": str(port),
        "DJANGO_SETTINGS_MODULE": "recsite.settings",
    }
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "RECSITE_SQLITE_PATH", "RECSITE_ENV"):
        env.pop(name, None)
    return env


def start_runner(env: dict[str, str], output: Path, *args: str, **popen) -> subprocess.Popen:
    with output.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "scripts/run_embedded.py", *args],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, **popen,
        )


def wait_for_health(process: subprocess.Popen, base_url: str, output: Path) -> None:
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
