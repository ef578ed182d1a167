"""Artifacts: atomic, checksummed, and loaded without running pickled code."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from training.ml.artifact import (
    ArtifactError,
    file_sha256,
    load_artifact,
    save_artifact,
)
from training.ml.model import RecommenderConfig, RecommenderNN
from training.ml.scoring import CatalogScorer

WEIGHTS = (0.2, 0.4, 0.4)
CUSTOMERS = [f"c{i}" for i in range(12)]
PRODUCTS = [f"p{i:02d}" for i in range(20)]


def _model(dot_branch: bool = False) -> tuple[RecommenderNN, RecommenderConfig, np.ndarray]:
    torch.manual_seed(1)
    config = RecommenderConfig(num_customers=12, num_products=20, embed_dim=8, dot_branch=dot_branch)
    model = RecommenderNN(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.5)
    return model, config, np.linspace(-1, 1, 20, dtype=np.float32)


def _save(path: Path, **overrides: object) -> str:
    model, config, prior = _model()
    fields = {
        "model": model,
        "config": config,
        "prior": prior,
        "customer_ids": CUSTOMERS,
        "product_ids": PRODUCTS,
        "channel_weights": WEIGHTS,
        "metrics": {"full": {"hr@10": 0.5}},
    }
    return save_artifact(path, **{**fields, **overrides})


class _CreatesAFile:
    """Unpickling this calls open(path, "w"): proof that pickled code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


@pytest.mark.parametrize("dot_branch", [False, True])
def test_it_loads_a_saved_model_that_scores_identically(tmp_path, dot_branch):
    model, config, prior = _model(dot_branch)
    path = tmp_path / "models" / "v1.pt"

    sha256 = save_artifact(
        path,
        model=model,
        config=config,
        prior=prior,
        customer_ids=CUSTOMERS,
        product_ids=PRODUCTS,
        channel_weights=WEIGHTS,
        metrics={"full": {"hr@10": np.float32(0.25)}, "customers": np.int64(12)},
        extra={"run": 7, "data": {"rows": 99}},
    )
    loaded = load_artifact(path, sha256=sha256)

    expected = CatalogScorer(model, prior, WEIGHTS).score(np.arange(12))
    np.testing.assert_array_equal(loaded.scorer.score(np.arange(12)), expected)
    assert loaded.config == config
    assert loaded.customer_index == {c: i for i, c in enumerate(CUSTOMERS)}
    assert loaded.product_ids == PRODUCTS
    assert loaded.product_index["p07"] == 7
    np.testing.assert_array_equal(loaded.prior, prior)
    assert loaded.channel_weights == list(WEIGHTS)
    assert loaded.metrics == {"full": {"hr@10": 0.25}, "customers": 12}
    assert loaded.extra == {"run": 7, "data": {"rows": 99}}
    assert loaded.sha256 == sha256 == file_sha256(path)
    assert not loaded.model.training


def test_it_writes_atomically_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "v1.pt"
    path.write_bytes(b"the previous version")

    sha256 = _save(path)

    assert [p.name for p in tmp_path.iterdir()] == ["v1.pt"]
    assert file_sha256(path) == sha256


def test_it_refuses_a_file_whose_checksum_differs(tmp_path):
    path = tmp_path / "v1.pt"
    sha256 = _save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact(path, sha256=sha256)


def test_it_refuses_a_truncated_file_even_with_its_own_checksum(tmp_path):
    path = tmp_path / "v1.pt"
    sha256 = _save(path)
    path.write_bytes(path.read_bytes()[:-200])

    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact(path, sha256=sha256)
    with pytest.raises(ArtifactError, match="not a loadable model artifact"):
        load_artifact(path, sha256=file_sha256(path))


def test_it_refuses_a_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match="cannot read"):
        load_artifact(tmp_path / "gone.pt", sha256="0" * 64)


@pytest.mark.parametrize("container", ["torch", "plain pickle"])
def test_it_refuses_a_pickle_that_runs_code_and_does_not_run_it(tmp_path, container):
    path = tmp_path / "evil.pt"
    sentinel = tmp_path / "pwned"
    payload = {"format": "recsite.recommender/1", "config": _CreatesAFile(sentinel)}
    if container == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))

    with pytest.raises(ArtifactError, match="not a loadable model artifact"):
        load_artifact(path, sha256=file_sha256(path))

    assert not sentinel.exists()
    # The payload is live: an unguarded load would have run it.
    torch.load(path, weights_only=False) if container == "torch" else pickle.loads(path.read_bytes())
    assert sentinel.exists()


def test_it_refuses_a_torch_file_in_another_format(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "someone-else/3", "weights": torch.zeros(2)}, path)

    with pytest.raises(ArtifactError, match="not a recsite.recommender/3 artifact"):
        load_artifact(path, sha256=file_sha256(path))


def test_it_refuses_weights_that_do_not_fit_the_config(tmp_path):
    path = tmp_path / "v1.pt"
    _save(path)
    payload = torch.load(path, weights_only=True)
    payload["config"]["embed_dim"] = 16
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.write_bytes(buffer.getvalue())

    with pytest.raises(ArtifactError, match="not a valid"):
        load_artifact(path, sha256=file_sha256(path))


def test_it_refuses_a_file_that_is_not_a_torch_file(tmp_path):
    path = tmp_path / "v1.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "not a model")

    with pytest.raises(ArtifactError):
        load_artifact(path, sha256=file_sha256(path))


def test_it_refuses_to_save_metrics_it_could_not_load_back(tmp_path):
    with pytest.raises(TypeError, match="metrics.when"):
        _save(tmp_path / "v1.pt", metrics={"when": object()})
    assert list(tmp_path.iterdir()) == []


def test_it_refuses_to_save_ids_that_do_not_match_the_config(tmp_path):
    with pytest.raises(ValueError, match="id lists"):
        _save(tmp_path / "v1.pt", product_ids=PRODUCTS[:-1])


def test_it_stores_the_config_as_a_plain_dict(tmp_path):
    path = tmp_path / "v1.pt"
    _save(path)

    payload = torch.load(path, weights_only=True)

    assert payload["format"] == "recsite.recommender/3"
    assert RecommenderConfig.from_dict(payload["config"]) == _model()[1]
    assert isinstance(payload["prior"], torch.Tensor)
    assert payload["channel_weights"] == list(WEIGHTS)
