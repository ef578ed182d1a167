"""The WSGI application (gunicorn in production, waitress under ``make run``).

After Django is set up, the URLconf (and with it every view, DRF and PyTorch) is
imported here rather than on the first request, and everything alive then is moved out
of the garbage collector's reach (``gc.freeze``): those ~260,000 objects live as long
as the process, yet every full collection walked them all, 75 to 125 ms with the GIL
held, which a request that happened to trigger it waited for. That was the tail of the
recommendations API: p99 56 to 68 ms at 1 connection against a p50 of 6.7 ms
(bench/serving.py, 10,000 products; docs/precompute.md "Garbage collection pauses").
Objects made later are collected as before; reference counting still frees frozen
ones that become unreachable, only a cycle among them would stay.
"""

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsite.settings")

application = get_wsgi_application()
get_resolver().url_patterns  # noqa: B018 (imports every view now, not in the first request)
gc.collect()  # nothing that is garbage already gets frozen
gc.freeze()
