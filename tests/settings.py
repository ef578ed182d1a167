"""Test settings: speed-ups only (STYLE 12); everything else is recsite.settings."""

import os
from pathlib import Path

# Tests keep their runtime files (SQLite file, broker folders, cache) apart from `make run`'s.
os.environ.setdefault("RECSITE_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))

# Training runs in tests live inside a test transaction, where a heartbeat thread (its
# own connection) would wait on the test's lock; tests that need heartbeats set these.
os.environ.setdefault("RECSITE_TRAINING_HEARTBEAT_SECONDS", "3600")
os.environ.setdefault("RECSITE_TRAINING_STALE_SECONDS", "7300")
# A training run in a test trains once; the tests of the settings search turn it on.
os.environ.setdefault("RECSITE_TRAINING_SEARCH_SECONDS", "0")

from recsite.settings import *

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
