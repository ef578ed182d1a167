"""manage.py create_api_key: the key is shown once and only its hash is stored."""

from io import StringIO

from django.core.management import call_command

from engagement.models import ShopApiKey


def test_it_prints_a_working_key_once_and_stores_only_its_hash(anonymous_client, db):
    out, err = StringIO(), StringIO()

    call_command("create_api_key", "storefront", stdout=out, stderr=err)

    key = out.getvalue().strip()
    stored = ShopApiKey.objects.get()
    assert stored.name == "storefront"
    assert key.startswith(stored.prefix + ".")
    assert key not in (stored.hashed_key, stored.id)
    assert ShopApiKey.objects.get_from_key(key) == stored
    anonymous_client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert anonymous_client.put("/api/v1/products/", [], format="json").status_code == 200
