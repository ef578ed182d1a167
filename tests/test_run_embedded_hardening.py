"""`make run` under the faults a user meets: a dead worker, a port or var folder in use, other local users.

Issue 17, row 8 (supervision), row 9 (file modes) and the `make run` items of its last paragraph.
"""

import fcntl
import importlib.util
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.celery_worker import STOP_TIMEOUT_SECONDS, stop_process
from tests.embedded_runner import ROOT, children_running, free_port, runner_env, start_runner, wait_for_health

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")), reason="the embedded mode runs on SQLite; the SQLite pass covers it"
)

RESTART_TIMEOUT_SECONDS = 60  # the first back-off, then a Celery worker's start
REFUSAL_TIMEOUT_SECONDS = 60  # a refusal comes before migrate, so well within this
LOCK_NAME = "run_embedded.lock"


def _load_runner():
    """scripts/run_embedded.py as a module, for its plain functions."""
    spec = importlib.util.spec_from_file_location("run_embedded", ROOT / "scripts" / "run_embedded.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def runners():
    """Start runners; stop whichever a test leaves running."""
    started = []

    def start(env, output, *args, **popen):
        process = start_runner(env, output, *args, **popen)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            stop_process(process)


def _fold_through_the_broker(env: dict[str, str]) -> dict:
    """Send the fold task by name on the runner's broker and wait for a worker's answer."""
    script = (
        "import django; django.setup()\n"
        "import json\n"
        "from recsite.celery import app\n"
        f"print(json.dumps(app.send_task('engagement.tasks.compute_engagement').get(timeout={RESTART_TIMEOUT_SECONDS})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=RESTART_TIMEOUT_SECONDS + 30,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_it_restarts_a_killed_worker_or_web_server_and_keeps_the_others_running(runners, tmp_path):
    port = free_port()
    env = runner_env(tmp_path / "var", port)
    base_url, output = f"http://127.0.0.1:{port}", tmp_path / "run_embedded.log"
    runner = runners(env, output)
    wait_for_health(runner, base_url, output)
    [worker] = children_running(runner.pid, "worker")
    [web] = children_running(runner.pid, "waitress")
    [beat] = children_running(runner.pid, "beat")

    os.kill(worker, signal.SIGKILL)
    answers, deadline, new_workers = 0, time.monotonic() + RESTART_TIMEOUT_SECONDS, []
    while not new_workers:
        assert time.monotonic() < deadline, f"No new worker within {RESTART_TIMEOUT_SECONDS} s:\n{output.read_text()}"
        assert runner.poll() is None, output.read_text()
        # The web server answers all along: it never waits for the worker.
        assert requests.get(f"{base_url}/healthz", timeout=5).status_code == 200, output.read_text()
        answers += 1
        new_workers = [pid for pid in children_running(runner.pid, "worker") if pid != worker]
        time.sleep(0.2)  # the poll's pace, not a synchronisation: the deadline above bounds it

    # The new worker takes a task: the fold, sent by name on the same broker.
    assert "events_folded" in _fold_through_the_broker(env)
    assert requests.get(f"{base_url}/healthz", timeout=5).status_code == 200
    # Only the worker was replaced; web and beat kept their processes.
    assert children_running(runner.pid, "waitress") == [web]
    assert children_running(runner.pid, "beat") == [beat]
    log = output.read_text()
    assert "run_embedded: worker exited (signal 9); restarting it in 1 s (restart 1 of 5 a minute)" in log, log
    assert f"run_embedded: worker restarted (pid {new_workers[0]})" in log, log
    assert answers >= 1

    # The web server is one process with no master of its own: the runner restarts it.
    os.kill(web, signal.SIGKILL)
    deadline, new_web = time.monotonic() + RESTART_TIMEOUT_SECONDS, None
    while new_web is None:
        assert time.monotonic() < deadline, f"No web server answered within {RESTART_TIMEOUT_SECONDS} s:\n{output.read_text()}"
        assert runner.poll() is None, output.read_text()
        try:
            if requests.get(f"{base_url}/healthz", timeout=5).status_code == 200:
                [new_web] = children_running(runner.pid, "waitress")
        except requests.ConnectionError:  # down until the restart: what this waits for
            pass
        time.sleep(0.2)  # the poll's pace, not a synchronisation: the deadline above bounds it
    assert new_web != web
    assert children_running(runner.pid, "worker") == new_workers
    assert children_running(runner.pid, "beat") == [beat]
    assert "run_embedded: web exited (signal 9); restarting it in 1 s (restart 1 of 5 a minute)" in output.read_text()

    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=STOP_TIMEOUT_SECONDS) == 0, output.read_text()


def test_its_restart_policy_backs_off_and_gives_up_after_five_restarts_a_minute():
    runner = _load_runner()
    now = 1000.0
    assert runner.next_restart_delay([], now) == 1
    assert runner.next_restart_delay([now - 5, now - 3], now) == 4
    assert runner.next_restart_delay([now - 50, now - 40, now - 30, now - 20], now) == 16
    assert runner.next_restart_delay([now - 50, now - 40, now - 30, now - 20, now - 10], now) is None
    # Restarts more than a minute ago no longer count: a worker that ran a while starts afresh.
    assert runner.next_restart_delay([now - 200, now - 150, now - 120, now - 90, now - 61], now) == 1


def _private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_its_database_and_var_folder_are_private_to_the_user_even_when_they_were_not(runners, tmp_path):
    # A var folder and a database left world-readable by an earlier version (0755, 0644).
    var_dir = tmp_path / "var"
    var_dir.mkdir(mode=0o755)
    database = var_dir / "recsite.sqlite3"
    database.touch(mode=0o644)  # an empty file is an empty SQLite database
    os.chmod(var_dir, 0o755)
    os.chmod(database, 0o644)
    port = free_port()
    base_url, output = f"http://127.0.0.1:{port}", tmp_path / "run_embedded.log"
    runner = runners(runner_env(var_dir, port), output)
    wait_for_health(runner, base_url, output)
    assert requests.get(f"{base_url}/accounts/login/", timeout=10).status_code == 200  # a session row

    # A reader makes SQLite open the write-ahead log and its shared-memory index.
    with sqlite3.connect(database) as reader:
        assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        reader.execute("SELECT count(*) FROM auth_user").fetchone()
        assert (var_dir / "recsite.sqlite3-wal").exists() and (var_dir / "recsite.sqlite3-shm").exists()
        exposed = [
            f"{path.relative_to(var_dir)} {stat.filemode(path.stat().st_mode)}"
            for path in [var_dir, *var_dir.rglob("*")]
            # collectstatic's copies are the site's public assets (Django's FILE_UPLOAD_PERMISSIONS
            # makes them 0644); behind the 0700 folder no other user reaches them anyway.
            if not _private(path) and path.relative_to(var_dir).parts[0] != "static"
        ]
    assert stat.S_IMODE(var_dir.stat().st_mode) == 0o700
    assert exposed == [], output.read_text()


def test_a_second_run_on_a_port_in_use_fails_before_touching_the_database(runners, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        output = tmp_path / "run_embedded.log"
        runner = runners(runner_env(tmp_path / "var", port), output)
        try:
            code = runner.wait(timeout=REFUSAL_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"It kept running on a port in use:\n{output.read_text()}")
    log = output.read_text()
    assert code != 0, log
    assert f"port {port} is already in use" in log, log
    assert "recsite is running" not in log
    assert not (tmp_path / "var" / "recsite.sqlite3").exists()  # no migrate, no worker, no fold


def test_a_second_run_on_the_same_var_folder_fails_before_touching_the_database(runners, tmp_path):
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    # What a running `make run` holds for its whole life.
    with open(var_dir / LOCK_NAME, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        output = tmp_path / "run_embedded.log"
        runner = runners(runner_env(var_dir, free_port()), output)
        try:
            code = runner.wait(timeout=REFUSAL_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"It ran beside another run on the same var folder:\n{output.read_text()}")
    log = output.read_text()
    assert code != 0, log
    assert "another `make run` is using" in log, log
    assert "recsite is running" not in log
    assert not (var_dir / "recsite.sqlite3").exists()


def test_a_restart_does_not_claim_a_password_was_printed_above(runners, tmp_path):
    env = runner_env(tmp_path / "var", free_port())
    base_url = f"http://127.0.0.1:{env['PORT']}"
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    runner = runners(env, first)
    wait_for_health(runner, base_url, first)
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=STOP_TIMEOUT_SECONDS) == 0, first.read_text()
    assert "  password: " in first.read_text() and "password printed above" in first.read_text()

    runner = runners(env, second)
    wait_for_health(runner, base_url, second)
    log = second.read_text()
    assert "  password: " not in log, log
    assert "printed above" not in log, log
    assert "manage.py changepassword admin" in log, log


def _reset(env: dict[str, str], answer: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/run_embedded.py", "--reset-demo"],
        cwd=ROOT, env=env, input=answer, capture_output=True, text=True, timeout=REFUSAL_TIMEOUT_SECONDS,
    )


def _a_used_var_folder(tmp_path: Path) -> Path:
    var_dir = tmp_path / "var"
    (var_dir / "models").mkdir(parents=True)
    (var_dir / "secret_key").write_text("x")
    (var_dir / "recsite.sqlite3").write_text("")
    (var_dir / "models" / "model-1.pt").write_text("")
    return var_dir


def test_reset_demo_deletes_the_var_folder_once_confirmed(tmp_path):
    var_dir = _a_used_var_folder(tmp_path)
    done = _reset(runner_env(var_dir, free_port()), "yes\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not var_dir.exists()
    assert "make run" in done.stdout  # says how to get a new demo shop


def test_reset_demo_keeps_the_var_folder_unless_confirmed(tmp_path):
    var_dir = _a_used_var_folder(tmp_path)
    for answer in ("n\n", ""):  # "no", and no terminal to answer at all
        done = _reset(runner_env(var_dir, free_port()), answer)
        assert done.returncode != 0, done.stdout
        assert (var_dir / "recsite.sqlite3").exists() and (var_dir / "models" / "model-1.pt").exists()


def test_reset_demo_refuses_while_a_run_uses_the_var_folder(tmp_path):
    var_dir = _a_used_var_folder(tmp_path)
    with open(var_dir / LOCK_NAME, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = _reset(runner_env(var_dir, free_port()), "yes\n")
    assert done.returncode != 0
    assert "another `make run` is using" in done.stdout + done.stderr
    assert (var_dir / "recsite.sqlite3").exists()


def test_reset_demo_refuses_a_folder_that_is_not_a_var_folder_and_a_database_outside_it(tmp_path):
    stranger = tmp_path / "photos"
    stranger.mkdir()
    (stranger / "holiday.jpg").write_text("")
    done = _reset(runner_env(stranger, free_port()), "yes\n")
    assert done.returncode != 0 and (stranger / "holiday.jpg").exists(), done.stdout
    assert "does not look like" in done.stdout + done.stderr

    var_dir = _a_used_var_folder(tmp_path)
    for name, value in (("DATABASE_URL", "postgres://postgres@127.0.0.1/x"), ("RECSITE_ENV", "production")):
        done = _reset({**runner_env(var_dir, free_port()), name: value}, "yes\n")
        assert done.returncode != 0 and (var_dir / "recsite.sqlite3").exists(), done.stdout
        assert name in done.stdout + done.stderr


def test_make_help_lists_every_target_with_a_line_of_help():
    phony = []
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith(".PHONY:"):
            phony += line.split(":", 1)[1].split()
    done = subprocess.run(["make", "-s", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    described = {}
    for line in done.stdout.splitlines():
        target, _, text = line.strip().partition(" ")
        described[target] = text.strip()
    assert {"help", "run", "reset-demo", "test"} <= set(phony)
    assert [target for target in phony if not described.get(target)] == [], done.stdout
