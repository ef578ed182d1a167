"""Seed a synthetic shop with planted tastes (engagement/demo.py, docs/data.md)."""

import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from engagement import demo
from engagement.importing import ChunkedIngest, upsert_catalog_in_chunks
from engagement.models import Customer, InteractionEvent, Product

# Big chunks: each is one transaction, and the customer/product look-ups are per chunk.
CHUNK_SIZE = 10_000


class Command(BaseCommand):
    help = "Create a demo shop: a catalog, customers in taste groups and their events."

    def add_arguments(self, parser):
        parser.add_argument("--customers", type=int, default=2000)
        parser.add_argument("--products", type=int, default=500)
        parser.add_argument("--events", type=int, default=200_000)
        parser.add_argument("--seed", type=int, default=7, help="Same seed, same shop (and event ids).")
        parser.add_argument("--days", type=int, default=90, help="Spread events over this many days up to now.")
        parser.add_argument(
            "--force", action="store_true",
            help="Seed a database that already has data (re-seeding stores duplicates, not new rows).",
        )

    def handle(self, *args, customers: int, products: int, events: int, seed: int, days: int,
               force: bool, **options):
        counts = {
            "customers": Customer.objects.count(),
            "products": Product.objects.count(),
            "events": InteractionEvent.objects.count(),
        }
        if any(counts.values()) and not force:
            found = ", ".join(f"{n} {name}" for name, n in counts.items())
            raise CommandError(f"The database is not empty ({found}); pass --force to seed it anyway.")
        started = time.perf_counter()
        try:
            catalog = demo.demo_products(n_products=products, seed=seed)
            drawn = demo.demo_events(
                n_customers=customers, n_products=products, n_events=events, seed=seed, days=days,
                now=timezone.now(), max_signal_ms=settings.RECSITE_INGEST["MAX_SIGNAL_MS"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None

        # Catalog first, so events find named products rather than creating stubs.
        upserted = upsert_catalog_in_chunks(catalog)
        created, updated = upserted.created, upserted.updated
        ingest = ChunkedIngest(chunk_size=CHUNK_SIZE)
        with tqdm(total=len(drawn), unit=" events", file=sys.stderr, disable=None) as bar:
            for batch in drawn.batches(CHUNK_SIZE):
                ingest.add(batch)
                bar.update(len(batch))
        ingest.flush()

        elapsed = time.perf_counter() - started
        new_customers = Customer.objects.count() - counts["customers"]
        active = len(set(drawn.customer.tolist()))  # fewer than asked when events < customers
        self.stdout.write(
            f"Seeded the demo shop (seed {seed}, {days} days) in {elapsed:.1f} s:\n"
            f"  products:  {len(catalog)} ({created} new, {updated} updated) in {len(demo.CATEGORIES)} categories\n"
            f"  customers: {active} in {len(demo.TASTE_GROUPS)} taste groups ({new_customers} new)\n"
            f"  events:    {len(drawn)} ({ingest.accepted} new, {ingest.duplicates} duplicates)"
        )
