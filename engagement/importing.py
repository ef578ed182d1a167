"""Read event files and MovieLens directories into ``EventIn`` / ``ProductIn`` (docs/data.md).

The management commands are thin: they open files, show progress and print totals.
Rows are validated by the API's own serializer, so a file and a request accept the
same events.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO


from engagement.apis import EventInputSerializer, validate_each
from engagement.services import CatalogResult, EventIn, ProductIn, events_ingest, products_upsert

EVENT_FIELDS = ("event_id", "customer", "product", "hover_ms", "dwell_ms", "clicked", "occurred_at")
REQUIRED_COLUMNS = ("event_id", "customer", "product")
_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


@dataclass
class ChunkedIngest:
    """Collect events and store them through ``events_ingest`` a chunk at a time."""

    chunk_size: int = 1000
    accepted: int = 0
    duplicates: int = 0
    _pending: list[EventIn] = field(default_factory=list)

    def add(self, events: list[EventIn]) -> None:
        self._pending.extend(events)
        while len(self._pending) >= self.chunk_size:
            self._store(self._pending[: self.chunk_size])
            del self._pending[: self.chunk_size]

    def flush(self) -> None:
        if self._pending:
            self._store(self._pending)
            self._pending = []

    def _store(self, events: list[EventIn]) -> None:
        # One transaction per chunk: a failure loses at most one chunk, and re-running
        # the import is safe because event ids make it idempotent.
        result = events_ingest(events=events)
        self.accepted += result.accepted
        self.duplicates += result.duplicates


def upsert_catalog_in_chunks(products: list[ProductIn], chunk_size: int = 1000) -> CatalogResult:
    """Upsert a catalog of any size through ``products_upsert``, one transaction per chunk."""
    created = updated = 0
    for start in range(0, len(products), chunk_size):
        result = products_upsert(products=products[start : start + chunk_size])
        created, updated = created + result.created, updated + result.updated
    return CatalogResult(created=created, updated=updated)


# --- event files (CSV with a header, or JSON Lines) ---


class FileFormatError(ValueError):
    """The file as a whole can't be read as events (not one row: all of them)."""


@dataclass(frozen=True)
class RowError:
    line: int
    errors: dict

    def __str__(self) -> str:
        parts = []
        for name, messages in self.errors.items():
            text = "; ".join(str(m) for m in messages) if isinstance(messages, list) else str(messages)
            parts.append(f"{name}: {text}")
        return f"line {self.line}: " + " | ".join(parts)


def count_lines(path: Path) -> int:
    """Count lines for a progress bar (a fast binary pass)."""
    with path.open("rb") as stream:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: stream.read(1 << 20), b""))


def infer_format(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(suffix)


def _csv_value(name: str, text: str) -> object:
    """Turn one CSV cell into the JSON type the API expects; ValueError when it can't."""
    if name in ("hover_ms", "dwell_ms"):
        try:
            return int(text)
        except ValueError:
            raise ValueError("A valid integer is required.") from None
    if name == "clicked":
        lowered = text.lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise ValueError("Must be true or false (also accepted: 1/0, yes/no).")
    return text


def read_csv_rows(stream: TextIO) -> Iterator[tuple[int, dict | RowError]]:
    """Yield (line number, raw event or conversion error); the header is line 1."""
    reader = csv.reader(stream)
    header = [name.strip() for name in next(reader, [])]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise FileFormatError(f"The header (line 1) lacks the column(s) {', '.join(missing)}.")
    previous = reader.line_num
    for row in reader:
        # line_num counts physical lines, so a quoted multi-line cell keeps later numbers right.
        line, previous = previous + 1, reader.line_num
        if not row:
            continue
        if len(row) != len(header):
            yield line, RowError(line, {"non_field_errors": [f"Expected {len(header)} fields, got {len(row)}."]})
            continue
        item, errors = {}, {}
        for name, text in zip(header, row):
            text = text.strip()
            if name not in EVENT_FIELDS or text == "":
                continue  # empty cell: the field's default applies, as if left out of JSON
            try:
                item[name] = _csv_value(name, text)
            except ValueError as exc:
                errors[name] = [str(exc)]
        yield line, RowError(line, errors) if errors else item


def read_jsonl_rows(stream: TextIO) -> Iterator[tuple[int, object]]:
    """Yield (line number, decoded JSON value or error); blank lines are skipped."""
    for line, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            yield line, json.loads(text)
        except json.JSONDecodeError as exc:
            yield line, RowError(line, {"non_field_errors": [f"Not valid JSON: {exc.msg}."]})


def validate_rows(rows: list[tuple[int, object]]) -> tuple[list[EventIn], list[RowError]]:
    """Validate with the API's rules; a missing ``occurred_at`` means now, as in the API.

    Left None, so ingest stamps it with the receive time itself, as for the API: the
    click-fraud check then knows the time is not the shop's (docs/engagement.md "Click fraud").
    """
    errors = [item for _, item in rows if isinstance(item, RowError)]
    candidates = [(line, item) for line, item in rows if not isinstance(item, RowError)]
    valid, rejected = validate_each(EventInputSerializer(), [item for _, item in candidates])
    errors += [RowError(candidates[r["index"]][0], r["errors"]) for r in rejected]
    errors.sort(key=lambda e: e.line)
    return [EventIn(**{"occurred_at": None, **data}) for data in valid], errors


# --- MovieLens (ml-100k: u.data + u.item; ml-1m: ratings.dat + movies.dat) ---

# Fixed so event ids are the same on every machine and every run (idempotent import).
MOVIELENS_NAMESPACE = uuid.UUID("0c6a1f38-9a3e-4d55-8a0b-6f1e2b7d4c90")
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
# rating -> (hover ms, dwell ms); monotone in the rating; clicked means rating >= 4.
# The table is in docs/data.md: change both together.
RATING_SIGNALS: dict[int, tuple[int, int]] = {
    1: (800, 0),
    2: (1_200, 5_000),
    3: (1_600, 20_000),
    4: (2_000, 60_000),
    5: (2_500, 180_000),
}
CLICK_MIN_RATING = 4
NAME_MAX_LENGTH = 300  # Product.name


@dataclass(frozen=True)
class MovieLensFiles:
    ratings: Path
    items: Path
    separator: str  # "\t" for u.data; "::" for ratings.dat


def movielens_files(directory: Path) -> MovieLensFiles:
    """Find the ratings and items files of an ml-100k or ml-1m style directory."""
    if (directory / "u.data").is_file() and (directory / "u.item").is_file():
        return MovieLensFiles(directory / "u.data", directory / "u.item", "\t")
    if (directory / "ratings.dat").is_file() and (directory / "movies.dat").is_file():
        return MovieLensFiles(directory / "ratings.dat", directory / "movies.dat", "::")
    raise FileNotFoundError(
        f"{directory} has neither u.data + u.item (ml-100k) nor ratings.dat + movies.dat (ml-1m)."
    )


def movielens_products(files: MovieLensFiles) -> list[ProductIn]:
    """Read the movies; the category is the first genre listed (flag set, or named)."""
    products = []
    # Both releases are Latin-1 (a few titles have accented letters).
    with files.items.open(encoding="latin-1") as stream:
        for line, text in enumerate(stream, start=1):
            text = text.rstrip("\r\n")
            if not text:
                continue
            if files.separator == "\t":  # u.item: id|title|dates|url|19 genre flags
                fields = text.split("|")
                genres = [g for g, flag in zip(ML100K_GENRES, fields[5:]) if flag == "1"]
            else:  # movies.dat: id::title::Genre1|Genre2
                fields = text.split("::")
                genres = fields[2].split("|") if len(fields) > 2 else []
            if len(fields) < 2 or not fields[0].strip():
                raise FileFormatError(f"{files.items.name} line {line}: expected an id and a title.")
            products.append(
                ProductIn(
                    product=f"ml-{fields[0]}",
                    name=fields[1][:NAME_MAX_LENGTH],
                    category=genres[0] if genres else "unknown",
                    price=None,
                    active=True,
                )
            )
    return products


def movielens_event(user: str, item: str, rating: int, timestamp: int) -> EventIn:
    """Map one rating onto the shop's signals (RATING_SIGNALS); the id makes it idempotent."""
    hover_ms, dwell_ms = RATING_SIGNALS[rating]
    return EventIn(
        event_id=uuid.uuid5(MOVIELENS_NAMESPACE, f"movielens:{user}:{item}:{timestamp}"),
        customer=f"ml-{user}",
        product=f"ml-{item}",
        hover_ms=hover_ms,
        dwell_ms=dwell_ms,
        clicked=rating >= CLICK_MIN_RATING,
        occurred_at=datetime.fromtimestamp(timestamp, UTC),
    )


def read_movielens_ratings(files: MovieLensFiles) -> Iterator[tuple[int, EventIn | RowError]]:
    """Yield (line number, event or error) for each rating line."""
    with files.ratings.open(encoding="latin-1") as stream:
        for line, text in enumerate(stream, start=1):
            if not text.strip():
                continue
            parts = text.strip().split(files.separator)
            try:
                user, item, rating, timestamp = parts
                event = movielens_event(user, item, int(rating), int(timestamp))
            except (ValueError, KeyError):
                message = f"Expected user, item, rating 1-5, timestamp: {text.strip()!r}."
                yield line, RowError(line, {"non_field_errors": [message]})
                continue
            yield line, event
