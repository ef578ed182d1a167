"""recsite's settings, with the bench-only URLs on top."""

from recsite.settings import *  # noqa: F403 (every setting as the real site has it)

ROOT_URLCONF = "bench_site.urls"
