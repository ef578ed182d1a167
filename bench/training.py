"""Time a retrain on ml-100k the production way: POST /api/v1/training-runs/ -> Celery worker -> promoted.

    .venv/bin/python bench/training.py [--quick] [--dataset ../shared/datasets/ml-100k]

Creates a scratch PostgreSQL database (``recsite_bench_training``) and var directory
(``var/bench-training``, where the artifacts go), imports ml-100k with
``manage.py import_movielens`` and folds it with ``manage.py compute_engagement`` (both
timed), then starts what production runs: a Celery worker consuming the ``training``
queue (prefork, one process: the README's dedicated training worker) on Redis db 7, and
gunicorn. With both ready it POSTs /api/v1/training-runs/ with an admin key (the
trigger; ``--quick`` asks for 2 epochs, the full run for the settings' defaults) and
polls the run until it ends. Trigger -> promoted is ModelVersion.promoted_at (written
in the promotion's transaction) minus the moment before the POST, both on this machine.

The full run triggers twice, as a new shop's first two runs go: the first asks for the
settings search (``search: true``; its seconds and what it tried are reported against
the issue's 5 minutes), the second is a plain retrain that reuses the choice, and is
the one timed against the 60 s target. ``--quick`` triggers one plain run of 2 epochs.

Then, in this process with the worker stopped:

- FLOPs per epoch: one epoch of the real loop (the run's configs and rows, re-derived
  as ``training_run_execute`` splits them) under ``torch.utils.flop_counter.FlopCounterMode``
  (every matrix product forward and backward; lookups, element-wise ops and the Adam
  step count 0), divided by its examples (a pair on one channel);
- achieved FLOP/s = FLOPs per example x the run's examples/s (run.metrics["training"]),
  against the machine's peak on the worker's thread count (``TORCH_THREADS``, 1 by
  default): a 2048 x 2048 float32 matmul repeated (the all-cores peak in the details).

Writes bench/results/training.json. Without the dataset it says how to get it and writes a
skipped result, except with CI=true, where it fails. The scratch database, directory and
Redis db are cleaned up, and the worker and gunicorn stopped, even on failure.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import requests
from _results import Figure, Reference, Target, machine, write_result
from _server import drop_database, fresh_scratch, recreate_database, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "var" / "bench-training"
DEFAULT_DATASET = ROOT.parent / "shared" / "datasets" / "ml-100k"
TARGET_SECONDS = 60.0  # the issue: trigger -> promoted model on ml-100k in <= 60 s on this 2-core machine
TERMINAL = {"succeeded", "failed", "cancelled", "rejected"}
WORKER_READY_TIMEOUT = 120
RUN_TIMEOUT = 1800


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def skip_without_dataset(dataset: Path, quick: bool) -> None:
    message = (
        f"ml-100k not found at {dataset} (needs u.data and u.item). Get it from "
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip (GroupLens; research use only, "
        "not redistributable), unzip it there or pass --dataset DIR."
    )
    if os.environ.get("CI", "").lower() == "true":
        raise SystemExit(f"FAILED: {message}")
    print(f"SKIPPED: {message}", file=sys.stderr)
    write_result("training", figures=[], details={"skipped": message, "machine": machine()}, quick=quick)
    raise SystemExit(0)


def stop(process: subprocess.Popen | None, timeout: float = 60) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_worker(env: dict, log: Path) -> subprocess.Popen:
    """Start the training worker and return once it says it is ready."""
    with open(log, "wb") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "recsite", "worker", "--pool", "prefork", "--concurrency", "1",
             "--queues", "training", "--loglevel", "INFO", "--hostname", "bench-training@%h",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + WORKER_READY_TIMEOUT
    while " ready." not in log.read_text(errors="replace"):
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the Celery worker did not start")
        time.sleep(0.2)  # polling a worker starting up in another process
    return worker


def trigger_and_wait(base: str, key: str, options: dict) -> tuple[float, dict, int, float]:
    """POST the run, poll it to its end; return (time before the POST, final run, steps per epoch, poll end)."""
    session = requests.Session()
    session.headers.update({"Authorization": f"Api-Key {key}"})
    triggered = time.time()
    response = session.post(f"{base}/api/v1/training-runs/", json={"options": options}, timeout=30)
    if response.status_code != 201:
        raise SystemExit(f"POST /api/v1/training-runs/: HTTP {response.status_code} {response.text[:500]}")
    run = response.json()
    steps = 0
    deadline = time.monotonic() + RUN_TIMEOUT
    while run["status"] not in TERMINAL:
        if time.monotonic() > deadline:
            raise SystemExit(f"training run {run['id']} did not end within {RUN_TIMEOUT} s: {run['status']}")
        time.sleep(0.5)  # the run's progress is written at most once a second
        run = session.get(f"{base}/api/v1/training-runs/{run['id']}/", timeout=30).json()
        steps = max(steps, (run.get("progress") or {}).get("steps") or 0)
    return triggered, run, steps, time.time()


def epoch_flops(version) -> tuple[int, int, float]:
    """FLOPs of one epoch of the real loop, the run's own configs and rows: (FLOPs, examples, seconds).

    Re-derives the rows the run trained on as training_run_execute does, then trains one
    epoch (no validation) under ``torch.utils.flop_counter.FlopCounterMode``, which counts
    every matrix product forward and backward (fc layers, the folds, the shared negatives'
    scores); embedding lookups, element-wise ops and the Adam step count 0.
    """
    import dataclasses

    from django.conf import settings
    from torch.utils.flop_counter import FlopCounterMode

    from training.ml.data import leave_last_out, product_prior
    from training.ml.loop import TrainConfig, train
    from training.ml.model import RecommenderConfig
    from training.services.dataset import training_data_load

    data = training_data_load(recency=settings.RECSITE_TRAINING["TARGET_RECENCY"])
    inner = leave_last_out(leave_last_out(data.interactions).train)
    model_config = RecommenderConfig.from_dict(version.config["model"])
    train_config = dataclasses.replace(TrainConfig.from_dict(version.config["train"]), epochs=1, device="cpu")
    counter = FlopCounterMode(display=False)
    started = time.perf_counter()
    with counter:
        result = train(model_config=model_config, train_config=train_config, train=inner.train, validation=None,
                       prior=product_prior(inner.train), channel_weights=data.channel_weights)  # fmt: skip
    seconds = time.perf_counter() - started
    examples = round(result.examples_per_second * result.history[0]["seconds"]) if result.history else 0
    return int(counter.get_total_flops()), examples, seconds


def peak_matmul_flops(threads: int, size: int, repeats: int, rounds: int = 3) -> float:
    """Best FLOP/s of ``repeats`` float32 size x size matmuls over ``rounds``, on ``threads`` threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=generator)
        b = torch.randn(size, size, generator=generator)
        out = torch.empty(size, size)
        for _ in range(2):
            torch.mm(a, b, out=out)  # warm up
        best = math.inf
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(repeats):
                torch.mm(a, b, out=out)
            best = min(best, time.perf_counter() - started)
        return repeats * 2 * size**3 / best
    finally:
        torch.set_num_threads(before)


def train_config_batch(version) -> int:
    return int(version.config["train"]["batch_size"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 epochs (the CI smoke test)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--epochs", type=int, default=None, help="default: the settings' (quick: 2)")
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/recsite_bench_training")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/7")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    dataset = args.dataset.resolve()
    if not ((dataset / "u.data").is_file() and (dataset / "u.item").is_file()):
        skip_without_dataset(dataset, args.quick)
    epochs = args.epochs or (2 if args.quick else None)
    options = {"epochs": epochs} if epochs else {}
    # The full run first searches the settings (a shop's first run does), then retrains with
    # the choice: the second run is the one timed against the target. Quick: one plain run.
    runs_options = [options | {"search": False}] if args.quick else [options | {"search": True}, options]

    import redis

    recreate_database(args.database)
    broker = redis.Redis.from_url(args.redis)
    broker.flushdb()  # no message of an earlier, interrupted run reaches this worker
    fresh_scratch(SCRATCH)

    env = {
        "DATABASE_URL": args.database,
        "REDIS_URL": args.redis,
        "CELERY_BROKER_URL": args.redis,
        "RECSITE_VAR_DIR": str(SCRATCH),
        "RECSITE_MODEL_DIR": str(SCRATCH / "models"),
        "RECSITE_API_KEY_RATE": "1000000/min",
        "RECSITE_RETRAIN_EVERY_HOURS": "0",
        "LOG_LEVEL": "INFO",
        "DJANGO_SETTINGS_MODULE": "recsite.settings",
    }
    full_env = {**os.environ, **env}
    python = sys.executable
    worker = server = None
    failed = True
    timings: dict[str, float] = {}

    def manage(*command: str) -> str:
        started = time.perf_counter()
        out = subprocess.run([python, "manage.py", *command], cwd=ROOT, env=full_env, check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        timings[command[0]] = round(time.perf_counter() - started, 2)
        return out.strip()

    try:
        manage("migrate", "-v", "0")
        imported = manage("import_movielens", str(dataset))
        folded = manage("compute_engagement")
        key = manage("create_api_key", "bench-training", "--admin").splitlines()[-1]

        started = time.perf_counter()
        worker = start_worker(full_env, SCRATCH / "worker.log")
        timings["worker_start"] = round(time.perf_counter() - started, 2)
        port = free_port()
        with open(SCRATCH / "gunicorn.log", "wb") as log_file:
            server = subprocess.Popen(
                [python, "-m", "gunicorn", "recsite.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1",
                 "--log-level", "warning"],
                cwd=ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(base, server)

        searched = None
        for run_options in runs_options:
            triggered, run, steps_seen, ended = trigger_and_wait(base, key, run_options)
            if run_options.get("search"):
                searched, searched_seconds = run, ended - triggered
        stop(server)
        stop(worker)
        server = worker = None

        # This process reads the run and rebuilds the model with the server's settings.
        os.environ.update(env)
        # ROOT first: bench/ (this script's directory, first on the path) has a training.py,
        # this file, that would shadow the training app.
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        import torch

        from training.models import ModelVersion, TrainingRun

        row = TrainingRun.objects.get(pk=run["id"])
        version = ModelVersion.objects.filter(training_run=row).first()
        metrics = row.metrics or {}
        training = metrics.get("training", {})
        if version is None:
            raise SystemExit(f"training run {row.pk} {row.status} without a model version: {row.error}")
        from django.conf import settings

        threads = settings.RECSITE_TRAINING["TORCH_THREADS"]  # what the worker trained on
        cores = os.cpu_count() or 1
        torch.set_num_threads(threads)
        flops_epoch, examples_epoch, counted_seconds = epoch_flops(version)
        peak = peak_matmul_flops(cores, size=2048, repeats=3 if args.quick else 10)
        peak_one_thread = peak_matmul_flops(1, size=2048, repeats=2 if args.quick else 5)
        failed = False
    finally:
        stop(server)
        stop(worker)
        if failed:
            for name in ("worker.log", "gunicorn.log"):
                log = SCRATCH / name
                if log.exists():
                    print(f"--- {name} (tail) ---\n" + log.read_text(errors="replace")[-3000:], file=sys.stderr)
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        drop_database(args.database)
        broker.flushdb()
        shutil.rmtree(SCRATCH, ignore_errors=True)

    promoted = row.status == "succeeded" and version.promoted_at is not None
    searched_wall = searched_seconds if searched is not None else 0.0
    end = version.promoted_at.timestamp() if promoted else (row.finished_at or datetime.now()).timestamp()
    wall = end - triggered
    examples_per_second = float(training.get("examples_per_second") or 0)
    per_example = flops_epoch / examples_epoch if examples_epoch else 0.0
    achieved = per_example * examples_per_second
    problems = []
    if not promoted:
        message = f"run {row.pk} ended {row.status}, not promoted: {row.error}"
        if args.quick and row.status == "rejected":
            print(f"note: {message} (2 epochs may not beat popularity; the path still ran)")
        else:
            problems.append(message)
    search = (searched or {}).get("metrics", {}).get("search") if searched else None
    if searched is not None and not search:
        problems.append(f"run {searched['id']} was asked to search and recorded no search: {searched.get('error')}")

    epochs_run = training.get("epochs_run", 0)
    figures = [
        Figure(
            name="training run on ml-100k, trigger -> promoted (POST /api/v1/training-runs/, Celery worker)",
            value=round(wall, 2),
            unit="s",
            reference=Reference("the same run inside the worker: fold, load, train, evaluate, save "
                                "(metrics.total_seconds)", float(metrics.get("total_seconds", 0)), "s"),  # fmt: skip
            target=Target("<=", TARGET_SECONDS, "s") if promoted else None,
            notes=f"{epochs_run} epochs (best {training.get('best_epoch')}), status {row.status}",
        ),
        Figure(
            name="training examples/s (the loop, run.metrics)",
            value=round(examples_per_second),
            unit="examples/s",
            notes=f"batch {train_config_batch(version)}, {threads} torch threads; an example is one pair on one channel",
        ),
        Figure(
            name="FLOPs per training epoch (FlopCounterMode over one epoch of the real loop)",
            value=flops_epoch,
            unit="FLOP",
            notes=f"{examples_epoch:,} examples per epoch, {per_example:,.0f} FLOPs per example",
        ),
        Figure(
            name="achieved FLOP/s in training (FLOPs per example x the loop's examples/s)",
            value=round(achieved / 1e9, 2),
            unit="GFLOP/s",
            reference=Reference(f"machine peak: 2048 x 2048 float32 matmul, {threads} torch thread(s), as the "
                                "worker trains", round(peak_one_thread / 1e9, 2), "GFLOP/s"),  # fmt: skip
            target=Target(">=", 0.2, "", of="ratio"),
            notes=f"all {cores} cores' matmul peak: {peak / 1e9:.1f} GFLOP/s, ratio {achieved / peak:.3g}",
        ),
    ]
    if search:
        figures.append(
            Figure(
                name="settings search inside the first training run on ml-100k (configurations tried)",
                value=search["seconds"],
                unit="s",
                reference=Reference("its budget, RECSITE_TRAINING_SEARCH_SECONDS", search["budget_seconds"], "s"),
                target=Target("<=", 300.0, "s"),
                notes=f"{len(search['tried'])} tried, {len(search['skipped'])} left out; chose {search['chosen']}; "
                f"first run trigger -> end {searched_wall:.1f} s",
            )
        )
    history = row.history or []
    details = {
        "what": "POST /api/v1/training-runs/ on PostgreSQL, a Celery worker (prefork, 1 process, queue "
        "'training', Redis) trains, evaluates and promotes; ml-100k imported with manage.py import_movielens",
        "dataset": str(dataset),
        "options": options,
        "setup_seconds": timings,
        "import_output": imported.splitlines()[-3:],
        "fold_output": folded,
        "run": {
            "id": row.pk,
            "status": row.status,
            "error": row.error,
            "trigger_to_started_s": round(row.started_at.timestamp() - triggered, 2) if row.started_at else None,
            "started_to_finished_s": round((row.finished_at - row.started_at).total_seconds(), 2)
            if row.started_at and row.finished_at
            else None,
            "trigger_to_promoted_s": round(wall, 2) if promoted else None,
            "trigger_to_seen_by_poll_s": round(ended - triggered, 2),
            "history": history,
        },
        "metrics": {name: metrics.get(name) for name in ("training", "model", "popularity", "data", "gate",
                                                           "total_seconds")},  # fmt: skip
        "model_config": version.config,
        "flops": {
            "per_epoch": flops_epoch,
            "examples_per_epoch": examples_epoch,
            "per_example": round(per_example),
            "counted_epoch_seconds": round(counted_seconds, 2),
            "not_counted": "embedding lookups and their gradients, element-wise ops, the Adam step",
            "steps_per_epoch_reported": steps_seen,
            "achieved_flops_per_second": round(achieved),
            "peak_flops_per_second": {f"{threads}_threads": round(peak_one_thread), f"{cores}_threads": round(peak)},
            "torch_threads": threads,
        },
        "search": search,
        "peak_matmul_gflops": {f"{cores}_threads": round(peak / 1e9, 2), "1_thread": round(peak_one_thread / 1e9, 2)},
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
        "problems": problems,
    }
    path = write_result("training", figures=figures, details=details, quick=args.quick)
    print(f"trigger -> {'promoted' if promoted else row.status}: {wall:.1f} s "
          f"(in the worker {metrics.get('total_seconds')} s; {epochs_run} epochs)")  # fmt: skip
    print(f"examples/s: loop {examples_per_second:,.0f}; FLOPs per epoch {flops_epoch:.3e} ({examples_epoch:,} "
          f"examples)")  # fmt: skip
    print(f"achieved {achieved / 1e9:.1f} GFLOP/s, matmul peak {peak_one_thread / 1e9:.1f} GFLOP/s on {threads} "
          f"thread(s) (ratio {achieved / peak_one_thread:.3f}), {peak / 1e9:.1f} on {cores}")  # fmt: skip
    if search:
        print(f"search: {search['seconds']} s, {len(search['tried'])} tried, chose {search['chosen']}")
    print(f"-> {path}")
    if problems:
        raise SystemExit("FAILED: " + "; ".join(problems))


if __name__ == "__main__":
    main()
