"""bench/_datasets.py: each data set's rows become the events the shop would send (bench/quality.py --data)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings

BENCH = str(Path(__file__).resolve().parents[2] / "bench")
if BENCH not in sys.path:
    sys.path.append(BENCH)  # after the project: bench/training.py must not shadow the training package

import _datasets  # noqa: E402

HOUR_MS = 3_600_000


def by_time(events):
    return sorted(events, key=lambda e: (e.customer, e.occurred_at))


def summary(events):
    return [(e.customer, e.product, e.clicked, e.hover_ms, e.dwell_ms, e.occurred_at) for e in by_time(events)]


def test_the_limit_one_event_may_carry_is_an_hour():
    # The tests below spell the cap out; the API's limit is where it comes from.
    assert settings.RECSITE_INGEST["MAX_SIGNAL_MS"] == HOUR_MS


# --- DIGINETICA ---


def write_diginetica(path: Path) -> Path:
    path.write_text(
        "session_id;user_id;item_id;timeframe;eventdate\n"
        "1;NA;81766;526309;2016-05-09\n"  # out of time order within the session, as in the real file
        "1;NA;31331;1031018;2016-05-09\n"
        "1;NA;32118;243569;2016-05-09\n"
        "2;77;500;0;2016-01-03\n"
        "2;77;501;5000000;2016-01-03\n"  # 5000 s after the previous view: the dwell is capped
        "\n"
    )
    return path


def test_diginetica_views_become_clicks_of_sessions_with_the_gap_to_the_next_view_as_dwell(tmp_path):
    events = _datasets.diginetica_events(write_diginetica(tmp_path / "views.csv"))
    may9 = datetime(2016, 5, 9, tzinfo=UTC)
    jan3 = datetime(2016, 1, 3, tzinfo=UTC)
    assert summary(events) == [
        ("dg-1", "dg-32118", True, 0, 526309 - 243569, may9 + timedelta(milliseconds=243569)),
        ("dg-1", "dg-81766", True, 0, 1031018 - 526309, may9 + timedelta(milliseconds=526309)),
        ("dg-1", "dg-31331", True, 0, 0, may9 + timedelta(milliseconds=1031018)),  # the last view: unknown, 0
        ("dg-2", "dg-500", True, 0, HOUR_MS, jan3),
        ("dg-2", "dg-501", True, 0, 0, jan3 + timedelta(milliseconds=5000000)),
    ]


def test_diginetica_event_ids_are_the_same_on_every_read_and_a_repeated_row_has_the_same_id(tmp_path):
    path = write_diginetica(tmp_path / "views.csv")
    first = [e.event_id for e in _datasets.diginetica_events(path)]
    assert first == [e.event_id for e in _datasets.diginetica_events(path)]
    assert len(set(first)) == len(first)
    path.write_text(path.read_text() + "2;77;501;5000000;2016-01-03\n")
    again = _datasets.diginetica_events(path)
    assert len(again) == 6 and len({e.event_id for e in again}) == 5


def test_diginetica_refuses_a_file_without_its_header(tmp_path):
    path = tmp_path / "views.csv"
    path.write_text("1;NA;81766;526309;2016-05-09\n")
    with pytest.raises(SystemExit, match="header"):
        _datasets.diginetica_events(path)


# --- OTTO ---


def write_otto(path: Path) -> Path:
    sessions = [
        {"session": 0, "events": [
            {"aid": 10, "ts": 1659304800000, "type": "clicks"},
            {"aid": 11, "ts": 1659304830000, "type": "clicks"},  # 30 s later
            {"aid": 11, "ts": 1659304900000, "type": "carts"},
            {"aid": 11, "ts": 1659400000000, "type": "orders"},
            {"aid": 12, "ts": 1659400000000, "type": "orders"},
        ]},
        {"session": 1, "events": [
            {"aid": 10, "ts": 1659304800000, "type": "clicks"},
            {"aid": 13, "ts": 1659404800000, "type": "clicks"},  # more than an hour later: capped
            {"aid": 14, "ts": 1659404810000, "type": "clicks"},  # the session's last event
        ]},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(s) + "\n" for s in sessions))
    return path


def test_otto_clicks_carry_the_gap_to_the_next_event_and_carts_and_orders_a_full_dwell(tmp_path):
    events = _datasets.otto_events(write_otto(tmp_path / "train.jsonl"))
    full = settings.RECSITE_ENGAGEMENT["DWELL_CAP_MS"]

    def at(ms):
        return datetime.fromtimestamp(ms / 1000, UTC)

    assert [(e.customer, e.product, e.clicked, e.hover_ms, e.dwell_ms, e.occurred_at) for e in events] == [
        ("otto-0", "otto-10", True, 0, 30_000, at(1659304800000)),
        ("otto-0", "otto-11", True, 0, 70_000, at(1659304830000)),
        ("otto-0", "otto-11", True, 0, full, at(1659304900000)),  # cart
        ("otto-0", "otto-11", True, 0, full, at(1659400000000)),  # order
        ("otto-0", "otto-12", True, 0, full, at(1659400000000)),  # order: last, still a full dwell
        ("otto-1", "otto-10", True, 0, HOUR_MS, at(1659304800000)),
        ("otto-1", "otto-13", True, 0, 10_000, at(1659404800000)),
        ("otto-1", "otto-14", True, 0, 0, at(1659404810000)),
    ]
    ids = [e.event_id for e in events]
    assert len(set(ids)) == len(ids)
    assert ids == [e.event_id for e in _datasets.otto_events(tmp_path / "train.jsonl")]


def test_otto_refuses_an_unknown_event_type(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"session": 0, "events": [{"aid": 1, "ts": 1, "type": "views"}]}) + "\n")
    with pytest.raises(SystemExit, match="views"):
        _datasets.otto_events(path)


# --- YooChoose ---


def write_yoochoose(directory: Path) -> Path:
    train, test = _datasets.YOOCHOOSE_FILES
    (directory / train).write_text(
        "SessionId\tItemId\tTime\n"
        "1\t214536502\t1396321232.0\n"
        "1\t214536500\t1396321262.5\n"  # 30.5 s later
        "1\t214536506\t1396328000.0\n"  # more than an hour later: the previous dwell is capped
    )
    (directory / test).write_text("SessionId\tItemId\tTime\n9\t214536502\t1396850000.0\n9\t214840762\t1396850010.0\n")
    return directory


def test_yoochoose_clicks_of_both_files_become_clicks_of_sessions_with_the_gap_to_the_next_click(tmp_path):
    events = _datasets.yoochoose_events(write_yoochoose(tmp_path))

    def at(seconds):
        return datetime.fromtimestamp(seconds, UTC)

    assert summary(events) == [
        ("yc-1", "yc-214536502", True, 0, 30_500, at(1396321232.0)),
        ("yc-1", "yc-214536500", True, 0, HOUR_MS, at(1396321262.5)),
        ("yc-1", "yc-214536506", True, 0, 0, at(1396328000.0)),
        ("yc-9", "yc-214536502", True, 0, 10_000, at(1396850000.0)),
        ("yc-9", "yc-214840762", True, 0, 0, at(1396850010.0)),
    ]
    rows = _datasets.read_clicks(tmp_path)
    assert [e.dwell_ms for e in _datasets.click_events(rows, dwell=False)] == [0] * 5
    assert {e.event_id for e in events} == {e.event_id for e in _datasets.click_events(rows, dwell=False)}


# --- finding the files ---


def test_each_data_set_is_found_under_recsite_datasets_and_names_its_first_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSITE_DATASETS", str(tmp_path))
    otto = _datasets.DATASETS["otto"]
    assert otto.missing() == tmp_path / "otto-sample" / "train.jsonl"
    (tmp_path / "otto-sample").mkdir()
    write_otto(tmp_path / "otto-sample" / "train.jsonl")
    assert otto.missing() is None
    assert len(list(otto.events())) == 8
    assert otto.noise  # its figures are marked as noise
    yoochoose = _datasets.DATASETS["yoochoose"]
    (tmp_path / "yoochoose-rsc15-100k").mkdir()
    (tmp_path / "yoochoose-rsc15-100k" / _datasets.YOOCHOOSE_FILES[0]).write_text("SessionId\tItemId\tTime\n")
    assert yoochoose.missing() == tmp_path / "yoochoose-rsc15-100k" / _datasets.YOOCHOOSE_FILES[1]


def test_a_ratings_file_is_a_data_set_named_after_the_file(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,4.0,1260759179\n")
    dataset = _datasets.ratings_dataset(path)
    assert dataset.name == "ratings.csv" and dataset.missing() is None
    events = list(dataset.events())
    assert [(e.customer, e.product, e.clicked) for e in events] == [("ml-1", "ml-31", False), ("ml-1", "ml-1029", True)]
    assert events[0].occurred_at == datetime.fromtimestamp(1260759144, UTC)
