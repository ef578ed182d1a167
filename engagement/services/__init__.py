"""Writes (STYLE 4): ingestion, the catalog, and folding events into engagement."""

from .catalog import CatalogResult, ProductIn, products_upsert
from .events import EventIn, IngestResult, customers_ensure, events_ingest, products_ensure_stubs
from .folding import FoldResult, engagement_fold
from .fraud import suspicious_customers_flag

__all__ = [
    "CatalogResult",
    "EventIn",
    "FoldResult",
    "IngestResult",
    "ProductIn",
    "customers_ensure",
    "engagement_fold",
    "events_ingest",
    "products_ensure_stubs",
    "products_upsert",
    "suspicious_customers_flag",
]
