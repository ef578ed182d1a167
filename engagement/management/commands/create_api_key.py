from django.core.management.base import BaseCommand

from engagement.models import ShopApiKey


class Command(BaseCommand):
    help = "Create a shop API key and print it once; only its hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("name", help="What the key is for, e.g. 'storefront'.")
        parser.add_argument(
            "--admin", action="store_true", help="Also allow starting training runs and promoting models."
        )

    def handle(self, *args, name: str, admin: bool, **options):
        _, key = ShopApiKey.objects.create_key(name=name, is_admin=admin)
        self.stdout.write(key)
        self.stderr.write(f"Send it as:  Authorization: Api-Key {key}\nIt is not shown again.")
