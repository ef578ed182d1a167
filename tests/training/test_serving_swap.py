"""Promotions while the API serves: every request succeeds, on the old model or the new one."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest

from engagement.models import Customer, Product
from training.services import model_version_promote

PRODUCTS = [f"p-{i}" for i in range(50)]
CUSTOMERS = [f"c-{i}" for i in range(10)]
CLIENTS = 4
REQUESTS_PER_CLIENT = 40


@pytest.mark.usefixtures("transactional_db")
def test_concurrent_requests_during_promotions_all_succeed(live_server, shop_key, make_version):
    Product.objects.bulk_create([Product(external_id=p) for p in PRODUCTS])
    Customer.objects.bulk_create([Customer(external_id=c) for c in CUSTOMERS])
    old = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=1)
    new = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=2)
    model_version_promote(version_id=old.pk, actor="test")
    answers: list[tuple[int, int | None, str]] = []
    failures: list[str] = []

    def client(n: int) -> None:
        for i in range(REQUESTS_PER_CLIENT):
            request = urllib.request.Request(
                f"{live_server.url}/api/v1/recommendations/{CUSTOMERS[(n + i) % len(CUSTOMERS)]}/?k=5",
                headers={"Authorization": f"Api-Key {shop_key}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    body = json.load(response)
                    answers.append((response.status, body["model_version"], body["strategy"]))
            except Exception as exc:  # an HTTP error or a dropped connection: both are failures
                failures.append(repr(exc))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    swaps = 0
    while any(thread.is_alive() for thread in threads):  # promote back and forth while they run
        model_version_promote(version_id=(new if swaps % 2 == 0 else old).pk, actor="test")
        swaps += 1
    for thread in threads:
        thread.join()

    assert failures == []
    assert len(answers) == CLIENTS * REQUESTS_PER_CLIENT
    assert {status for status, _, _ in answers} == {200}
    assert {strategy for _, _, strategy in answers} == {"model"}
    assert swaps >= 2
    assert {version for _, version, _ in answers} == {old.pk, new.pk}  # both served, nothing else
