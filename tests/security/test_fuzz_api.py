"""Fuzzing (issue 6, item 12): schemathesis against /api/schema/ on gunicorn, every default check, stateful too.

The app is a gunicorn like the fault tests' (tests/faults/conftest.py: 2 workers; PostgreSQL
and Redis in the PostgreSQL pass, SQLite and the file-system broker otherwise; training
runs routed to a queue of their own, see fuzz_server), with a
model version and an ended training run in the database, so that ids in paths can be
found. schemathesis runs as its CLI does in CI (``schemathesis run``), with:

- every check it runs by default (schema, status code, content type and header
  conformance, negative data rejected, valid data accepted, unsupported methods,
  ignored authentication, use after free, resource availability, ...), plus
  ``every_item_of_a_batch_is_answered`` (tests/security/fuzz_checks.py), which stands
  in for the two whole-request checks on the two batch operations (events, catalog);
- 100 examples per operation and phase, the stateful phase following the schema's
  links (a started training run -> that run -> cancel it; a listed version -> promote);
- deterministic generation and no example database, so CI sees the same run every time.

The figure: operations tested, test cases generated, stateful scenarios and steps, failures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from engagement.models import Customer, InteractionEvent
from tests.celery_worker import ROOT
from tests.faults.conftest import (  # noqa: F401 (fixtures)
    _fault_settings,
    _fresh_popular_cache,
    admin_key,
    app_env,
    db_proxy,
    fault_model_dir,
    figure,
    gunicorn_server,
    make_catalog,
    make_version,
    redis_proxy,
)
from tests.security.fuzz_settings import FUZZ_TRAINING_QUEUE
from training.models import ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)

MAX_EXAMPLES = 100
# A bound, not a timing assertion: a hung run fails here instead of at CI's limit.
RUN_TIMEOUT_SECONDS = 600

CONFIG = f"""
# tests/security/test_fuzz_api.py writes this file for each run.
[generation]
max-examples = {MAX_EXAMPLES}
deterministic = true

[phases.stateful]
max-steps = 6

# The batch operations answer each item apart (see tests/security/fuzz_checks.py).
[[operations]]
include-path = "/api/v1/events/"
checks.negative_data_rejection.enabled = false
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/api/v1/products/"
include-method = "PUT"
checks.negative_data_rejection.enabled = false
checks.positive_data_acceptance.enabled = false
"""


def _seed_shop() -> None:
    """A catalog, a model version over it, and an ended run: ids the links and the fuzzer can find."""
    customer_ids, product_ids = make_catalog(customers=20, products=30)
    make_version(customer_ids=customer_ids, product_ids=product_ids, seed=1, status=ModelVersion.Status.CANDIDATE)
    TrainingRun.objects.create(status=TrainingRun.Status.SUCCEEDED, triggered_by="fuzz")


@pytest.fixture(scope="module")
def fuzz_server(app_env, tmp_path_factory):
    """gunicorn as app_server, but sending training runs to FUZZ_TRAINING_QUEUE (tests/security/fuzz_settings.py).

    The fuzzer starts real training runs (POST /training-runs/ with the admin key). Sent to
    the usual "training" queue, they would wait there for the next test's worker, and
    purging the broker (as this test once did) would also drop what any other test using
    the same broker had queued. On a queue of their own, no worker ever reads them
    (workers consume "celery" and "training" only), and purging that queue afterwards
    touches nothing else.
    """
    env = app_env(DJANGO_SETTINGS_MODULE="tests.security.fuzz_settings")
    try:
        with gunicorn_server(env, tmp_path_factory.mktemp("fuzz-gunicorn") / "gunicorn.log") as server:
            yield server
    finally:
        _purge_fuzz_training_queue()


def _purge_fuzz_training_queue() -> int:
    """Drop the messages of the runs the fuzzer started, and only those; return how many."""
    from recsite.celery import app

    with app.connection_for_write() as connection:
        return connection.default_channel.queue_purge(FUZZ_TRAINING_QUEUE) or 0


def _forget_started_runs() -> None:
    """End the runs the fuzzer started, so the database says none is in flight."""
    TrainingRun.objects.filter(status__in=TrainingRun.IN_FLIGHT).update(status=TrainingRun.Status.CANCELLED)


def _run_schemathesis(*, url: str, key: str, workdir: Path) -> tuple[subprocess.CompletedProcess, dict, list[dict]]:
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    report, events = workdir / "report.json", workdir / "events.ndjson"
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color",
        "run", f"{url}/api/schema/", "--header", f"Authorization: Api-Key {key}",
        "--workers", "1", "--report", "json,ndjson",
        "--report-json-path", str(report), "--report-ndjson-path", str(events),
    ]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.security.fuzz_checks", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS
    )  # fmt: skip
    lines = events.read_text().splitlines() if events.exists() else []
    return result, json.loads(report.read_text()) if report.exists() else {}, [json.loads(line) for line in lines]


def _case_counts(events: list[dict]) -> tuple[Counter, dict[str, int]]:
    """From the NDJSON event stream: test cases per phase, and per operation in the fuzzing phase."""
    per_phase, fuzzed = Counter(), Counter()
    for event in events:
        finished = event.get("ScenarioFinished")
        if not finished or not finished.get("recorder"):
            continue
        cases = [case["value"] for case in finished["recorder"].get("cases", {}).values()]
        per_phase[finished["phase"]] += len(cases)
        if finished["phase"] == "stateful":
            per_phase["stateful_scenarios"] += 1
            per_phase["stateful_linked_steps"] += sum(
                1 for case in finished["recorder"].get("cases", {}).values() if case.get("is_transition_applied")
            )
        if finished["phase"] == "fuzzing":
            fuzzed.update(f"{case['method']} {case['path']}" for case in cases)
    return per_phase, dict(fuzzed)


def test_schemathesis_finds_no_failure_with_every_default_check_and_the_stateful_phase(
    fuzz_server, admin_key, figure, tmp_path
):
    _seed_shop()

    try:
        result, report, events = _run_schemathesis(url=fuzz_server.url, key=admin_key, workdir=tmp_path)
    finally:
        _forget_started_runs()
    started_runs = TrainingRun.objects.exclude(task_id="").count()  # each was sent once, to the fuzz queue
    queued_messages = _purge_fuzz_training_queue()

    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.log").write_text(output)  # the whole of it, for a failure's reader
    assert report, f"schemathesis wrote no report (exit {result.returncode}):\n{output[-6000:]}"
    per_phase, fuzzed = _case_counts(events)
    figure(
        "fuzz_api",
        operations=report["operations"]["tested"],
        test_cases=report["test_cases"]["generated"],
        coverage_cases=per_phase["coverage"],
        fuzzing_cases=per_phase["fuzzing"],
        fuzzing_cases_per_operation_min=min(fuzzed.values(), default=0),
        fuzzing_cases_per_operation_max=max(fuzzed.values(), default=0),
        stateful_scenarios=per_phase["stateful_scenarios"],
        stateful_steps=per_phase["stateful"],
        stateful_linked_steps=per_phase["stateful_linked_steps"],
        failures=report["test_cases"]["unique_failures"],
        errors=len(report["errors"]),
        seconds=round(report["running_time"], 1),
        events_stored=InteractionEvent.objects.count(),
        customers=Customer.objects.count(),
        training_runs_started=started_runs,
        training_messages_purged=queued_messages,
    )
    assert report["operations"]["tested"] == report["operations"]["selected"] > 0, output[-6000:]
    assert {name: phase["status"] for name, phase in report["phases"].items()} | {"examples": "n/a"} == {
        "examples": "n/a",  # the schema gives no examples: that phase has nothing to run
        "coverage": "success",
        "fuzzing": "success",
        "stateful": "success",
    }, output[-6000:]
    assert report["failures"] == [] and report["errors"] == [], output[-6000:]
    assert result.returncode == 0, output[-6000:]
    assert per_phase["stateful_linked_steps"] > 0, "the stateful phase followed no link"
    # Every run the fuzzer started waited in the fuzz queue, none in the workers' "training" queue.
    assert queued_messages == started_runs > 0, (queued_messages, started_runs)
    assert len(fuzzed) == report["operations"]["tested"] and min(fuzzed.values()) >= MAX_EXAMPLES, fuzzed
