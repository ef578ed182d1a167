import json
import secrets
import uuid

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from engagement.models import ALL_SCOPES, ShopApiKey

USERNAME = "admin"


class Command(BaseCommand):
    help = (
        "Create the superuser 'admin' and a demo shop API key, printing both once. "
        "Does nothing but say so when 'admin' exists."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--base-url", default="http://127.0.0.1:8000", help="Where the site answers, for the curl example."
        )

    def handle(self, *args, base_url: str, **options):
        User = get_user_model()
        password = secrets.token_urlsafe(12)
        with transaction.atomic():
            if User.objects.filter(username=USERNAME).exists():
                self.stdout.write(
                    f"The superuser '{USERNAME}' exists; its password was printed when it was created. "
                    f"Reset it with: python manage.py changepassword {USERNAME}"
                )
                return
            User.objects.create_superuser(USERNAME, email="", password=password)
            # The demo key comes with the first admin only, so re-runs don't pile up keys.
            _, key = ShopApiKey.objects.create_key(name="demo")
            _, admin_key = ShopApiKey.objects.create_key(name="demo-admin", scopes=list(ALL_SCOPES))

        example = {
            "events": [
                {"event_id": str(uuid.uuid4()), "customer": "c-1", "product": "p-1", "dwell_ms": 12000, "clicked": True}
            ]
        }
        self.stdout.write(
            "\n".join(
                [
                    "Created the superuser (shown once, only its hash is stored):",
                    f"  username: {USERNAME}",
                    f"  password: {password}",
                    "Created a shop API key (scopes ingest, recommend; shown once, only its hash is stored):",
                    f"  api key: {key}",
                    "Send an event with it:",
                    f"  curl -X POST {base_url.rstrip('/')}/api/v1/events/ \\",
                    f"    -H 'Authorization: Api-Key {key}' -H 'Content-Type: application/json' \\",
                    f"    -d '{json.dumps(example)}'",
                    "Created an admin API key (every scope: may also train and promote models):",
                    f"  admin api key: {admin_key}",
                    "Train a model and follow it:",
                    f"  curl -X POST {base_url.rstrip('/')}/api/v1/training-runs/ -H 'Authorization: Api-Key {admin_key}'",
                    f"  curl {base_url.rstrip('/')}/api/v1/training-runs/<id>/ -H 'Authorization: Api-Key {admin_key}'",
                ]
            )
        )
