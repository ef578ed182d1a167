"""Production settings pass Django's deployment checks and refuse to start without secrets."""

import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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


def test_it_passes_the_deployment_checks_in_production(tmp_path):
    result = _manage_in_production(tmp_path, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_refuses_to_start_in_production_without_a_secret_key(tmp_path):
    result = _manage_in_production(tmp_path, "check", SECRET_KEY=None)
    assert result.returncode != 0
    assert "Set the environment variable SECRET_KEY." in result.stderr
    # No key was generated in its place.
    assert not (tmp_path / "secret_key").exists()
