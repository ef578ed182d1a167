"""Settings of the security tests' gunicorn: the test settings, plus URLs that raise (server_urls.py)."""

from tests.settings import *  # noqa: F403

ROOT_URLCONF = "tests.security.server_urls"
