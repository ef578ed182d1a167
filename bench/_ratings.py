"""Read a ratings file of ``user item rating timestamp`` lines (bench/quality.py ``--ratings``).

The separator is tab (MovieLens 100k ``u.data``), comma (MovieLens ``ratings.csv``) or
``::`` (MovieLens 1M/10M ``ratings.dat``), detected from the first line that has data.
A first line whose rating or timestamp is not a number is a header and skipped
(``userId,movieId,rating,timestamp``). Extra columns after the fourth are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SEPARATORS = ("::", "\t", ",")


class RatingsFormatError(ValueError):
    """The file is not ``user item rating timestamp`` lines in one of SEPARATORS."""


@dataclass(frozen=True)
class Rating:
    user: str
    item: str
    rating: float  # as in the file: 1-5 stars, or half stars (0.5-5.0) in later MovieLens releases
    timestamp: int  # Unix seconds


def detect_separator(line: str) -> str:
    """Return the separator of one data (or header) line: ``::`` first, since it is the longest."""
    for separator in SEPARATORS:
        if len(line.split(separator)) >= 4:
            return separator
    raise RatingsFormatError(
        f"cannot tell the separator of {line.strip()!r}: expected user, item, rating, timestamp "
        "separated by tab, comma or '::'."
    )


def _parse(line: str, separator: str, number: int) -> Rating:
    parts = [part.strip() for part in line.strip().split(separator)]
    if len(parts) < 4 or not parts[0] or not parts[1]:
        raise RatingsFormatError(f"line {number}: expected user, item, rating, timestamp: {line.strip()!r}.")
    try:
        # Some exports write the timestamp as a float ("881250949.0").
        return Rating(parts[0], parts[1], float(parts[2]), int(float(parts[3])))
    except ValueError:
        raise RatingsFormatError(f"line {number}: rating and timestamp must be numbers: {line.strip()!r}.") from None


def read_ratings(path: Path | str) -> list[Rating]:
    """Return every rating in the file, in file order; a bad line is an error naming its number."""
    ratings: list[Rating] = []
    separator: str | None = None
    # Latin-1 reads any byte: MovieLens files are Latin-1, and ids are compared as text anyway.
    with Path(path).open(encoding="latin-1") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            if separator is None:
                separator = detect_separator(line)
                try:
                    ratings.append(_parse(line, separator, number))
                except RatingsFormatError:
                    continue  # the header
                continue
            ratings.append(_parse(line, separator, number))
    return ratings
