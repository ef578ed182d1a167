from django.core.management.base import BaseCommand

from engagement.models import ALL_SCOPES, SHOP_SCOPES, ShopApiKey


class Command(BaseCommand):
    help = (
        "Create an API key and print it once; only its hash is stored. "
        f"Scopes: {', '.join(ALL_SCOPES)}; without --scope or --admin: {' and '.join(SHOP_SCOPES)}."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="What the key is for, e.g. 'storefront'.")
        parser.add_argument(
            "--scope",
            dest="scopes",
            action="append",
            choices=ALL_SCOPES,
            help="What the key may do (repeat for more): ingest events and the catalog, recommend "
            "(recommendations, popular products), admin (training runs and model versions).",
        )
        parser.add_argument("--admin", action="store_true", help="Every scope: short for --scope each.")

    def handle(self, *args, name: str, scopes: list[str] | None, admin: bool, **options):
        if admin:
            chosen = list(ALL_SCOPES)
        elif scopes:
            chosen = [scope for scope in ALL_SCOPES if scope in scopes]  # in a fixed order, each once
        else:
            chosen = list(SHOP_SCOPES)
        _, key = ShopApiKey.objects.create_key(name=name, scopes=chosen)
        self.stdout.write(key)
        self.stderr.write(f"Scopes: {', '.join(chosen)}.")
        self.stderr.write(f"Send it as:  Authorization: Api-Key {key}\nIt is not shown again.")
