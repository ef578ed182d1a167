"""The data sets bench/quality.py measures on, each read into the events a shop would send.

Every loader yields ``engagement.services.events.EventIn`` events, as the ingest API
would store them; ``quality.interactions_from_events`` then folds them exactly as the
database path does. Files are found under ``$RECSITE_DATASETS`` or ``../shared/datasets``
(``datasets_dir``); each data set's DATASET.md there says where it comes from.

- ``ratings`` (ml-100k's ``u.data``, or any ``--ratings`` file): each rating is the
  event ``manage.py import_movielens`` stores (``rating_event``).
- ``yoochoose`` (yoochoose-rsc15-100k, train_full + test): each click is an event of
  customer ``yc-<session>`` on ``yc-<item>``, ``clicked``, dwell = the gap to the
  session's next click (``click_events``).
- ``diginetica`` (diginetica-sample): each product view is an event of ``dg-<session>``
  on ``dg-<item>``, ``clicked``, dwell = the gap in ``timeframe`` to the session's next
  view; ``occurred_at`` = ``eventdate`` (UTC midnight) + ``timeframe`` ms
  (``diginetica_events``). ``user_id`` is not used: sessions are the customers.
- ``otto`` (otto-sample, 20 sessions): clicks, carts and orders of ``otto-<session>`` on
  ``otto-<aid>`` (``otto_events``). Too small for accuracy figures (its DATASET.md).

Dwell is never guessed: a session's last event has no next one, so its dwell is 0. A
gap is capped at the API's limit for one event (RECSITE_INGEST MAX_SIGNAL_MS, 1 hour);
the engagement score clips it further (RECSITE_ENGAGEMENT DWELL_CAP_MS). Event ids are
uuid5 of the row, so a rerun gives the same ids and a repeated row collapses into one
stored event, as in the API.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsite.settings")
os.environ.setdefault("RECSITE_VAR_DIR", str(ROOT / "var" / "bench-quality"))

import django  # noqa: E402
from django.apps import apps  # noqa: E402

if not apps.ready:
    django.setup()

from _ratings import read_ratings  # noqa: E402
from django.conf import settings  # noqa: E402

from engagement.importing import CLICK_MIN_RATING, RATING_SIGNALS, movielens_event  # noqa: E402
from engagement.services.events import EventIn  # noqa: E402

# Fixed so the same row gets the same event id on every run (duplicates collapse as in the API).
YOOCHOOSE_NAMESPACE = uuid.UUID("5b0e7a52-3c1d-4f7e-9a61-2d8c4b1e6f03")
DIGINETICA_NAMESPACE = uuid.UUID("0d6f3c2a-8b7e-4d51-a9c4-6e2f1b3a7d90")
OTTO_NAMESPACE = uuid.UUID("a3c81f4e-52d7-4b0a-8e96-1f7d2c5b9e34")
YOOCHOOSE_FILES = ("yoochoose-clicks-100k_train_full.txt", "yoochoose-clicks-100k_test.txt")
DIGINETICA_HEADER = ["session_id", "user_id", "item_id", "timeframe", "eventdate"]
OTTO_TYPES = ("clicks", "carts", "orders")


def datasets_dir() -> Path:
    return Path(os.environ.get("RECSITE_DATASETS") or ROOT.parent / "shared" / "datasets")


def dwell_limit_ms() -> int:
    """The most dwell one event may carry: the API's limit (1 hour)."""
    return settings.RECSITE_INGEST["MAX_SIGNAL_MS"]


def capped_gap(gap_ms: float) -> int:
    return min(max(int(round(gap_ms)), 0), dwell_limit_ms())


# --- ratings: ml-100k's u.data, or any --ratings file ---


def rating_event(user: str, item: str, rating: float, timestamp: int) -> EventIn:
    """Map one rating as import_movielens does; half stars round up (3.5 -> 4), 0.5 -> 1."""
    stars = min(max(math.floor(rating + 0.5), min(RATING_SIGNALS)), max(RATING_SIGNALS))
    return movielens_event(user, item, stars, timestamp)


def ratings_events(path: Path) -> Iterator[EventIn]:
    """One event per ``user item rating timestamp`` line (bench/_ratings.py reads the file)."""
    for r in read_ratings(path):
        yield rating_event(r.user, r.item, r.rating, r.timestamp)


# --- YooChoose: clicks, sessions as customers ---


def read_clicks(directory: Path) -> list[tuple[str, str, float]]:
    """Return (session, item, time in Unix seconds) rows of the train_full and test files."""
    rows = []
    for name in YOOCHOOSE_FILES:
        with (directory / name).open(newline="") as stream:
            reader = csv.reader(stream, delimiter="\t")
            header = next(reader)
            if [h.strip() for h in header[:3]] != ["SessionId", "ItemId", "Time"]:
                raise SystemExit(f"{directory / name}: expected the header SessionId, ItemId, Time; got {header}.")
            rows.extend((session, item, float(t)) for session, item, t in (r[:3] for r in reader if r))
    return rows


def click_events(rows: list[tuple[str, str, float]], *, dwell: bool) -> list[EventIn]:
    """One event per click; dwell = the gap to the session's next click (0 for the last, or without dwell)."""
    ordered = sorted(rows, key=lambda r: (r[0], r[2]))
    events = []
    for i, (session, item, t) in enumerate(ordered):
        next_in_session = i + 1 < len(ordered) and ordered[i + 1][0] == session
        gap_ms = (ordered[i + 1][2] - t) * 1000 if next_in_session else 0
        events.append(
            EventIn(
                event_id=uuid.uuid5(YOOCHOOSE_NAMESPACE, f"yoochoose:{session}:{item}:{t!r}"),
                customer=f"yc-{session}",
                product=f"yc-{item}",
                hover_ms=0,
                dwell_ms=capped_gap(gap_ms) if dwell else 0,
                clicked=True,
                occurred_at=datetime.fromtimestamp(t, UTC),
            )
        )
    return events


def yoochoose_events(directory: Path) -> list[EventIn]:
    return click_events(read_clicks(directory), dwell=True)


# --- DIGINETICA: product views, sessions as customers ---


def diginetica_events(path: Path) -> list[EventIn]:
    """One event per product view of ``session_id;user_id;item_id;timeframe;eventdate`` (header first).

    Rows are not in time order within a session in the file: each session's views are
    ordered by ``timeframe`` (ms since the session started; ties keep file order), and a
    view's dwell is the gap to the session's next view, capped; the last view's is 0.
    """
    rows: list[tuple[str, str, int, str, int]] = []
    with path.open(newline="") as stream:
        reader = csv.reader(stream, delimiter=";")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:5]] != DIGINETICA_HEADER:
            raise SystemExit(f"{path}: expected the header {';'.join(DIGINETICA_HEADER)}; got {header}.")
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                session, _user, item, timeframe, day = (part.strip() for part in row[:5])
                rows.append((session, item, int(timeframe), day, number))
            except ValueError:
                raise SystemExit(f"{path}, line {number}: expected {';'.join(DIGINETICA_HEADER)}: {row}.") from None
    rows.sort(key=lambda r: (r[0], r[2], r[4]))
    events = []
    for i, (session, item, timeframe, day, _) in enumerate(rows):
        next_in_session = i + 1 < len(rows) and rows[i + 1][0] == session
        gap_ms = rows[i + 1][2] - timeframe if next_in_session else 0
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
        events.append(
            EventIn(
                event_id=uuid.uuid5(DIGINETICA_NAMESPACE, f"diginetica:{session}:{item}:{timeframe}"),
                customer=f"dg-{session}",
                product=f"dg-{item}",
                hover_ms=0,
                dwell_ms=capped_gap(gap_ms),
                clicked=True,
                occurred_at=start + timedelta(milliseconds=timeframe),
            )
        )
    return events


# --- OTTO: typed events (clicks, carts, orders), sessions as customers ---


def otto_events(path: Path) -> list[EventIn]:
    """One event per OTTO event of ``{"session", "events": [{"aid", "ts" (Unix ms), "type"}]}`` lines.

    The shop's events have no cart or order, so each type maps onto the signals it has:
    - ``clicks``: ``clicked``, dwell = the gap to the session's next event (of any type),
      capped at the API's limit; 0 for the session's last event;
    - ``carts`` and ``orders``: ``clicked`` with the dwell the engagement score counts in
      full (RECSITE_ENGAGEMENT DWELL_CAP_MS, 5 minutes): the strongest one event can say.
      An order usually follows a cart of the same product, so the pair sums both.
    No hover is logged (0). Events are sorted by time within a session (ties keep file order).
    """
    dwell_full = settings.RECSITE_ENGAGEMENT["DWELL_CAP_MS"]
    events = []
    with path.open() as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                session = record["session"]
                rows = sorted(
                    ((int(e["ts"]), i, str(e["aid"]), e["type"]) for i, e in enumerate(record["events"])),
                    key=lambda r: (r[0], r[1]),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise SystemExit(f"{path}, line {number}: expected a session and its events: {exc!r}.") from None
            for i, (ts, _, aid, kind) in enumerate(rows):
                if kind not in OTTO_TYPES:
                    raise SystemExit(f"{path}, line {number}: unknown event type {kind!r}; known: {OTTO_TYPES}.")
                if kind == "clicks":
                    dwell_ms = capped_gap(rows[i + 1][0] - ts) if i + 1 < len(rows) else 0
                else:
                    dwell_ms = dwell_full
                events.append(
                    EventIn(
                        event_id=uuid.uuid5(OTTO_NAMESPACE, f"otto:{session}:{aid}:{ts}:{kind}"),
                        customer=f"otto-{session}",
                        product=f"otto-{aid}",
                        hover_ms=0,
                        dwell_ms=dwell_ms,
                        clicked=True,
                        occurred_at=datetime.fromtimestamp(ts / 1000, UTC),
                    )
                )
    return events


# --- the data sets by name ---


@dataclass(frozen=True)
class Dataset:
    name: str
    folder: Path  # relative: under datasets_dir(); absolute: as given
    files: tuple[str, ...]
    read: Callable[[Path], Iterable[EventIn]]  # given the folder (ratings: the file)
    how: str  # how to get it, when missing
    mapping: str  # how its rows become events, for the results
    noise: str = ""  # non-empty: its figures are noise, and why
    ratings: bool = False  # rows are ratings (rating_event)

    def directory(self) -> Path:
        return self.folder if self.folder.is_absolute() else datasets_dir() / self.folder

    def missing(self) -> Path | None:
        """The first of its files that is not there, or None."""
        return next((self.directory() / f for f in self.files if not (self.directory() / f).is_file()), None)

    def events(self) -> Iterable[EventIn]:
        return self.read(self.directory())

    def paths(self) -> list[str]:
        return [str(self.directory() / f) for f in self.files]


RATINGS_MAPPING = (
    "each rating is the event import_movielens stores (engagement.importing.RATING_SIGNALS: "
    f"hover and dwell by stars, clicked from {CLICK_MIN_RATING} stars; half stars round up)"
)


def ratings_dataset(path: Path, name: str | None = None) -> Dataset:
    """A ``user item rating timestamp`` file as a data set named after the file."""
    path = Path(path).absolute()
    return Dataset(
        name=name or path.name,
        folder=path.parent,
        files=(path.name,),
        read=lambda directory: ratings_events(directory / path.name),
        how="Pass an existing user,item,rating,timestamp file to --ratings.",
        mapping=RATINGS_MAPPING,
        ratings=True,
    )


DATASETS: dict[str, Dataset] = {
    "ml-100k": Dataset(
        name="ml-100k",
        folder=Path("ml-100k"),
        files=("u.data",),
        read=lambda directory: ratings_events(directory / "u.data"),
        how="Download https://files.grouplens.org/datasets/movielens/ml-100k.zip, unzip it and set "
        "RECSITE_DATASETS to the folder holding ml-100k/ (or pass --ratings PATH).",
        mapping=RATINGS_MAPPING,
        ratings=True,
    ),
    "yoochoose": Dataset(
        name="yoochoose",
        folder=Path("yoochoose-rsc15-100k"),
        files=YOOCHOOSE_FILES,
        read=yoochoose_events,
        how="It is the session-rec sample (github.com/rn5l/session-rec, data/rsc15/prepared/); put its "
        "yoochoose-clicks-100k_*.txt files in RECSITE_DATASETS/yoochoose-rsc15-100k/.",
        mapping="each click: customer yc-<session>, clicked, dwell = gap to the session's next click "
        "(capped at 1 h; the last click 0), no hover",
    ),
    "diginetica": Dataset(
        name="diginetica",
        folder=Path("diginetica-sample"),
        files=("sample_train-item-views.csv",),
        read=lambda directory: diginetica_events(directory / "sample_train-item-views.csv"),
        how="It is SR-GNN's sample (github.com/CRIPAC-DIG/SR-GNN, datasets/sample_train-item-views.csv); put it "
        "in RECSITE_DATASETS/diginetica-sample/.",
        mapping="each product view: customer dg-<session>, clicked, dwell = timeframe gap to the session's next "
        "view (capped at 1 h; the last view 0), occurred_at = eventdate + timeframe, no hover; user_id unused",
    ),
    "otto": Dataset(
        name="otto",
        folder=Path("otto-sample"),
        files=("train.jsonl",),
        read=lambda directory: otto_events(directory / "train.jsonl"),
        how="It is the fixture of github.com/otto-de/recsys-dataset (test/resources/train.jsonl); put it in "
        "RECSITE_DATASETS/otto-sample/.",
        mapping="customer otto-<session>; clicks: clicked, dwell = gap to the session's next event (capped at 1 h; "
        "the last 0); carts and orders: clicked, dwell = DWELL_CAP_MS (counted in full); no hover",
        noise="20 sessions: a parser and mapping check, its figures are noise (DATASET.md: not for accuracy numbers)",
    ),
}
