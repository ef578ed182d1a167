"""Keep the product catalog in step with the shop's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction

from engagement.models import Product
from engagement.selectors import popular_cache_clear


@dataclass(frozen=True, slots=True)
class ProductIn:
    product: str
    name: str
    category: str
    price: Decimal | None
    active: bool


@dataclass(frozen=True, slots=True)
class CatalogResult:
    created: int
    updated: int


@transaction.atomic
def products_upsert(*, products: Sequence[ProductIn]) -> CatalogResult:
    """Create or update products by external id; a named product is no longer a stub.

    The last entry wins when a request names a product twice.
    """
    latest = {p.product: p for p in products}
    if not latest:
        return CatalogResult(created=0, updated=0)
    ids = sorted(latest)
    # Only for the counts in the answer; the upsert itself is one statement.
    existing = set(Product.objects.filter(external_id__in=ids).values_list("external_id", flat=True))
    Product.objects.bulk_create(
        [
            Product(
                external_id=pid,
                name=latest[pid].name,
                category=latest[pid].category,
                price=latest[pid].price,
                active=latest[pid].active,
                is_stub=False,
            )
            for pid in ids
        ],
        update_conflicts=True,
        unique_fields=["external_id"],
        update_fields=["name", "category", "price", "active", "is_stub", "updated_at"],
    )
    # A product just deactivated must leave the cached popular rankings too.
    transaction.on_commit(popular_cache_clear)
    return CatalogResult(created=len(ids) - len(existing), updated=len(existing))
