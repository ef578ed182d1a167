"""A bench-only Django site: recsite plus the reference views the serving benchmark compares with.

Used only by ``bench/serving.py`` (gunicorn gets ``--pythonpath bench`` and
``DJANGO_SETTINGS_MODULE=bench_site.settings``); the shipped URLs never include it.
"""
