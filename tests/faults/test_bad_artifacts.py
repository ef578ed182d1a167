"""Bad artifacts (truncated, checksum mismatch, malicious pickle): refused with no side effect; the old model serves."""

from __future__ import annotations

import hashlib
import time

import pytest
import requests
import torch
from django.db import transaction

from tests.faults.conftest import Load, make_catalog, make_version, wait_until_every_worker_serves
from training.ml.artifact import load_artifact
from training.models import ModelPromotion, ModelVersion
from training.services import model_version_promote
from training.artifacts import artifact_abspath

pytestmark = pytest.mark.usefixtures("transactional_db")


class Sentinel:
    """Unpickling this runs code: it creates the file at ``path``."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').close()",))


def malicious_file(path, sentinel) -> str:
    """Write a file shaped like an artifact that also carries a Sentinel; return its sha256."""
    torch.save({"format": "recsite.recommender/2", "config": {}, "extra": {"x": Sentinel(sentinel)}}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def swap_promoted(*, retire: ModelVersion, promote: ModelVersion, retired_status=ModelVersion.Status.RETIRED) -> None:
    """Mark ``promote`` promoted in the database directly, in one transaction (as a promotion does)."""
    with transaction.atomic():
        ModelVersion.objects.filter(pk=retire.pk).update(status=retired_status)
        ModelVersion.objects.filter(pk=promote.pk).update(status=ModelVersion.Status.PROMOTED)


def test_truncated_tampered_and_malicious_artifacts_are_refused_with_no_side_effect_while_the_old_model_serves(
    app_server, shop_key, admin_key, settings, tmp_path, figure
):
    customers, products = make_catalog(customers=50, products=80)
    old = make_version(customer_ids=customers, product_ids=products, seed=10)
    model_version_promote(version_id=old.pk, actor="faults")
    model_dir = settings.RECSITE_TRAINING["MODEL_DIR"]
    sentinel = tmp_path / "pwned"

    truncated = make_version(customer_ids=customers, product_ids=products, seed=11)
    path = artifact_abspath(truncated)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    # Its row carries the truncated file's own checksum: the load, not the checksum, must refuse it.
    ModelVersion.objects.filter(pk=truncated.pk).update(sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    tampered = make_version(customer_ids=customers, product_ids=products, seed=12)
    with artifact_abspath(tampered).open("r+b") as handle:  # one byte changed in place
        handle.seek(200)
        byte = handle.read(1)
        handle.seek(200)
        handle.write(bytes([byte[0] ^ 0xFF]))
    malicious = ModelVersion.objects.create(
        artifact_path="malicious.pt", sha256=malicious_file(model_dir / "malicious.pt", sentinel),
        config={}, customer_ids=customers, product_ids=products,
    )  # fmt: skip
    bad = {"truncated": truncated, "checksum mismatch": tampered, "malicious pickle": malicious}
    promotions_before = ModelPromotion.objects.count()

    urls = [f"{app_server.url}/api/v1/recommendations/{c}/" for c in customers]
    # Every web process loads the old model first: one that never had a good model has
    # only popular products to fall back on (training.serving; docs/reliability.md).
    wait_until_every_worker_serves(app_server, urls, shop_key, old.pk)
    answers = {}
    with requests.Session() as admin, Load(urls, shop_key, clients=2, rate=40) as during:
        admin.headers["Authorization"] = f"Api-Key {admin_key}"
        time.sleep(0.5)
        for name, version in bad.items():
            response = admin.post(f"{app_server.url}/api/v1/model-versions/{version.pk}/promote/", timeout=30)
            answers[name] = (response.status_code, response.json().get("detail", ""))
        # And were one marked promoted behind the API's back (a restored backup, a hand-edited
        # row), the web processes refuse to load it and keep serving the version they have.
        swap_promoted(retire=old, promote=malicious)
        time.sleep(2)
        swap_promoted(retire=malicious, promote=old, retired_status=ModelVersion.Status.CANDIDATE)
        time.sleep(0.5)
    with Load(urls, shop_key, clients=1, rate=20) as after:
        time.sleep(1)

    # The payload is live: unpickled without weights_only it runs (here, on a copy aimed elsewhere).
    control = tmp_path / "control-ran"
    malicious_file(tmp_path / "control.pt", control)
    torch.load(tmp_path / "control.pt", weights_only=False)

    served = [a for a in during.answers + after.answers]
    wrong = [a for a in served if a.status != 200 or (a.body or {}).get("model_version") != old.pk]
    refusals = {name: status for name, (status, _) in answers.items()}
    figure(
        "bad_artifacts", refused_409=sum(s == 409 for s in refusals.values()), attempts=len(bad),
        sentinel_created=sentinel.exists(), control_payload_ran=control.exists(),
        promotions_written=ModelPromotion.objects.count() - promotions_before, requests=len(served),
        not_old_model_or_not_200=len(wrong),
    )  # fmt: skip
    assert refusals == {name: 409 for name in bad}, answers
    assert "checksum mismatch" in answers["checksum mismatch"][1]
    assert "not a loadable model artifact" in answers["truncated"][1]
    assert "not a loadable model artifact" in answers["malicious pickle"][1]
    assert not sentinel.exists() and control.exists()
    assert ModelPromotion.objects.count() == promotions_before
    assert ModelVersion.objects.get(pk=old.pk).status == ModelVersion.Status.PROMOTED
    assert {v.status for v in ModelVersion.objects.filter(pk__in=[v.pk for v in bad.values()])} == {"candidate"}
    assert served and wrong == [], ([(a.status, a.body) for a in wrong[:5]], app_server.log_tail(80))
    with pytest.raises(Exception, match="not a loadable"):  # and the loader itself, the same way
        load_artifact(model_dir / "malicious.pt", sha256=malicious.sha256)
    assert not sentinel.exists()
