from django.core.management.base import BaseCommand

from engagement.models import ShopApiKey


class Command(BaseCommand):
    help = "Create a shop API key and print it once; only its hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("name", help="What the key is for, e.g. 'storefront'.")

    def handle(self, *args, name: str, **options):
        _, key = ShopApiKey.objects.create_key(name=name)
        self.stdout.write(key)
        self.stderr.write(f"Send it as:  Authorization: Api-Key {key}\nIt is not shown again.")
