# Replaces ShopApiKey.is_admin with a list of scopes (ingest, recommend, admin).

from django.db import migrations, models

import engagement.models

SHOP = ["ingest", "recommend"]
ALL = ["ingest", "recommend", "admin"]


def scopes_from_is_admin(apps, schema_editor):
    ShopApiKey = apps.get_model("engagement", "ShopApiKey")
    ShopApiKey.objects.filter(is_admin=True).update(scopes=ALL)
    ShopApiKey.objects.filter(is_admin=False).update(scopes=SHOP)


def is_admin_from_scopes(apps, schema_editor):
    ShopApiKey = apps.get_model("engagement", "ShopApiKey")
    for key in ShopApiKey.objects.all():
        key.is_admin = "admin" in key.scopes
        key.save(update_fields=["is_admin"])


class Migration(migrations.Migration):

    dependencies = [
        ("engagement", "0003_product_day"),
    ]

    operations = [
        migrations.AddField(
            model_name="shopapikey",
            name="scopes",
            field=models.JSONField(
                default=engagement.models.shop_scopes,
                help_text="What the key may do: ingest, recommend, admin (create_api_key NAME --scope ...).",
                validators=[engagement.models.validate_scopes],
            ),
        ),
        migrations.RunPython(scopes_from_is_admin, is_admin_from_scopes),
        migrations.RemoveField(model_name="shopapikey", name="is_admin"),
    ]
