"""/readyz says which model serves; no model is a normal state, not "not ready"."""

from training.services import model_version_promote


def test_readiness_names_the_model_that_serves(client, make_version):
    version = make_version(customer_ids=["c"], product_ids=["p"])
    model_version_promote(version_id=version.pk, actor="test")

    response = client.get("/readyz")

    assert response.status_code == 200 and response.json()["model"] == f"version {version.pk}"
