"""``<external_id:...>``: the shop's id of a customer or product in a URL path, read as ingest stores it.

Ingest takes any non-blank text as an id (``ExternalIdField``), a ``/`` included, and
trims leading and trailing whitespace. Django decodes ``%2F`` before it routes, so the
id matches ``.+`` (the ``path`` converter's pattern), never ``<str:>``'s ``[^/]+``, and
is trimmed the same way, so ``%20a%20`` reads customer ``a``. A path that trims to
nothing does not match (404): no customer or product can have a blank id.
"""

from __future__ import annotations

from django.urls import register_converter


class ExternalIdConverter:
    regex = ".+"

    def to_python(self, value: str) -> str:
        # str.strip, as DRF's CharField(trim_whitespace=True) trims at ingest.
        external_id = value.strip()
        if not external_id:
            raise ValueError("a blank id")
        return external_id

    def to_url(self, value: str) -> str:
        return value  # reverse() percent-encodes it, and leaves "/" as a separator the pattern takes


register_converter(ExternalIdConverter, "external_id")
