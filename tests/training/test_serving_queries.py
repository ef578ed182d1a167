"""The per-request queries of a model recommendation, and the catalog facts they are read against."""

from __future__ import annotations

import numpy as np

from engagement.models import Product
from training.serving import CatalogFacts, active_product_pks


def test_it_keeps_only_existing_active_products(db):
    lamp = Product.objects.create(external_id="lamp")
    desk = Product.objects.create(external_id="desk", active=False)

    assert active_product_pks([lamp.pk, desk.pk, desk.pk + 1000]) == {lamp.pk}
    assert active_product_pks([]) == set()


def test_catalog_facts_map_primary_keys_back_to_model_indices():
    pks = np.array([40, -1, 7, 12], dtype=np.int64)  # model product 1 is not in the catalog
    facts = CatalogFacts(
        active=np.array([True, False, True, True]), category_codes=np.zeros(4, dtype=np.int32),
        category_numbers={"": 0}, pks=pks, pk_order=np.argsort(pks, kind="stable"),
    )  # fmt: skip

    np.testing.assert_array_equal(facts.indices_of([12, 40, 99, 7]), [3, 0, 2])
    assert facts.indices_of([]).tolist() == []
