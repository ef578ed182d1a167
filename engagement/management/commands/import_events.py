"""Import events from a CSV or JSON Lines file (format: docs/data.md)."""

import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from engagement.importing import (
    ChunkedIngest,
    FileFormatError,
    count_lines,
    infer_format,
    read_csv_rows,
    read_jsonl_rows,
    validate_rows,
)

CHUNK_SIZE = 1000


class Command(BaseCommand):
    help = "Import events from a CSV (with a header) or JSON Lines file; re-importing stores nothing twice."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--format", choices=["csv", "jsonl"], help="Default: from the extension.")
        parser.add_argument("--strict", action="store_true", help="Exit non-zero if any row was rejected.")
        parser.add_argument("--max-errors", type=int, default=100, help="Print at most this many row errors.")

    def handle(self, *args, file: Path, format: str | None, strict: bool, max_errors: int, **options):
        fmt = format or infer_format(file)
        if fmt is None:
            raise CommandError(f"Can't tell the format of {file}: name it .csv or .jsonl, or pass --format.")
        started = time.perf_counter()
        ingest = ChunkedIngest(chunk_size=CHUNK_SIZE)
        rejected = 0
        try:
            total_lines = count_lines(file)
            # utf-8-sig: spreadsheet exports often start with a byte-order mark.
            with file.open(encoding="utf-8-sig", newline="") as stream, tqdm(
                total=total_lines, unit=" lines", file=sys.stderr, disable=None
            ) as bar:
                rows = read_csv_rows(stream) if fmt == "csv" else read_jsonl_rows(stream)
                chunk: list = []
                for line, item in rows:
                    chunk.append((line, item))
                    if len(chunk) == CHUNK_SIZE:
                        rejected += self._store(chunk, ingest, rejected, max_errors)
                        bar.update(line - bar.n)
                        chunk = []
                rejected += self._store(chunk, ingest, rejected, max_errors)
                bar.update(max(0, total_lines - bar.n))
        except (OSError, UnicodeDecodeError, FileFormatError) as exc:
            # The file itself is unreadable (missing, not UTF-8, no usable header);
            # chunks stored before this stay stored, and a re-run skips them as duplicates.
            raise CommandError(f"Can't read {file}: {exc}") from None
        ingest.flush()

        elapsed = time.perf_counter() - started
        if rejected > max_errors:
            self.stderr.write(f"... and {rejected - max_errors} more rejected rows.")
        self.stdout.write(
            f"Imported {file} in {elapsed:.1f} s: accepted {ingest.accepted}, "
            f"duplicates {ingest.duplicates}, rejected {rejected}."
        )
        if strict and rejected:
            raise CommandError(f"{rejected} row(s) rejected (--strict); the valid rows were stored.")

    def _store(self, chunk: list, ingest: ChunkedIngest, rejected_so_far: int, max_errors: int) -> int:
        """Validate and store one chunk; print its errors; return how many it rejected."""
        events, errors = validate_rows(chunk)
        ingest.add(events)
        with tqdm.external_write_mode(file=sys.stderr):
            for error in errors[: max(0, max_errors - rejected_so_far)]:
                self.stderr.write(str(error))
        return len(errors)
