"""Test settings: speed-ups only (STYLE 12); everything else is recsite.settings."""

import os
from pathlib import Path

# Tests keep their runtime files (SQLite file, broker folders, cache) apart from `make run`'s.
os.environ.setdefault("RECSITE_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))

from recsite.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
