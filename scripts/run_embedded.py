"""Run recsite on one machine: prepare the database, then serve web + worker + scheduler.

`make run` calls this with the project's virtual environment. Steps: migrate,
collectstatic, seed a demo shop when the database is empty, make sure the admin user
and a demo API key exist, then start gunicorn, a Celery worker and Celery beat, and
supervise them until Ctrl-C or SIGTERM.

Environment: PORT (default 8000), RECSITE_SEED=0 (skip the demo data),
RECSITE_DEMO_SIZE=small (a small demo shop), and everything recsite/settings.py reads.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# How long the children get to finish in-flight requests and tasks before SIGKILL.
STOP_TIMEOUT_SECONDS = 15
DEMO_SIZES = {"small": ["--customers", "200", "--products", "60", "--events", "5000"], "full": []}


def prepare(base_url: str) -> None:
    """Migrate, collect static files, seed the demo shop once, make sure the admin exists."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

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
    call_command("ensure_admin", base_url=base_url)
    # The children open their own connections; the supervisor keeps none open.
    connections.close_all()


def die_with_parent() -> None:
    """Have the kernel SIGTERM this child if the supervisor dies without stopping it (SIGKILL)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def has_exited(proc: subprocess.Popen) -> bool:
    """Say whether the child has exited, without reaping it.

    WNOWAIT leaves it a zombie, so its pid (which is also its process group id) can't
    be reused before stop_all() has SIGKILLed whatever is left in that group.
    """
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def stop_all(procs: dict[str, subprocess.Popen]) -> bool:
    """SIGTERM each child, wait, SIGKILL stragglers; True when none needed SIGKILL."""
    for proc in procs.values():
        if not has_exited(proc):
            # To the leader only: gunicorn's master and Celery's main process stop their own
            # workers gracefully; signalling the whole group would cut that short.
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while time.monotonic() < deadline and not all(has_exited(p) for p in procs.values()):
        time.sleep(0.1)
    clean = True
    for name, proc in procs.items():
        if not has_exited(proc):
            print(f"run_embedded: {name} did not stop in {STOP_TIMEOUT_SECONDS} s; killing it.", flush=True)
            clean = False
        # Also catches grandchildren (gunicorn or pool workers) whose parent died first.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return clean


def main() -> int:
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsite.settings")
    port = int(os.environ.get("PORT", "8000"))
    base_url = f"http://127.0.0.1:{port}"
    prepare(base_url)

    received: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        # Installed before the children start, so no signal can leave them orphaned.
        signal.signal(signum, lambda signum, frame: received.append(signum))

    py = sys.executable
    commands = {
        # No control socket: its default path is shared by every gunicorn of this user,
        # and nothing here uses it.
        "web": [py, "-m", "gunicorn", "recsite.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                "--graceful-timeout", str(STOP_TIMEOUT_SECONDS - 5), "--no-control-socket"],
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
            # A session of its own: Ctrl-C in the terminal reaches only this supervisor,
            # which stops the children in order instead of each prompting or dying mid-task.
            procs[name] = subprocess.Popen(command, start_new_session=True, preexec_fn=die_with_parent)
        print(
            "\n".join(
                [
                    "recsite is running (Ctrl-C stops it):",
                    f"  dashboard: {base_url}/dashboard/  (log in as admin with the password printed above)",
                    f"  admin:     {base_url}/admin/",
                    f"  API docs:  {base_url}/api/docs/",
                    f"  health:    {base_url}/healthz",
                ]
            ),
            flush=True,
        )
        failed = None
        while not received and failed is None:
            failed = next((name for name, proc in procs.items() if has_exited(proc)), None)
            time.sleep(0.2)
    finally:
        clean = stop_all(procs)
    if failed is not None:
        print(f"run_embedded: {failed} exited with code {procs[failed].returncode}; stopped the others.", flush=True)
        return 1
    print("run_embedded: stopped.", flush=True)
    return 0 if clean else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C while preparing, before any child started
        sys.exit(130)
