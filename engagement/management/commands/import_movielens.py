"""Import a MovieLens ratings directory as a catalog and events (mapping: docs/data.md)."""

import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from engagement.importing import (
    ChunkedIngest,
    FileFormatError,
    RowError,
    count_lines,
    movielens_files,
    movielens_products,
    read_movielens_ratings,
    upsert_catalog_in_chunks,
)

# Bigger than import_events' chunks: the rows are machine-made and already valid, and
# fewer transactions make the 100k import several times faster.
CHUNK_SIZE = 10_000


class Command(BaseCommand):
    help = "Import MovieLens (ml-100k u.data/u.item, or ml-1m ratings.dat/movies.dat): movies, users, ratings."

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path)

    def handle(self, *args, directory: Path, **options):
        started = time.perf_counter()
        try:
            files = movielens_files(directory)
            catalog = movielens_products(files)
            total = count_lines(files.ratings)
        except (OSError, FileFormatError) as exc:
            raise CommandError(str(exc)) from None

        upserted = upsert_catalog_in_chunks(catalog)
        created, updated = upserted.created, upserted.updated

        ingest = ChunkedIngest(chunk_size=CHUNK_SIZE)
        rejected = 0
        with tqdm(total=total, unit=" ratings", file=sys.stderr, disable=None) as bar:
            for _, item in read_movielens_ratings(files):
                if isinstance(item, RowError):
                    rejected += 1
                    with tqdm.external_write_mode(file=sys.stderr):
                        self.stderr.write(f"{files.ratings.name} {item}")
                else:
                    ingest.add([item])
                bar.update()
        ingest.flush()

        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"Imported {directory} in {elapsed:.1f} s:\n"
            f"  movies:  {len(catalog)} ({created} new, {updated} updated)\n"
            f"  ratings: {ingest.accepted + ingest.duplicates + rejected} -> {ingest.accepted} new events, "
            f"{ingest.duplicates} duplicates, {rejected} rejected"
        )
