"""How every benchmark reports: figures with their reference from the same run, into bench/results/<name>.json.

``bench/run_all.py`` (``make bench``, ``make bench-quick``) runs each benchmark script,
merges these files into ``bench/results/latest.json`` and renders ``BENCHMARKS.md``.
A figure names what was measured, its reference (a peer or a baseline measured in the
same run), the ratio between them, and its target when the issue sets one.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


@dataclass
class Reference:
    name: str  # what it is: "implicit ALS (tuned)", "COPY into the same table", "minimal DRF view"
    value: float
    unit: str


@dataclass
class Target:
    op: str  # "<=" or ">="
    value: float
    unit: str
    # What the target is compared with: "value" (the figure) or "ratio" (figure / reference).
    of: str = "value"


@dataclass
class Figure:
    name: str  # "p99 latency, 10,000 products"
    value: float
    unit: str  # "ms", "events/s", "s", "MB", "" for a metric
    reference: Reference | None = None
    target: Target | None = None
    notes: str = ""
    # Filled in by figure_ratio/met below when written.
    ratio: float | None = field(default=None)
    met: bool | None = field(default=None)

    def finish(self) -> Figure:
        if self.reference is not None and self.reference.value:
            self.ratio = round(self.value / self.reference.value, 4)
        if self.target is not None:
            compared = self.ratio if self.target.of == "ratio" else self.value
            if compared is None:
                self.met = None
            elif self.target.op == "<=":
                self.met = compared <= self.target.value
            else:
                self.met = compared >= self.target.value
        return self


def machine() -> dict:
    """The machine and the versions a figure depends on."""
    import django
    import numpy
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "django": django.get_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "commit": commit,
    }


def write_result(name: str, *, figures: list[Figure], details: dict | None = None, quick: bool = False) -> Path:
    """Write bench/results/<name>.json: the figures (ratios and targets worked out) and any details."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    body = {
        "name": name,
        "quick": quick,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "figures": [asdict(f.finish()) for f in figures],
        "details": details or {},
    }
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
    return path
