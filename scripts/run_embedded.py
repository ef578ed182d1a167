"""Run recsite on one machine: prepare the database, then serve web + worker + scheduler.

`make run` calls this with the project's virtual environment. Steps: check that the
port and the var folder are free, migrate, collectstatic, seed a demo shop when the
database is empty, make sure the admin user and a demo API key exist, then start
the web server (waitress), a Celery worker and Celery beat, and supervise them until
Ctrl-C or SIGTERM: any of them that dies is started again (with a back-off, at most
RESTART_LIMIT times a minute) while the others keep running.

`make reset-demo` calls it with --reset-demo: delete the var folder (database, models,
secret key) after asking, so that the next `make run` seeds a new demo shop.

Environment: PORT (default 8000), RECSITE_SEED=0 (skip the demo data),
RECSITE_DEMO_SIZE=small (a small demo shop), and everything recsite/settings.py reads.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# How long the children get to finish in-flight requests and tasks before SIGKILL.
STOP_TIMEOUT_SECONDS = 15
DEMO_SIZES = {"small": ["--customers", "200", "--products", "60", "--events", "5000"], "full": []}
# The database holds session keys, password hashes and API key hashes: what this runner
# and its children create is for this user only, like the secret key and the models.
PRIVATE_UMASK = 0o077
# Held by a running `make run` for its whole life: a second one on the same folder
# would migrate, fold and train on the same database.
LOCK_NAME = "run_embedded.lock"
# A process that dies is started again after 1, 2, 4, 8, 16 s; a sixth death within a
# minute is a crash loop that restarting will not cure: stop and say so.
RESTART_BACKOFF_SECONDS = (1, 2, 4, 8, 16)
RESTART_LIMIT = len(RESTART_BACKOFF_SECONDS)
RESTART_WINDOW_SECONDS = 60
# The web server is one process (waitress: threads, no master to restart it); a port
# taken or an import error makes it a crash loop, which ends the run as above.
RESTARTABLE = ("web", "worker", "beat")
# waitress reads each whole request (headers and body) in its event loop before a thread
# runs it, and buffers the answer: a client trickling its request holds a connection, not
# a thread (issue 17 row 4; tests/test_run_embedded.py). Up to CONNECTION_LIMIT of them;
# poll() because select() cannot watch descriptors past 1024.
WEB_THREADS = 4
WEB_CONNECTION_LIMIT = 1000


def log(message: str) -> None:
    print(f"run_embedded: {message}", flush=True)


def port_in_use(port: int) -> bool:
    """Say whether 127.0.0.1:port is taken, by trying to bind it as the web server will."""
    with socket.socket() as sock:
        # As waitress does: a port left in TIME_WAIT by our last run is free to take.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def lock_var_dir(var_dir: Path):
    """Take the var folder's lock for this process's life; None if another run holds it."""
    var_dir.mkdir(parents=True, exist_ok=True)
    handle = open(var_dir / LOCK_NAME, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        sys.exit(
            f"run_embedded: another `make run` is using {var_dir} (pid {holder}). Stop it first, "
            "or give this one its own folder with RECSITE_VAR_DIR."
        )
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def make_private(var_dir: Path, database: Path) -> None:
    """Take group and other access off the var folder and the SQLite files an earlier run left open.

    The umask covers what is created from now on; this covers a folder made 0755 and a
    database made 0644 by a version without it.
    """
    var_dir.chmod(0o700)
    for path in (database, *(database.with_name(database.name + s) for s in ("-wal", "-shm", "-journal"))):
        if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)


def prepare(base_url: str) -> bool:
    """Migrate, collect static files, seed the demo shop once, make sure the admin exists.

    Return whether the admin was created now, which is when its password is printed.
    """
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections

    from engagement.management.commands.ensure_admin import USERNAME
    from engagement.models import Customer, InteractionEvent, Product

    call_command("migrate", interactive=False)
    call_command("collectstatic", interactive=False, verbosity=0)
    seed = os.environ.get("RECSITE_SEED", "1").strip().lower() not in {"0", "false", "no", "off"}
    size = os.environ.get("RECSITE_DEMO_SIZE", "full").strip().lower() or "full"
    if size not in DEMO_SIZES:
        sys.exit(f"RECSITE_DEMO_SIZE must be one of {sorted(DEMO_SIZES)}, got {size!r}.")
    # seed_demo refuses a shop that has any data, so seed only a database that has none.
    empty = not (InteractionEvent.objects.exists() or Product.objects.exists() or Customer.objects.exists())
    if seed and empty:
        call_command("seed_demo", *DEMO_SIZES[size])
    admin_created = not get_user_model().objects.filter(username=USERNAME).exists()
    call_command("ensure_admin", base_url=base_url)
    # The children open their own connections; the supervisor keeps none open.
    connections.close_all()
    return admin_created


def banner(base_url: str, *, admin_created: bool) -> str:
    if admin_created:
        login = "log in as admin with the password printed above"
    else:
        login = (
            "log in as admin with the password printed on its first start;"
            " forgot it? .venv/bin/python manage.py changepassword admin"
        )
    return "\n".join(
        [
            "recsite is running (Ctrl-C stops it):",
            f"  dashboard: {base_url}/dashboard/  ({login})",
            f"  admin:     {base_url}/admin/",
            f"  API docs:  {base_url}/api/docs/",
            f"  health:    {base_url}/healthz",
        ]
    )


def die_with_parent() -> None:
    """Have the kernel SIGTERM this child if the supervisor dies without stopping it (SIGKILL)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start(command: list[str]) -> subprocess.Popen:
    # A session of its own: Ctrl-C in the terminal reaches only this supervisor,
    # which stops the children in order instead of each prompting or dying mid-task.
    return subprocess.Popen(command, start_new_session=True, preexec_fn=die_with_parent)


def has_exited(proc: subprocess.Popen) -> bool:
    """Say whether the child has exited, without reaping it.

    WNOWAIT leaves it a zombie, so its pid (which is also its process group id) can't
    be reused before reap() has SIGKILLed whatever is left in that group.
    """
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def reap(proc: subprocess.Popen) -> int:
    """SIGKILL what is left of the child's process group, then reap it; return its exit code."""
    # Also catches grandchildren (Celery pool workers) whose parent died first.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.wait()


def describe_exit(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"code {code}"


def next_restart_delay(restarts: list[float], now: float) -> float | None:
    """Seconds to wait before the next restart, given the earlier restarts' times; None: give up."""
    recent = [t for t in restarts if now - t < RESTART_WINDOW_SECONDS]
    if len(recent) >= RESTART_LIMIT:
        return None
    return RESTART_BACKOFF_SECONDS[len(recent)]


def stop_all(procs: dict[str, subprocess.Popen]) -> bool:
    """SIGTERM each child, wait, SIGKILL stragglers; True when none needed SIGKILL."""
    for proc in procs.values():
        if not has_exited(proc):
            # To the leader only: Celery's main process stops its own
            # workers gracefully; signalling the whole group would cut that short.
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while time.monotonic() < deadline and not all(has_exited(p) for p in procs.values()):
        time.sleep(0.1)
    clean = True
    for name, proc in procs.items():
        if not has_exited(proc):
            log(f"{name} did not stop in {STOP_TIMEOUT_SECONDS} s; killing it.")
            clean = False
        reap(proc)
    return clean


def supervise(commands: dict[str, list[str]], procs: dict[str, subprocess.Popen], received: list[int]) -> str | None:
    """Keep the children running until a signal arrives; return the name of one that could not be kept."""
    restarts: dict[str, list[float]] = {name: [] for name in commands}
    due: dict[str, float] = {}  # name -> when to start it again
    while not received:
        now = time.monotonic()
        for name, proc in list(procs.items()):
            if not has_exited(proc):
                continue
            code = reap(proc)
            del procs[name]
            delay = next_restart_delay(restarts[name], now) if name in RESTARTABLE else None
            if delay is None:
                reason = f"restarted {RESTART_LIMIT} times within {RESTART_WINDOW_SECONDS} s" if name in RESTARTABLE else ""
                log(f"{name} exited ({describe_exit(code)}){'; ' + reason if reason else ''}; stopping the others.")
                return name
            log(
                f"{name} exited ({describe_exit(code)}); restarting it in {delay} s "
                f"(restart {len([t for t in restarts[name] if now - t < RESTART_WINDOW_SECONDS]) + 1} "
                f"of {RESTART_LIMIT} a minute)."
            )
            due[name] = now + delay
        for name, when in list(due.items()):
            if now >= when:
                del due[name]
                restarts[name].append(now)
                procs[name] = start(commands[name])
                log(f"{name} restarted (pid {procs[name].pid}).")
        time.sleep(0.2)
    return None


def run() -> int:
    port = int(os.environ.get("PORT", "8000"))
    base_url = f"http://127.0.0.1:{port}"
    # Before anything else, so a second `make run` changes nothing of the first one's.
    if port_in_use(port):
        log(f"port {port} is already in use (another `make run`?). Stop it, or choose another: PORT=9000 make run")
        return 1
    os.umask(PRIVATE_UMASK)  # inherited by every child: database, -wal, -shm, broker, models

    import django

    django.setup()
    from django.conf import settings

    lock = lock_var_dir(settings.VAR_DIR)  # noqa: F841 (held until this process exits)
    make_private(settings.VAR_DIR, Path(settings.DATABASES["default"]["NAME"]))
    admin_created = prepare(base_url)

    received: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        # Installed before the children start, so no signal can leave them orphaned.
        signal.signal(signum, lambda signum, frame: received.append(signum))

    py = sys.executable
    commands = {
        "web": [py, "-m", "waitress", f"--listen=127.0.0.1:{port}", f"--threads={WEB_THREADS}",
                f"--connection-limit={WEB_CONNECTION_LIMIT}", "--asyncore-use-poll", "recsite.wsgi:application"],
        # Gossip, mingle and event heartbeats talk to other workers; there are none. Celery
        # already skips gossip and mingle on the filesystem transport; the flags keep the
        # command right on Redis too, where mingle would delay start-up.
        # Two slots: a training run holds one for minutes, folds keep the other.
        "worker": [py, "-m", "celery", "-A", "recsite", "worker", "--concurrency", "2", "--loglevel", "INFO",
                   "--queues", "celery,training",
                   "--without-gossip", "--without-mingle", "--without-heartbeat"],
        # The schedule file is CELERY_BEAT_SCHEDULE_FILENAME, under the var folder.
        "beat": [py, "-m", "celery", "-A", "recsite", "beat", "--loglevel", "INFO"],
    }
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, command in commands.items():
            procs[name] = start(command)
        print(banner(base_url, admin_created=admin_created), flush=True)
        failed = supervise(commands, procs, received)
    finally:
        clean = stop_all(procs)
    if failed is not None:
        return 1
    log("stopped.")
    return 0 if clean else 1


def demo_var_dir() -> Path:
    # recsite/settings.py's rule, read without importing it: the import creates a secret key there.
    return Path(os.environ.get("RECSITE_VAR_DIR") or ROOT / "var").resolve()


def reset_demo() -> int:
    """Delete the embedded mode's var folder after asking; the next `make run` seeds afresh."""
    for name in ("DATABASE_URL", "RECSITE_SQLITE_PATH"):
        if os.environ.get(name):
            log(f"{name} is set: the database is not in the var folder, so deleting that would not reset it. Nothing deleted.")
            return 1
    if os.environ.get("RECSITE_ENV", "embedded") != "embedded":
        log(f"RECSITE_ENV={os.environ['RECSITE_ENV']}: reset-demo resets the embedded mode's demo only. Nothing deleted.")
        return 1
    var_dir = demo_var_dir()
    if not var_dir.exists():
        log(f"{var_dir} does not exist; `make run` seeds a new demo shop.")
        return 0
    # Only a folder a run has made (it always writes a secret key there), never the project,
    # home or / by a stray RECSITE_VAR_DIR.
    if var_dir in {Path("/"), Path.home().resolve(), ROOT} or var_dir in ROOT.parents or not (var_dir / "secret_key").is_file():
        log(f"{var_dir} does not look like recsite's var folder (no secret_key in it). Nothing deleted.")
        return 1
    lock = lock_var_dir(var_dir)  # exits when a `make run` is using it
    try:
        answer = input(
            f"Delete {var_dir}: the demo shop's database, models, admin account and API keys? [y/N] "
        )
    except EOFError:  # no terminal to answer
        answer = ""
    if answer.strip().lower() not in {"y", "yes"}:
        log("nothing deleted.")
        return 1
    shutil.rmtree(var_dir)
    lock.close()
    print(f"Deleted {var_dir}. `make run` seeds a new demo shop and prints a new admin password and API keys.")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reset-demo", action="store_true", help="delete the var folder (asks first)")
    args = parser.parse_args()
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsite.settings")
    return reset_demo() if args.reset_demo else run()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C while preparing, before any child started
        sys.exit(130)
