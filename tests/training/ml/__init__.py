"""Tests of training.ml, plus the planted synthetic data they share."""

from __future__ import annotations

import numpy as np

from training.ml.data import Interactions


def planted_interactions(
    *,
    num_customers: int = 300,
    num_products: int = 200,
    groups: int = 5,
    per_customer: tuple[int, int] = (10, 20),
    in_group_share: float = 0.85,
    seed: int = 0,
) -> Interactions:
    """Return interactions with planted structure: customer group g mostly engages with category g.

    Customer c is in group ``c % groups``, product p in category ``p % groups``. A customer's
    products come from their group's category with probability ``in_group_share``, else from
    the whole catalog; both draws follow a Zipf-like popularity skew, so popularity is a fair
    but beatable baseline. Each customer touches each product at most once.
    """
    rng = np.random.default_rng(seed)
    popularity = 1.0 / (1.0 + rng.permutation(num_products)) ** 0.8
    category = np.arange(num_products) % groups
    global_weights = popularity / popularity.sum()
    customers, products = [], []
    for customer in range(num_customers):
        size = int(rng.integers(per_customer[0], per_customer[1] + 1))
        in_category = popularity * (category == customer % groups)
        mixed = in_group_share * in_category / in_category.sum() + (1 - in_group_share) * global_weights
        chosen = rng.choice(num_products, size=size, replace=False, p=mixed)
        customers.append(np.full(size, customer))
        products.append(chosen)
    customer_idx = np.concatenate(customers)
    product_idx = np.concatenate(products)
    n = len(customer_idx)
    # Per-product typical dwell (seconds), so the prior has something to say.
    base_dwell_s = rng.lognormal(mean=2.5, sigma=0.7, size=num_products)
    targets = np.stack(
        [rng.uniform(0.3, 1.0, n), rng.uniform(0.2, 1.0, n), (rng.random(n) < 0.4).astype(float)], axis=1
    )
    return Interactions(
        customer_idx=customer_idx,
        product_idx=product_idx,
        targets=targets,
        dwell_ms=base_dwell_s[product_idx] * 1000 * rng.uniform(0.5, 1.5, n),
        timestamp=rng.uniform(0, 30 * 86_400, n).round(),
        num_customers=num_customers,
        num_products=num_products,
    )
