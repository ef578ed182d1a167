"""The per-request queries of a model recommendation, and the catalog facts they are read against."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from django.utils import timezone

from engagement.models import Customer, Engagement, Product
from training.serving import CatalogFacts, active_product_pks, seen_product_pks


def _engage(customer: Customer, product: Product) -> None:
    Engagement.objects.create(customer=customer, product=product, last_event_at=timezone.now() - timedelta(hours=1))


def test_it_reads_the_primary_keys_of_the_products_a_customer_engaged_with(db):
    lamp, desk, chair = (Product.objects.create(external_id=p) for p in ("lamp", "desk", "chair"))
    alice, bob = Customer.objects.create(external_id="alice"), Customer.objects.create(external_id="bob")
    _engage(alice, lamp)
    _engage(alice, chair)
    _engage(bob, desk)

    assert sorted(seen_product_pks("alice")) == sorted([lamp.pk, chair.pk])
    assert seen_product_pks("nobody") == []


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
