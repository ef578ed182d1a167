"""Artifacts keep customer ids compactly: a byte tensor in the file, an IdIndex in memory."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from training.ml import artifact
from training.ml.artifact import ArtifactError, IdIndex, file_sha256, load_artifact, save_artifact
from training.ml.model import RecommenderConfig, RecommenderNN

IDS = ["c-0", "", "客户-7", "emoji-🙂", "x" * 300, "c-10", "C-0", "c-1"]


def _save(path, customer_ids=IDS):
    torch.manual_seed(0)
    config = RecommenderConfig(num_customers=len(customer_ids), num_products=3, embed_dim=4)
    return save_artifact(
        path, model=RecommenderNN(config), config=config, prior=np.zeros(3, dtype=np.float32),
        customer_ids=customer_ids, product_ids=["p-0", "p-1", "p-2"], channel_weights=(0.2, 0.4, 0.4), metrics={},
    )  # fmt: skip


def test_an_id_index_answers_like_the_dict_it_replaces():
    index = IdIndex(IDS)
    expected = {customer: i for i, customer in enumerate(IDS)}

    assert index == expected
    assert len(index) == len(IDS)
    assert list(index) == IDS  # in index order, like the list it was built from
    assert [index[c] for c in IDS] == list(range(len(IDS)))
    assert index.get("c-2") is None
    assert index.get("c-2", -1) == -1
    assert index.get(7) is None
    assert "客户-7" in index
    assert "c" not in index
    with pytest.raises(KeyError):
        index["nobody"]
    np.testing.assert_array_equal(index.indices(["c-1", "nobody", ""]), [7, -1, 1])


def test_an_id_index_of_a_single_empty_id_or_of_none():
    assert IdIndex([""]) == {"": 0}
    assert IdIndex([]) == {}
    assert IdIndex.from_joined(b"", 1) == {"": 0}
    assert IdIndex.from_joined(b"", 0) == {}


def test_an_id_index_refuses_ids_holding_nul():
    with pytest.raises(ValueError, match="NUL"):
        IdIndex(["a", "b\x00c"])
    with pytest.raises(ValueError, match="expected 2 ids"):
        IdIndex.from_joined(b"a\x00b\x00c", 2)


def test_an_id_index_of_many_ids_finds_each_and_only_those():
    ids = [f"customer-{i}" for i in range(200_000)]
    index = IdIndex(ids)

    picks = np.random.default_rng(0).integers(0, len(ids), 1_000)
    assert all(index[ids[i]] == i for i in picks)
    assert index.get("customer-200000") is None
    assert index.nbytes < 40 * len(ids)  # a dict of them is ~130 bytes an id


def test_it_stores_customer_ids_as_bytes_and_loads_them_as_an_index(tmp_path):
    path = tmp_path / "v1.pt"
    sha256 = _save(path)

    payload = torch.load(path, weights_only=True)
    loaded = load_artifact(path, sha256=sha256)

    assert payload["format"] == "recsite.recommender/3"
    assert payload["customer_ids"].dtype == torch.uint8
    assert isinstance(loaded.customer_index, IdIndex)
    assert loaded.customer_index == {customer: i for i, customer in enumerate(IDS)}


def test_it_still_reads_an_artifact_with_a_list_of_customer_ids(tmp_path):
    path = tmp_path / "v1.pt"
    _save(path)
    payload = torch.load(path, weights_only=True)
    payload["format"], payload["customer_ids"] = "recsite.recommender/1", list(IDS)
    del payload["blend"]  # /3's: neither /1 nor /2 had one, and their files still load (the model alone)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.write_bytes(buffer.getvalue())

    loaded = load_artifact(path, sha256=file_sha256(path))

    assert loaded.customer_index == {customer: i for i, customer in enumerate(IDS)}


@pytest.mark.parametrize("customer_ids", [torch.zeros(3, dtype=torch.int64), ["a", 1], "a\x00b"])
def test_it_refuses_customer_ids_it_cannot_read(tmp_path, customer_ids):
    path = tmp_path / "v1.pt"
    _save(path, customer_ids=["a", "b"])
    payload = torch.load(path, weights_only=True)
    payload["customer_ids"] = customer_ids
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.write_bytes(buffer.getvalue())

    with pytest.raises(ArtifactError, match="customer_ids"):
        load_artifact(path, sha256=file_sha256(path))


def test_it_refuses_a_byte_tensor_with_another_number_of_customers(tmp_path):
    path = tmp_path / "v1.pt"
    _save(path, customer_ids=["a", "b"])
    payload = torch.load(path, weights_only=True)
    payload["customer_ids"] = torch.tensor(list(b"a\x00b\x00c"), dtype=torch.uint8)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.write_bytes(buffer.getvalue())

    with pytest.raises(ArtifactError, match="not a valid"):
        load_artifact(path, sha256=file_sha256(path))


def test_it_refuses_to_save_an_id_holding_nul(tmp_path):
    with pytest.raises(ValueError, match="NUL"):
        _save(tmp_path / "v1.pt", customer_ids=["a", "b\x00"])


def test_the_loaded_scorer_shares_the_loaded_models_customer_embeddings(tmp_path):
    path = tmp_path / "v1.pt"
    loaded = load_artifact(path, sha256=_save(path))

    # One copy of the largest tensor (mapped from the file), not one per holder.
    assert loaded.scorer._user_embed.data_ptr() == loaded.model.user_embed.weight.data_ptr()


def test_ids_whose_hashes_collide_are_told_apart(monkeypatch):
    monkeypatch.setattr(artifact, "_LOW_32", 0)  # every id hashes to 0

    index = IdIndex(IDS)

    assert index == {customer: i for i, customer in enumerate(IDS)}
    assert index.get("c-2") is None
