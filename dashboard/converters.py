"""The dashboard's ids in its links: ``<dashboard_id:...>`` and ``<dashboard_product_id:...>``.

Every link to a customer's or product's page is built by ``{% url %}``/``reverse()``
through these converters, so this is the one place that decides how an id is written.

An id may hold a ``/`` (ingest takes one), and it stays a ``/`` in the link: the
``.+`` pattern takes it back. But a browser resolves ``.`` and ``..`` path segments
before it sends the request (WHATWG URL standard; ``%2e`` counts as a dot there, so
percent-encoding the dots would not help), so customer ``..`` linked to ``/dashboard/``
and ``../x`` to ``/dashboard/x/``. A piece of the id between slashes that is only a dot
or two is therefore written with a ``~`` before it (``~..``), and so is a piece that
starts with ``~`` (``~~t``), so that reading strips exactly one: the links of ids with
neither are the paths they always were, and old bookmarks of them still open.
"""

from __future__ import annotations

from django.urls import register_converter

from engagement.converters import ExternalIdConverter

ESCAPE = "~"


class DashboardIdConverter(ExternalIdConverter):
    # Pieces a link must not show as they are: "." and ".." (a browser would resolve them).
    # Literal dots only: reverse() writes a "%" as %25, so no "%2e" reaches a link.
    reserved_pieces = frozenset({".", ".."})

    def to_python(self, value: str) -> str:
        pieces = super().to_python(value).split("/")
        return "/".join(piece[1:] if piece.startswith(ESCAPE) else piece for piece in pieces)

    def to_url(self, value: str) -> str:
        pieces = value.split("/")
        return "/".join(
            ESCAPE + piece if piece in self.reserved_pieces or piece.startswith(ESCAPE) else piece for piece in pieces
        )


class DashboardProductIdConverter(DashboardIdConverter):
    # Product x/reach would be written products/x/reach/: the reach panel of product x.
    reserved_pieces = DashboardIdConverter.reserved_pieces | {"reach", "similar"}


register_converter(DashboardIdConverter, "dashboard_id")
register_converter(DashboardProductIdConverter, "dashboard_product_id")
