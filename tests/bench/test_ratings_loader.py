"""bench/_ratings.py: ``user item rating timestamp`` files in each separator (bench/quality.py --ratings)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_module():
    # bench/ is a folder of scripts, not a package: load the module from its file.
    spec = importlib.util.spec_from_file_location("bench_ratings", ROOT / "bench" / "_ratings.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


ratings = load_module()

EXPECTED = [("196", "242", 3.0, 881250949), ("186", "302", 3.0, 891717742), ("22", "377", 1.0, 878887116)]


def as_tuples(rows):
    return [(r.user, r.item, r.rating, r.timestamp) for r in rows]


@pytest.mark.parametrize("separator", ["\t", ",", "::"], ids=["tab", "comma", "double-colon"])
def test_it_reads_each_separator_to_the_same_ratings(tmp_path, separator):
    path = tmp_path / "ratings"
    path.write_text("".join(separator.join(map(str, (u, i, int(r), t))) + "\n" for u, i, r, t in EXPECTED))
    assert as_tuples(ratings.read_ratings(path)) == EXPECTED


def test_it_skips_a_header_line_and_reads_half_stars(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n")
    assert as_tuples(ratings.read_ratings(path)) == [("1", "31", 2.5, 1260759144), ("1", "1029", 3.0, 1260759179)]


def test_it_skips_blank_lines_and_ignores_extra_columns(tmp_path):
    path = tmp_path / "ratings"
    path.write_text("\n196\t242\t3\t881250949\tx\n\n186\t302\t3\t891717742\n")
    assert as_tuples(ratings.read_ratings(path)) == EXPECTED[:2]


def test_it_names_the_line_of_a_bad_rating(tmp_path):
    path = tmp_path / "ratings"
    path.write_text("196\t242\t3\t881250949\n186\t302\tgood\t891717742\n")
    with pytest.raises(ratings.RatingsFormatError, match="line 2"):
        ratings.read_ratings(path)


def test_it_refuses_a_file_with_another_separator(tmp_path):
    path = tmp_path / "ratings"
    path.write_text("196;242;3;881250949\n")
    with pytest.raises(ratings.RatingsFormatError, match="separator"):
        ratings.read_ratings(path)
