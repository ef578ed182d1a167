"""manage.py create_api_key: the key is shown once, only its hash is stored, and it carries scopes."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

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


def test_scope_names_what_the_key_may_do_and_admin_is_every_scope(db):
    call_command("create_api_key", "tracker", "--scope", "ingest", stdout=StringIO(), stderr=StringIO())
    call_command(
        "create_api_key", "reader", "--scope", "recommend", "--scope", "ingest", stdout=StringIO(), stderr=StringIO()
    )
    call_command("create_api_key", "ci", "--admin", stdout=StringIO(), stderr=StringIO())
    call_command("create_api_key", "storefront", stdout=StringIO(), stderr=StringIO())

    assert dict(ShopApiKey.objects.values_list("name", "scopes")) == {
        "tracker": ["ingest"],
        "reader": ["ingest", "recommend"],
        "ci": ["ingest", "recommend", "admin"],
        "storefront": ["ingest", "recommend"],
    }


def test_an_unknown_scope_is_refused_and_no_key_is_made(db):
    with pytest.raises(CommandError, match="invalid choice: 'train'"):
        call_command("create_api_key", "x", "--scope", "train", stdout=StringIO(), stderr=StringIO())
    assert not ShopApiKey.objects.exists()


def test_the_admin_form_refuses_an_unknown_or_empty_scope_list(db):
    with pytest.raises(ValidationError):
        ShopApiKey(name="x", scopes=["ingest", "train"]).full_clean(exclude=["id", "prefix", "hashed_key"])
    with pytest.raises(ValidationError):
        ShopApiKey(name="x", scopes=[]).full_clean(exclude=["id", "prefix", "hashed_key"])


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_admin_keys_every_scope_and_other_keys_the_shop_scopes():
    before, after = [("engagement", "0003_product_day")], [("engagement", "0004_api_key_scopes")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps.get_model("engagement", "ShopApiKey")
    old.objects.create(id="a.1", prefix="a", hashed_key="1", name="old admin", is_admin=True)
    old.objects.create(id="b.1", prefix="b", hashed_key="1", name="old shop", is_admin=False)
    try:
        executor = MigrationExecutor(connection)  # a fresh one sees the rollback
        executor.migrate(after)
        new = executor.loader.project_state(after).apps.get_model("engagement", "ShopApiKey")
        scopes = dict(new.objects.values_list("name", "scopes"))
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert scopes == {"old admin": ["ingest", "recommend", "admin"], "old shop": ["ingest", "recommend"]}


def test_the_django_admin_creates_a_key_with_the_scopes_ticked(client, db):
    client.force_login(get_user_model().objects.create_superuser("root", password="pw-for-tests"))

    page = client.get("/admin/engagement/shopapikey/add/")
    response = client.post("/admin/engagement/shopapikey/add/", {"name": "tracker", "scopes": ["ingest"]})

    assert b'type="checkbox" name="scopes" value="admin"' in page.content
    assert response.status_code == 302, response.content.decode()[-2000:]
    assert ShopApiKey.objects.get(name="tracker").scopes == ["ingest"]


def test_scopes_saved_as_a_string_grant_nothing(anonymous_client, db):
    """A key given scopes="ingest,recommend" in a shell (skipping validation) would grant by substring."""
    key_object, key = ShopApiKey.objects.create_key(name="shell-made", scopes="ingest,recommend")
    key_object.refresh_from_db()
    assert key_object.scopes == "ingest,recommend"  # stored as it was given

    assert [key_object.has_scope(scope) for scope in ("ingest", "recommend", "admin", "in")] == [False] * 4
    anonymous_client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert anonymous_client.put("/api/v1/products/", [], format="json").status_code == 403
    assert ShopApiKey(name="listed", scopes=["ingest"]).has_scope("ingest")
