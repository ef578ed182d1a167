"""The benchmark harness: figures work out their ratio and target, and the table shows each with its reference."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _results import Figure, Reference, Target  # noqa: E402
from run_all import render  # noqa: E402


def test_a_figure_works_out_its_ratio_to_the_reference_and_whether_it_meets_a_ratio_target():
    figure = Figure("full NDCG@10", 0.05, "", reference=Reference("ALS", 0.04, ""), target=Target(">=", 1.0, "", of="ratio"))
    figure.finish()
    assert figure.ratio == pytest.approx(1.25)
    assert figure.met is True


@pytest.mark.parametrize(("value", "met"), [(9.9, True), (10.0, True), (10.1, False)])
def test_a_value_target_is_met_only_within_its_bound(value, met):
    assert Figure("p99", value, "ms", target=Target("<=", 10.0, "ms")).finish().met is met


def test_a_figure_without_a_reference_has_no_ratio_and_a_ratio_target_stays_undecided():
    figure = Figure("events/s", 100.0, "events/s", target=Target(">=", 0.5, "", of="ratio")).finish()
    assert figure.ratio is None and figure.met is None


def test_the_table_has_a_row_per_figure_with_reference_ratio_target_and_failures_marked():
    good = Figure("p99, 10,000 products", 8.0, "ms", reference=Reference("minimal view", 2.0, "ms"),
                  target=Target("<=", 10.0, "ms")).finish()  # fmt: skip
    missed = Figure("fold 1M events", 25.0, "s", target=Target("<=", 20.0, "s")).finish()
    latest = {
        "quick": False, "started_at": "2026-11-28T05:00:00+00:00", "finished_at": "2026-11-28T05:30:00+00:00",
        "machine": {"cpu": "x", "cpus": 2, "memory_gb": 24, "platform": "linux", "python": "3.11", "django": "5.2",
                    "torch": "2.13", "numpy": "2", "commit": "abc"},
        "benchmarks": {
            "serving": {"status": "ok", "seconds": 1, "result": {"figures": [asdict(good)]}},
            "fold": {"status": "ok", "seconds": 1, "result": {"figures": [asdict(missed)]}},
            "quality": {"status": "exit 1", "seconds": 1, "result": None},
        },
    }  # fmt: skip
    table = render(latest)
    assert "| serving | p99, 10,000 products | 8 ms | minimal view: 2 ms | 4 | <= 10 ms | yes |" in table
    assert "| fold | fold 1M events | 25 s | – | – | <= 20 s | **no** |" in table
    assert "| quality | **exit 1** |" in table


def test_merge_keeps_the_previous_runs_other_benchmarks_and_puts_this_runs_in_their_place(tmp_path, monkeypatch):
    import json

    import run_all

    monkeypatch.setattr(run_all, "RESULTS", tmp_path)
    previous = {"quick": False, "started_at": "2026-11-28T05:00:00+00:00",
                "benchmarks": {"quality": {"status": "ok", "seconds": 600, "result": {"figures": []}},
                               "fold": {"status": "exit 1", "seconds": 3, "result": None}}}  # fmt: skip
    (tmp_path / "latest.json").write_text(json.dumps(previous))
    fold = {"status": "ok", "started_at": "2026-11-28T06:00:00+00:00", "seconds": 30, "result": {"figures": []}}
    merged = run_all._merged({"fold": fold}, quick=False)
    assert list(merged) == ["quality", "fold"]  # BENCHMARKS order
    assert merged["fold"] == fold
    assert merged["quality"]["started_at"] == "2026-11-28T05:00:00+00:00"
    assert run_all._merged({"fold": fold}, quick=True) == {"fold": fold}  # a quick run never mixes with a full one
