"""Fault tests: the real processes (gunicorn, Celery worker and beat) on the real services.

The app's processes reach PostgreSQL and Redis through a TCP proxy (tests/faults/proxy.py),
which a test cuts to make a server disappear for them and restores to bring it back;
the test process itself talks to both directly, so it can count what was stored while
the app cannot. Every test prints one ``FIGURE <name>: k=v ...`` line and appends it as
JSON to var/test-artifacts/figures.jsonl (docs/reliability.md has the table).

These tests commit rows (``transactional_db``): the app runs in other processes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest
import requests
import torch
from django.conf import settings

from engagement.models import ALL_SCOPES, Customer, Product, ShopApiKey
from engagement.selectors import popular_cache_clear
from tests.celery_worker import ROOT, _die_with_parent, worker_env
from tests.conftest import ON_POSTGRES
from tests.faults.proxy import ProxyProcess, free_port
from training.ml.artifact import save_artifact
from training.ml.model import RecommenderConfig, RecommenderNN
from training.models import ModelVersion
from training.serving import serving_reset

FIGURES = ROOT / "var" / "test-artifacts" / "figures.jsonl"
GUNICORN_WORKERS = 2
START_TIMEOUT_SECONDS = 90
# How often a web process asks which model is promoted (production default: 2 s).
SERVING_REFRESH_SECONDS = 0.5
ON_REDIS = settings.CELERY_BROKER_URL.startswith("redis")
DATABASE = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]


def needs_postgres_and_redis(why: str):
    """Skip in the SQLite pass, saying why; the PostgreSQL pass (make test-postgres), which CI runs, has it."""
    return pytest.mark.skipif(
        not (ON_POSTGRES and ON_REDIS), reason=f"needs PostgreSQL and Redis ({why}): runs in the PostgreSQL pass"
    )


# --- figures ---


@pytest.fixture
def figure(request, capsys):
    """Return ``record(name, **values)``: print one FIGURE line and append it to figures.jsonl."""

    def record(name: str, **values) -> None:
        line = f"FIGURE {name}: " + " ".join(f"{key}={value}" for key, value in values.items())
        with capsys.disabled():
            print(f"\n{line}")
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "figure": name, "test": request.node.nodeid, "database": DATABASE,
            "broker": settings.CELERY_BROKER_URL.split("://")[0], "at": datetime.now(UTC).isoformat(timespec="seconds"),
            **values,
        }  # fmt: skip
        with FIGURES.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

    return record


# --- the proxies and the app's environment ---


def _redis_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def _via(url: str, proxy: ProxyProcess) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{proxy.port}" if credentials else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture(scope="session")
def db_proxy():
    """The app's way to PostgreSQL (None on SQLite: there is no server to lose)."""
    if not ON_POSTGRES:
        yield None
        return
    conf = settings.DATABASES["default"]
    proxy = ProxyProcess(conf["HOST"] or "127.0.0.1", int(conf["PORT"] or 5432))
    yield proxy
    proxy.close()


@pytest.fixture(scope="session")
def redis_proxy():
    """The app's way to Redis, broker and cache (None with the file-system broker)."""
    if not ON_REDIS:
        yield None
        return
    proxy = ProxyProcess(*_redis_address(settings.CELERY_BROKER_URL))
    yield proxy
    proxy.close()


@pytest.fixture(scope="session")
def fault_model_dir() -> Path:
    """Model artifacts of this session's fault tests (shared by the test, gunicorn and workers)."""
    path = Path(settings.VAR_DIR) / "fault-models"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="session")
def app_env(django_db_setup, db_proxy, redis_proxy, fault_model_dir):
    """Return ``env(proxied=True, **extra)``: the environment of an app process on the test database."""

    def env(*, proxied: bool = True, **extra: str) -> dict[str, str]:
        values = worker_env(
            RECSITE_MODEL_DIR=str(fault_model_dir),
            # The fault tests send far more than a shop's key is allowed; the throttle
            # still reads and writes its cache on every request.
            RECSITE_API_KEY_RATE="100000000/min",
            RECSITE_SERVING_REFRESH_SECONDS=str(SERVING_REFRESH_SECONDS),
            RECSITE_RETRAIN_EVERY_HOURS="0",
            **extra,
        )
        if proxied and db_proxy is not None:
            values["DATABASE_URL"] = _via(values["DATABASE_URL"], db_proxy)
        if proxied and redis_proxy is not None:
            for name in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
                if values.get(name, "").startswith("redis"):
                    values[name] = _via(values[name], redis_proxy)
        return values

    return env


@pytest.fixture(autouse=True)
def _fault_settings(settings, fault_model_dir, db_proxy, redis_proxy):
    """The test process reads and writes the artifacts the app serves; every proxy starts restored."""
    settings.RECSITE_TRAINING = {**settings.RECSITE_TRAINING, "MODEL_DIR": fault_model_dir,
                                 "SERVING_REFRESH_SECONDS": 0.0}  # fmt: skip
    serving_reset()
    for proxy in (db_proxy, redis_proxy):
        if proxy is not None:
            proxy.restore()
    yield
    for proxy in (db_proxy, redis_proxy):
        if proxy is not None:
            proxy.restore()


# --- gunicorn ---


@dataclass
class AppServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_until_serving(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            requests.get(f"{url}/healthz", timeout=2)
            return
        except requests.RequestException:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not start. Its log:\n{log_path.read_text()[-4000:]}", pytrace=False)
            time.sleep(0.2)  # polling a server starting up in another process


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def gunicorn_server(env: dict[str, str], log_path: Path, *, workers: int = GUNICORN_WORKERS) -> Iterator[AppServer]:
    """Start ``recsite.wsgi`` under gunicorn with ``env`` on a free port; stop it on leaving."""
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "recsite.wsgi", "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--timeout", "60", "--log-level", "warning",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
    server = AppServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_until_serving(server.url, process, log_path)
        yield server
    finally:
        stop(process)


@pytest.fixture(scope="session")
def app_server(app_env, tmp_path_factory):
    """gunicorn with GUNICORN_WORKERS sync workers, reaching the services through the proxies."""
    with gunicorn_server(app_env(), tmp_path_factory.mktemp("gunicorn") / "gunicorn.log") as server:
        yield server


def wait_until_every_worker_serves(app_server: AppServer, urls: list[str], key: str, version_id: int) -> None:
    """Send requests until every gunicorn worker has loaded ``version_id`` (each logs it once).

    Until then a worker may still hold the previous test's model, or nothing at all, for
    up to a refresh interval. Many clients at once, so the requests queue up and every
    worker accepts some (a lone client is often served by one worker only).
    """
    loaded = f"Serving model version {version_id}."
    deadline = time.monotonic() + 30
    while app_server.log_path.read_text().count(loaded) < GUNICORN_WORKERS:
        assert time.monotonic() < deadline, f"the workers did not load version {version_id}:\n{app_server.log_tail()}"
        with Load(urls, key, clients=4 * GUNICORN_WORKERS, rate=2000):
            time.sleep(0.5)


def start_beat(*, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start ``celery -A recsite beat`` with its schedule file next to its log."""
    command = [sys.executable, "-m", "celery", "-A", "recsite", "beat", "--loglevel", "INFO",
               "--schedule", str(log_path.with_suffix(".schedule"))]  # fmt: skip
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a process and every descendant (a machine or container lost); return the pids."""
    pids, stack = [], [pid]
    while stack:
        current = stack.pop()
        pids.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            children = []
        stack.extend(int(child) for child in children)
    for current in pids:
        try:
            os.kill(current, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


# --- data and clients ---


@pytest.fixture
def shop_key(transactional_db) -> str:
    _, key = ShopApiKey.objects.create_key(name="faults shop")
    return key


@pytest.fixture
def admin_key(transactional_db) -> str:
    _, key = ShopApiKey.objects.create_key(name="faults admin", scopes=list(ALL_SCOPES))
    return key


@pytest.fixture(autouse=True)
def _fresh_popular_cache(request):
    if "transactional_db" in request.fixturenames:
        popular_cache_clear()


def session_for(key: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Api-Key {key}"
    return session


def make_catalog(*, customers: int, products: int) -> tuple[list[str], list[str]]:
    """Store customers c-0.. and products p-0..; return their ids."""
    customer_ids = [f"c-{i}" for i in range(customers)]
    product_ids = [f"p-{i}" for i in range(products)]
    Customer.objects.bulk_create([Customer(external_id=c) for c in customer_ids], ignore_conflicts=True)
    Product.objects.bulk_create([Product(external_id=p, name=p) for p in product_ids], ignore_conflicts=True)
    return customer_ids, product_ids


def make_version(*, customer_ids: list[str], product_ids: list[str], seed: int, **fields) -> ModelVersion:
    """Store an untrained (seeded) model over these ids as a candidate ModelVersion."""
    torch.manual_seed(seed)
    config = RecommenderConfig(num_customers=len(customer_ids), num_products=len(product_ids), embed_dim=8)
    name = f"faults-{seed}-{time.time_ns()}.pt"
    sha256 = save_artifact(
        settings.RECSITE_TRAINING["MODEL_DIR"] / name, model=RecommenderNN(config), config=config,
        prior=np.zeros(len(product_ids), dtype=np.float32), customer_ids=customer_ids, product_ids=product_ids,
        channel_weights=(0.2, 0.4, 0.4), metrics={},
    )  # fmt: skip
    return ModelVersion.objects.create(
        artifact_path=name, sha256=sha256, config={"model": config.to_dict()}, customer_ids=customer_ids,
        product_ids=product_ids, **fields,
    )  # fmt: skip


@dataclass
class Answer:
    started: float  # time.monotonic()
    ended: float
    status: int | None  # None: no HTTP answer (connection refused or reset)
    body: dict | None
    error: str | None = None


class Load:
    """Client threads sending GETs to ``urls`` at about ``rate`` requests/s in all, until stopped.

    ``with Load(...) as load:`` runs them; ``load.answers`` has every request's outcome.
    """

    def __init__(self, urls: list[str], key: str, *, clients: int, rate: float, timeout: float = 30) -> None:
        self.urls, self.key, self.clients, self.rate, self.timeout = urls, key, clients, rate, timeout
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)]

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self.ended = time.monotonic()

    def _client(self, n: int) -> None:
        interval = self.clients / self.rate
        next_at = time.monotonic() + n * interval / self.clients
        i = n
        with session_for(self.key) as session:
            while not self._stop.is_set():
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing: the load is a rate, not as fast as possible
                next_at = max(next_at + interval, time.monotonic() - interval)
                url = self.urls[i % len(self.urls)]
                i += self.clients
                started = time.monotonic()
                try:
                    response = session.get(url, timeout=self.timeout)
                except requests.RequestException as exc:
                    self.answers.append(Answer(started, time.monotonic(), None, None, repr(exc)))
                    continue
                try:
                    body = response.json()
                except ValueError:
                    body = None
                self.answers.append(Answer(started, time.monotonic(), response.status_code, body))

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for answer in self.answers:
            name = str(answer.status) if answer.status is not None else "no-answer"
            counts[name] = counts.get(name, 0) + 1
        return counts

    def rate_achieved(self) -> float:
        return round(len(self.answers) / (self.ended - self.started), 1)

    def latency_ms(self, quantile: float) -> float:
        times = sorted(a.ended - a.started for a in self.answers)
        if not times:
            return 0.0
        if quantile == 0.5:
            return round(statistics.median(times) * 1000, 1)
        return round(times[min(len(times) - 1, int(quantile * len(times)))] * 1000, 1)


def make_events(count: int, *, seed: int, customers: int = 300, products: int = 120) -> list[dict]:
    """``count`` distinct events with seeded ids, as the shop sends them."""
    rng = random.Random(seed)
    occurred_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    return [
        {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "customer": f"c-{rng.randrange(customers)}",
            "product": f"p-{rng.randrange(products)}",
            "hover_ms": rng.randrange(8_000),
            "dwell_ms": rng.randrange(120_000),
            "clicked": rng.random() < 0.1,
            "occurred_at": occurred_at,
        }
        for _ in range(count)
    ]


def batches_of(events: list[dict], size: int) -> list[list[dict]]:
    return [events[i : i + size] for i in range(0, len(events), size)]
