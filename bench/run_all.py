"""Run every benchmark, merge their figures into bench/results/latest.json, render BENCHMARKS.md.

    .venv/bin/python bench/run_all.py            # make bench: the full measurements
    .venv/bin/python bench/run_all.py --quick    # make bench-quick: small runs, CI's smoke test
    .venv/bin/python bench/run_all.py --only serving fold --merge   # rerun two, keep the rest

Each benchmark is its own script (``bench/<name>.py [--quick]``) that writes
``bench/results/<name>.json`` through ``bench/_results.py``; they run one after another
so none measures while another loads the machine. A script that fails is reported and
the others still run; the exit status is non-zero if any failed. Targets that are not
met do not fail the run: they are marked in the table, which is the point of measuring.
``quality`` measures every data set (``bench/quality.py`` runs all of them by default;
up to 2 hours in full), ``quality_yoochoose`` YooChoose's engagement against click-only.
``--quick`` asserts no speed and renders to ``bench/results/BENCHMARKS.quick.md``, so
the committed BENCHMARKS.md always holds a full run.

``--merge`` keeps the other benchmarks' entries of the previous ``latest.json`` (of the
same kind, full or quick) instead of dropping them: each entry says when it ran, and
every figure's reference still comes from the same script run as the figure. It lets
the slow, load-insensitive quality benchmarks run apart from the timed ones.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

from _results import RESULTS, ROOT, machine

# In the order; each is bench/<name>.py writing bench/results/<name>.json.
BENCHMARKS = [
    "quality", "quality_yoochoose", "session", "serving", "precompute", "ingest", "fold", "training", "serving_memory",
]  # fmt: skip
SCRIPT_FOR = {"ingest": "ingest_api"}  # results named differently from their script
TIMEOUT_SECONDS = {"quick": 600, "full": 3600}
# quality.py measures every data set in one run (ml-100k, YooChoose, DIGINETICA, OTTO): more time in full.
TIMEOUT_SECONDS_FOR = {"quality": {"quick": 600, "full": 7200}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small runs: check the harness, assert no speed")
    parser.add_argument("--only", nargs="*", default=None, help="run only these benchmarks")
    parser.add_argument("--merge", action="store_true", help="keep the previous latest.json's other benchmarks")
    args = parser.parse_args()
    names = args.only or BENCHMARKS
    started = datetime.now(UTC)
    runs = {}
    for name in names:
        script = ROOT / "bench" / f"{SCRIPT_FOR.get(name, name)}.py"
        command = [sys.executable, str(script), *(["--quick"] if args.quick else [])]
        print(f"bench: {name}: {' '.join(command[1:])}", flush=True)
        began, began_at = time.monotonic(), datetime.now(UTC)
        load_at_start = round(os.getloadavg()[0], 2)  # 1-minute load: was the machine quiet?
        try:
            timeout = TIMEOUT_SECONDS_FOR.get(name, TIMEOUT_SECONDS)["quick" if args.quick else "full"]
            completed = subprocess.run(command, cwd=ROOT, timeout=timeout)
            status = "ok" if completed.returncode == 0 else f"exit {completed.returncode}"
        except subprocess.TimeoutExpired:
            status = "timed out"
        seconds = round(time.monotonic() - began, 1)
        result = _fresh_result(name, since=started)
        if status == "ok" and result is None:
            status = "wrote no result"
        runs[name] = {"status": status, "started_at": began_at.isoformat(timespec="seconds"), "seconds": seconds,
                      "load_at_start": load_at_start, "result": result}  # fmt: skip
        print(f"bench: {name}: {status} in {seconds} s", flush=True)

    if args.merge:
        runs = _merged(runs, quick=args.quick)
    latest = {
        "quick": args.quick,
        "started_at": min([started.isoformat(timespec="seconds")]
                          + [run["started_at"] for run in runs.values() if run.get("started_at")]),  # fmt: skip
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "benchmarks": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(latest, indent=2, default=str) + "\n")
    markdown = ROOT / ("bench/results/BENCHMARKS.quick.md" if args.quick else "BENCHMARKS.md")
    markdown.write_text(render(latest))
    failed = [name for name, run in runs.items() if run["status"] != "ok"]
    print(f"bench: wrote {RESULTS / 'latest.json'} and {markdown.relative_to(ROOT)}"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))  # fmt: skip
    sys.exit(1 if failed else 0)


def _merged(runs: dict, *, quick: bool) -> dict:
    """Return the previous latest.json's benchmarks (same kind) with this run's in place of theirs, in BENCHMARKS order."""
    path = RESULTS / "latest.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    kept = previous.get("benchmarks", {}) if previous.get("quick") == quick else {}
    for run in kept.values():
        run.setdefault("started_at", previous.get("started_at"))
    merged = kept | runs
    order = {name: i for i, name in enumerate(BENCHMARKS)}
    return dict(sorted(merged.items(), key=lambda item: order.get(item[0], len(order))))


def _fresh_result(name: str, *, since: datetime) -> dict | None:
    """Return bench/results/<name>.json if this run wrote it (not one left from an earlier run)."""
    path = RESULTS / f"{name}.json"
    if not path.exists() or datetime.fromtimestamp(path.stat().st_mtime, UTC) < since:
        return None
    return json.loads(path.read_text())


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    if float(value).is_integer() or abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.4g}"
    return f"{text} {unit}".strip()


def render(latest: dict) -> str:
    """Return BENCHMARKS.md: one table row per figure, its reference from the same run and the ratio."""
    m = latest["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/run_all.py`) from `bench/results/latest.json`; do not edit by hand.",
        "Every reference was measured in the same run on the same machine.",
        "",
        f"- Run: {latest['started_at']} to {latest['finished_at']}{' (quick: smoke sizes, not figures)' if latest['quick'] else ''}",
        f"- Machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gb']} GiB; {m['platform']}",
        f"- Versions: Python {m['python']}, Django {m['django']}, PyTorch {m['torch']}, NumPy {m['numpy']}; commit {m['commit']}",
        "- Each benchmark, when it started and its wall time: "
        + ", ".join(f"{name} at {run.get('started_at') or '?'} ({run['seconds']} s, load {run.get('load_at_start', '?')})"
                    for name, run in latest["benchmarks"].items()),  # fmt: skip
        "",
        "| benchmark | figure | value | reference (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for name, run in latest["benchmarks"].items():
        result = run.get("result")
        if run["status"] != "ok" or not result:
            lines.append(f"| {name} | **{run['status']}** | | | | | |")
            continue
        for figure in result["figures"]:
            reference = figure.get("reference")
            target = figure.get("target")
            ref_text = f"{reference['name']}: {_number(reference['value'], reference['unit'])}" if reference else "–"
            ratio = f"{figure['ratio']:.3g}" if figure.get("ratio") is not None else "–"
            if target:
                target_text = f"{'ratio' if target.get('of') == 'ratio' else ''} {target['op']} {_number(target['value'], target['unit'] if target.get('of') != 'ratio' else '')}".strip()
            else:
                target_text = "–"
            met = {True: "yes", False: "**no**", None: "–"}[figure.get("met")]
            lines.append(
                f"| {name} | {figure['name']} | {_number(figure['value'], figure['unit'])} | {ref_text} | {ratio} | {target_text} | {met} |"
            )
            if figure.get("notes"):
                notes.append(f"- {name}, {figure['name']}: {figure['notes']}")
    if notes:
        lines += ["", "## Notes", "", *notes]
    lines += ["", "How each is measured: the docstring at the top of each `bench/<name>.py`; details (every config tried,",
              "latency distributions, sizes) are in `bench/results/<name>.json` after a run.", ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
