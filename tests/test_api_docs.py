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


def _operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield path, method, operation


def test_every_operation_documents_the_errors_it_can_answer_with_their_bodies_and_headers(client, db):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    error = {"$ref": "#/components/schemas/Error"}

    for path, method, operation in _operations(schema):
        responses = operation["responses"]
        where = f"{method.upper()} {path}"
        for code in ("401", "403", "429", "503"):
            assert code in responses, f"{where} does not document {code}"
            assert responses[code]["content"]["application/json"]["schema"] in (
                error, {"$ref": "#/components/schemas/Detail"}
            ), where
        assert responses["429"]["headers"]["Retry-After"]["required"] is True, where
        assert responses["503"]["headers"]["Retry-After"]["required"] is True, where
        assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True, where
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= set(responses), where
        if "{" in path:
            assert "404" in responses, where
        for code, response in responses.items():
            assert response.get("content", {}).get("application/json"), f"{where} {code} has no body schema"

    assert schema["components"]["schemas"]["Error"]["required"] == ["detail"]


def test_request_bodies_refuse_unknown_fields_and_nul_in_the_schema_as_the_api_does(client, db):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()["components"]["schemas"]

    assert schema["ProductInput"]["additionalProperties"] is False
    assert schema["TrainingOptions"]["additionalProperties"] is False
    assert schema["EventInput"]["properties"]["customer"]["pattern"] == r"^[^\u0000]*[^\s\u0000][^\u0000]*$"


def test_links_lead_from_a_started_training_run_to_that_run(client, db):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    started = schema["paths"]["/api/v1/training-runs/"]["post"]["responses"]["201"]["links"]
    assert started["GetTrainingRun"] == {
        "operationId": "training_runs_retrieve",
        "parameters": {"run_id": "$response.body#/id"},
    }


def test_a_path_that_matches_no_api_url_answers_a_json_404(client, db):
    response = client.get("/api/v1/training-runs/not-a-number/")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert client.get("/no-such-page/")["Content-Type"].startswith("text/html")
