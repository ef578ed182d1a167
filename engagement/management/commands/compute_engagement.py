import time

from django.core.management.base import BaseCommand

from engagement.services import engagement_fold


class Command(BaseCommand):
    help = "Fold new interaction events into engagement scores (what the periodic task does)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--full",
            action="store_true",
            help="Delete every engagement row and fold all events again (after changing the weights).",
        )

    def handle(self, *args, full: bool, **options):
        started = time.perf_counter()
        result = engagement_fold(full=full)
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"{'Rebuilt' if full else 'Folded'}: {result.events_folded} events into "
            f"{result.pairs_touched} customer x product pairs; watermark at event "
            f"{result.watermark}; {elapsed:.2f} s."
        )
