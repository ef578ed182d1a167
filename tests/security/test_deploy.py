"""Production settings pass Django's deployment checks; an unhandled error says nothing but "500".

The checks run ``manage.py`` in a subprocess with only what production sets in its
environment. The errors are raised by real views in a real gunicorn with DEBUG off
(``server_urls.py``), and each answer is searched for what must not leak.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys

import pytest
import requests

from tests.celery_worker import ROOT
from tests.security.conftest import make_key
from tests.security.server_urls import LEAK, SQL

# What a leaked answer would contain: Django's and Python's own words, the secrets raised
# with the error, SQL, and the names of settings.
LEAK_MARKERS = [
    "Traceback", 'File "', "RuntimeError", "ProgrammingError", "bug in", "hunter2", "s3cr3t", "SELECT",
    "engagement_customer", "SECRET_KEY", "DATABASE_URL", "DEBUG", "INSTALLED_APPS", "/work/", ".py",
]  # fmt: skip
GENERIC = {"detail": "Internal server error."}


def _manage_in_production(tmp_path, *args: str, **overrides: str | None) -> subprocess.CompletedProcess:
    # A clean environment: only what production sets, nothing from the test run's own mode.
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "recsite.settings",
        "RECSITE_ENV": "production",
        "RECSITE_VAR_DIR": str(tmp_path),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": "postgres://recsite@db.internal:5432/recsite",
        "ALLOWED_HOSTS": "recs.shop.example",
        "REDIS_URL": "redis://redis.internal:6379/0",
    }
    env.update(overrides)
    env = {name: value for name, value in env.items() if value is not None}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def _issues(output: str) -> list[str]:
    return re.findall(r"\(([a-z_.]+\.[EW]\d+)\)", output)


def test_production_settings_pass_the_deployment_checks_at_warning_level(tmp_path, figure):
    result = _manage_in_production(tmp_path, "check", "--deploy", "--fail-level", "WARNING")
    # The same check with DEBUG on must fail: the checks run, and they would see a mistake.
    debug_on = _manage_in_production(tmp_path, "check", "--deploy", "--fail-level", "WARNING", DEBUG="true")

    figure(
        "deploy_check", exit=result.returncode, issues=len(_issues(result.stdout + result.stderr)),
        debug_on_exit=debug_on.returncode, debug_on_issues=",".join(_issues(debug_on.stdout + debug_on.stderr)),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert _issues(result.stdout + result.stderr) == []
    assert debug_on.returncode != 0
    assert "security.W018" in _issues(debug_on.stdout + debug_on.stderr)


def test_it_refuses_to_start_in_production_without_a_secret_key(tmp_path):
    result = _manage_in_production(tmp_path, "check", SECRET_KEY=None)
    assert result.returncode != 0
    assert "Set the environment variable SECRET_KEY." in result.stderr
    # No key was generated in its place.
    assert not (tmp_path / "secret_key").exists()


def _leaks(text: str) -> list[str]:
    return [marker for marker in LEAK_MARKERS if marker in text]


@pytest.mark.usefixtures("transactional_db")
def test_an_unhandled_error_answers_a_generic_500_with_no_traceback_sql_or_settings(security_server, figure):
    key = make_key("security 500", "ingest", "recommend")
    headers = {"Authorization": f"Api-Key {key}"}
    url = security_server.url
    log_before = security_server.log_path.read_text(errors="replace")

    answers = {
        "api view (RuntimeError)": requests.get(f"{url}/api/v1/test-broken/", headers=headers, timeout=30),
        "api view (SQL error)": requests.post(f"{url}/api/v1/test-broken/", json={}, headers=headers, timeout=30),
        "api, outside DRF": requests.get(f"{url}/api/v1/test-broken-plain/", timeout=30),
        "page": requests.get(f"{url}/test-broken/", timeout=30),
    }
    log = security_server.log_path.read_text(errors="replace")[len(log_before) :]

    leaks = {name: _leaks(response.text + str(dict(response.headers))) for name, response in answers.items()}
    figure(
        "generic_500", requests=len(answers), status_500=sum(r.status_code == 500 for r in answers.values()),
        generic_json=sum(r.headers.get("Content-Type") == "application/json" and r.json() == GENERIC
                         for r in answers.values() if r.request.url.startswith(f"{url}/api/")),
        leaking_answers=sum(bool(found) for found in leaks.values()),
        tracebacks_in_server_log=log.count("Traceback"),
    )  # fmt: skip
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(answers, 500)
    for name in ("api view (RuntimeError)", "api view (SQL error)", "api, outside DRF"):
        assert answers[name].headers["Content-Type"] == "application/json", name
        assert answers[name].json() == GENERIC, name
    assert "<h1>Server Error (500)</h1>" in answers["page"].text  # Django's own page, its only words
    assert leaks == dict.fromkeys(answers, [])
    # Not lost either: each error is in the server's log, with its traceback and its words.
    assert log.count("Traceback") >= len(answers), log
    assert LEAK in log and SQL.split(" FROM")[0] in log
