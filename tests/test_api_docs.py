"""The OpenAPI schema and its docs page, served without a CDN."""

import re


def test_it_serves_an_openapi_schema_that_names_the_contract(client, db):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    schema = response.json()
    assert {"/api/v1/events/", "/api/v1/products/"} <= set(schema["paths"])
    assert "post" in schema["paths"]["/api/v1/events/"]
    assert "put" in schema["paths"]["/api/v1/products/"]


def test_it_serves_the_docs_page_from_local_static_files(client, db):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any("swagger-ui" in s for s in sources)
    assert not [s for s in sources if s.startswith(("http://", "https://", "//"))]


def test_the_schema_generates_without_warnings(db, tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))

    assert "/api/v1/events/" in (tmp_path / "schema.yml").read_text()
