"""Writes (STYLE 4): ingestion, the catalog, and folding events into engagement."""

from .catalog import CatalogResult, ProductIn, products_upsert
from .events import EventIn, IngestResult, customers_ensure, events_ingest, products_ensure_stubs

__all__ = [
    "CatalogResult",
    "EventIn",
    "IngestResult",
    "ProductIn",
    "customers_ensure",
    "events_ingest",
    "products_ensure_stubs",
    "products_upsert",
]
