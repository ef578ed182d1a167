"""Fixtures for training: a small demo shop, admin credentials, hand-made model versions."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.utils import timezone
from rest_framework.test import APIClient

from engagement import demo
from engagement.importing import ChunkedIngest, upsert_catalog_in_chunks
from engagement.models import ALL_SCOPES, ShopApiKey
from engagement.selectors import popular_cache_clear
from engagement.services import engagement_fold
from training.ml.artifact import save_artifact
from training.ml.neighbours import Blend
from training.ml.model import RecommenderConfig, RecommenderNN
from training.models import ModelVersion
from training.serving import serving_reset

SMALL_SHOP = {"n_customers": 500, "n_products": 500, "n_events": 25_000, "seed": 7, "days": 60}


def seed_small_shop(**overrides) -> None:
    """Store a small demo shop (planted tastes, engagement.demo) and fold it."""
    shape = {**SMALL_SHOP, **overrides}
    upsert_catalog_in_chunks(demo.demo_products(n_products=shape["n_products"], seed=shape["seed"]))
    drawn = demo.demo_events(
        **shape, now=timezone.now(), max_signal_ms=settings.RECSITE_INGEST["MAX_SIGNAL_MS"]
    )
    ingest = ChunkedIngest(chunk_size=2000)
    for batch in drawn.batches(2000):
        ingest.add(batch)
    ingest.flush()
    engagement_fold(full=True)


@pytest.fixture
def small_shop(db) -> None:
    seed_small_shop()


@pytest.fixture(autouse=True)
def _fresh_serving_and_models(settings, tmp_path):
    """Each test gets its own model directory and a process cache with nothing loaded."""
    settings.RECSITE_TRAINING = {**settings.RECSITE_TRAINING, "MODEL_DIR": tmp_path / "models",
                                 "SERVING_REFRESH_SECONDS": 0.0}  # fmt: skip
    serving_reset()
    popular_cache_clear()
    yield
    serving_reset()


@pytest.fixture
def admin_key(db) -> str:
    _, key = ShopApiKey.objects.create_key(name="test admin", scopes=list(ALL_SCOPES))
    return key


@pytest.fixture
def admin_client(admin_key) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {admin_key}")
    return client


@pytest.fixture
def merchandiser_client(db) -> APIClient:
    user = User.objects.create_user("merch", password="x")
    user.groups.add(Group.objects.get(name="merchandiser"))
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def make_version(db) -> Callable[..., ModelVersion]:
    """Store an (untrained, seeded) model over the given ids as a candidate ModelVersion."""

    def make(
        *, customer_ids: list[str], product_ids: list[str], seed: int = 0, customer_vector: str = "id",
        blend: Blend | None = None, **fields,
    ) -> ModelVersion:
        torch.manual_seed(seed)
        config = RecommenderConfig(num_customers=len(customer_ids), num_products=len(product_ids), embed_dim=8,
                                   customer_vector=customer_vector)  # fmt: skip
        model = RecommenderNN(config)
        prior = np.zeros(len(product_ids), dtype=np.float32)
        model_dir = settings.RECSITE_TRAINING["MODEL_DIR"]
        model_dir.mkdir(parents=True, exist_ok=True)
        name = f"test-{seed}-{ModelVersion.objects.count()}.pt"
        sha256 = save_artifact(
            model_dir / name, model=model, config=config, prior=prior, customer_ids=customer_ids,
            product_ids=product_ids, channel_weights=(0.2, 0.4, 0.4), metrics={}, blend=blend,
        )  # fmt: skip
        return ModelVersion.objects.create(
            artifact_path=name, sha256=sha256, config={"model": config.to_dict()}, customer_ids=customer_ids,
            product_ids=product_ids, **fields,
        )  # fmt: skip

    return make
