"""recsite.wsgi imports every view up front and freezes what is alive then out of the collector's reach.

In a subprocess, as a server imports it (freezing the test process would change it for
every later test). What the freeze is for: a full collection over Django, DRF and
PyTorch's objects took 75 to 125 ms per worker, the recommendations API's p99 at one
connection (docs/precompute.md "Garbage collection pauses").
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import gc, json, sys
import recsite.wsgi
gc.collect()
print(json.dumps({
    "frozen": gc.get_freeze_count(),
    "left": len(gc.get_objects()),
    "views_loaded": "training.apis" in sys.modules and "dashboard.views" in sys.modules,
    "torch_loaded": "torch" in sys.modules,
}))
"""


def test_the_wsgi_module_loads_the_views_and_freezes_the_long_lived_objects(tmp_path):
    env = {**os.environ, "RECSITE_VAR_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["views_loaded"] and probe["torch_loaded"], "the URLconf was not imported before the freeze"
    assert probe["frozen"] > 100_000, probe
    assert probe["left"] < probe["frozen"] / 10, f"most objects should be frozen: {probe}"
