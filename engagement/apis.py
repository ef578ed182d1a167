"""The shop-facing API: events in, catalog in, popular products out (DESIGN.md "Contracts")."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from .permissions import CanIngest, CanRecommend
from .selectors import POPULAR_WINDOWS, products_popular
from .services import EventIn, ProductIn, events_ingest, products_upsert


def _limits() -> dict:
    return settings.RECSITE_INGEST


class StrictIntegerField(serializers.IntegerField):
    """An integer given as a JSON number: "12", 12.5 and true are wrong types, not 12 and 1."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON true or false; "yes" and 1 are wrong types."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictUUIDField(serializers.UUIDField):
    """A UUID given as a string; DRF would also take an integer."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


# Trimmed, so it needs a character that is not whitespace; NUL is refused (the schema says so for fuzzers).
@extend_schema_field(
    {
        "type": "string",
        "minLength": 1,
        "maxLength": settings.RECSITE_INGEST["MAX_ID_LENGTH"],
        "pattern": r"^[^\u0000]*[^\s\u0000][^\u0000]*$",
    }
)
class ExternalIdField(serializers.CharField):
    """The shop's id of a customer or product: a JSON string (DESIGN.md "string id"); 12 is a wrong type."""

    def __init__(self, **kwargs):
        super().__init__(max_length=_limits()["MAX_ID_LENGTH"], allow_blank=False, **kwargs)

    def to_internal_value(self, data):
        # Not a number: the schema says string, and "12" and 12 would be the same customer.
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictInputSerializer(serializers.Serializer):
    """A request body's object: a field it does not name is an error, never silently dropped.

    Mass assignment (OWASP API3): ``score``, ``is_staff``, ``status`` or another row's id
    sent along with the fields is answered 400 naming it, so a client learns its field is
    not taken rather than believing it was stored. Query strings are not checked: nothing
    is stored from a GET, and an unknown parameter there changes nothing.
    """

    unknown_field_message = "Unknown field: this request does not take it."

    def to_internal_value(self, data):
        unknown = sorted(str(name) for name in set(data) - set(self.fields)) if isinstance(data, dict) else []
        errors = {name: [self.unknown_field_message] for name in unknown}
        try:
            value = super().to_internal_value(data)
        except ValidationError as exc:
            if not errors or not isinstance(exc.detail, dict):
                raise
            raise ValidationError({**exc.detail, **errors}) from None
        if errors:
            raise ValidationError(errors)
        return value


class RejectedSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the item in the request.")
    errors = serializers.DictField(help_text="Field name -> list of messages.")


def validate_each(serializer: serializers.Serializer, items: list) -> tuple[list[dict], list[dict]]:
    """Validate items one by one with one bound serializer; return (valid, rejected-by-index)."""
    valid, rejected = [], []
    for index, item in enumerate(items):
        try:
            valid.append(serializer.run_validation(item))
        except ValidationError as exc:
            detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
            rejected.append({"index": index, "errors": detail})
    return valid, rejected


class EventInputSerializer(serializers.Serializer):
    """One event as the shop sends it (DESIGN.md "Contracts")."""

    event_id = StrictUUIDField(help_text="Idempotency key: a resent id is a duplicate.")
    customer = ExternalIdField(help_text="The shop's customer id (created if new).")
    product = ExternalIdField(help_text="The shop's product id (a stub is created if new).")
    hover_ms = StrictIntegerField(
        min_value=0, max_value=settings.RECSITE_INGEST["MAX_SIGNAL_MS"], default=0
    )
    dwell_ms = StrictIntegerField(
        min_value=0, max_value=settings.RECSITE_INGEST["MAX_SIGNAL_MS"], default=0
    )
    clicked = StrictBooleanField(default=False)
    occurred_at = serializers.DateTimeField(
        required=False,
        help_text="ISO 8601; default now; at most 5 minutes in the future. No offset means UTC.",
    )

    def validate_occurred_at(self, value):
        skew = timedelta(seconds=_limits()["MAX_FUTURE_SKEW_SECONDS"])
        if value > timezone.now() + skew:
            raise ValidationError(f"Must not be more than {int(skew.total_seconds())} s in the future.")
        return value


class ApiEventInputSerializer(StrictInputSerializer, EventInputSerializer):
    """An event sent to the API: those fields and no others (import_events drops a file's extra columns)."""


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What is wrong, in words.")


def _detail_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(DetailSerializer, description=description)


class ConflictSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the event in the request.")
    event_id = serializers.UUIDField(help_text="Stored before with another payload; that first version is kept.")


class EventIngestApi(APIView):
    """Store a batch of engagement events; each ``event_id`` is stored once."""

    permission_classes = [CanIngest]

    class BatchInputSerializer(StrictInputSerializer):
        events = serializers.ListField(
            child=serializers.JSONField(), max_length=settings.RECSITE_INGEST["MAX_BATCH"]
        )

    @extend_schema_serializer(component_name="EventBatch")
    class BatchDocSerializer(serializers.Serializer):
        """The request body as documented (validated item by item, not whole)."""

        events = serializers.ListField(
            child=EventInputSerializer(), max_length=settings.RECSITE_INGEST["MAX_BATCH"]
        )

    @extend_schema_serializer(component_name="EventBatchResult")
    class OutputSerializer(serializers.Serializer):
        accepted = serializers.IntegerField(help_text="Events stored by this request.")
        duplicates = serializers.IntegerField(
            help_text="Events whose event_id was already stored (or came earlier in the batch); conflicts included."
        )
        conflicts = ConflictSerializer(
            many=True,
            help_text="The duplicates whose payload differs from the stored version (same event_id, another "
            "customer, product, signal or occurred_at): nothing changed, the first version is kept.",
        )
        rejected = RejectedSerializer(many=True)

    @extend_schema(
        request=BatchDocSerializer,
        responses={
            200: OutputSerializer,
            400: OpenApiResponse(
                OutputSerializer,
                description="Every event invalid: this body, each one in `rejected`. A body that is not a batch "
                "gets `{\"detail\"}` or field name -> messages instead.",
            ),
            411: _detail_response("A chunked body without Content-Length: it is not read."),
            413: _detail_response("The body is over 1 MB."),
            503: _detail_response("The database is unavailable: resend the same batch after `Retry-After` seconds."),
        },
        summary="Send up to 1000 events",
        description=(
            "Valid events are stored even when others in the batch are rejected; rejected ones "
            "come back with their index. A resent `event_id` is a duplicate and changes nothing; "
            "one resent with another payload is also listed in `conflicts`. 400 when the body is "
            "not an object with an `events` list of at most 1000, or when every event is invalid; "
            "413 when the body is over 1 MB; nothing is stored for either. 503 with `Retry-After` "
            "when the database is unavailable: resend the same batch (event ids make that safe)."
        ),
    )
    def post(self, request):
        # Django reads a body only up to its Content-Length (WSGI), so a chunked one reads
        # as empty and would be answered "events: required": say what is wrong instead.
        meta = request.META
        if not meta.get("CONTENT_LENGTH") and "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
            return Response({"detail": "Send the body with a Content-Length; chunked bodies are not read."}, status=411)
        batch = self.BatchInputSerializer(data=request.data)
        batch.is_valid(raise_exception=True)
        items = batch.validated_data["events"]
        valid, rejected = validate_each(ApiEventInputSerializer(), items)
        rejected_indices = {r["index"] for r in rejected}
        valid_indices = [i for i in range(len(items)) if i not in rejected_indices]  # valid keeps the order
        # No occurred_at: the service stamps it when the event is received.
        events = [EventIn(**{"occurred_at": None, **data}) for data in valid]
        result = events_ingest(events=events)
        conflicts = [{"index": valid_indices[p], "event_id": events[p].event_id} for p in result.conflicts]
        body = self.OutputSerializer(
            {
                "accepted": result.accepted,
                "duplicates": result.duplicates,
                "conflicts": conflicts,
                "rejected": rejected,
            }
        ).data
        all_rejected = bool(items) and not valid
        return Response(body, status=status.HTTP_400_BAD_REQUEST if all_rejected else status.HTTP_200_OK)


class CatalogUpsertApi(APIView):
    """Create or update products; inactive products are never recommended."""

    permission_classes = [CanIngest]

    class ProductInputSerializer(StrictInputSerializer):
        product = ExternalIdField()
        name = serializers.CharField(max_length=300, allow_blank=True, default="")
        category = serializers.CharField(
            max_length=settings.RECSITE_INGEST["MAX_ID_LENGTH"], allow_blank=True, default=""
        )
        price = serializers.DecimalField(
            max_digits=12, decimal_places=2, min_value=0, allow_null=True, default=None
        )
        active = StrictBooleanField(default=True)

    @extend_schema_serializer(component_name="CatalogUpsertResult")
    class OutputSerializer(serializers.Serializer):
        created = serializers.IntegerField()
        updated = serializers.IntegerField()
        rejected = RejectedSerializer(many=True)

    @extend_schema(
        request=ProductInputSerializer(many=True),
        responses={200: OutputSerializer, 400: OutputSerializer},
        summary="Upsert up to 1000 products",
    )
    def put(self, request):
        items = request.data
        if not isinstance(items, list):
            raise ValidationError({"non_field_errors": ["Expected a JSON list of products."]})
        limit = _limits()["MAX_BATCH"]
        if len(items) > limit:
            raise ValidationError({"non_field_errors": [f"At most {limit} products per request."]})
        valid, rejected = validate_each(self.ProductInputSerializer(), items)
        result = products_upsert(products=[ProductIn(**data) for data in valid])
        body = self.OutputSerializer(
            {"created": result.created, "updated": result.updated, "rejected": rejected}
        ).data
        all_rejected = bool(items) and not valid
        return Response(body, status=status.HTTP_400_BAD_REQUEST if all_rejected else status.HTTP_200_OK)


class PopularProductSerializer(serializers.Serializer):
    product = serializers.CharField(help_text="The shop's product id.")
    score = serializers.FloatField(help_text="Summed engagement score of its customers, 3 decimals.")
    customers = serializers.IntegerField(help_text="Customers who engaged with it.")
    rank = serializers.IntegerField(help_text="1 for the most popular.")


class PopularProductListApi(APIView):
    """List the active products with the most summed engagement, best first."""

    permission_classes = [CanRecommend]

    class InputSerializer(serializers.Serializer):
        k = serializers.IntegerField(min_value=1, max_value=100, default=10, help_text="How many products.")
        days = serializers.ChoiceField(
            choices=POPULAR_WINDOWS,
            required=False,
            help_text="Count only customers active with a product in the last `days` days "
            f"(one of {', '.join(map(str, POPULAR_WINDOWS))}); default all time.",
            error_messages={"invalid_choice": f"Must be one of {', '.join(map(str, POPULAR_WINDOWS))} (days)."},
        )
        category = serializers.CharField(
            max_length=settings.RECSITE_INGEST["MAX_ID_LENGTH"],
            required=False,
            help_text="Only products of this catalog category.",
        )

    @extend_schema_serializer(component_name="PopularProductList")
    class OutputSerializer(serializers.Serializer):
        items = PopularProductSerializer(many=True)
        k = serializers.IntegerField()
        days = serializers.IntegerField(allow_null=True)
        category = serializers.CharField(allow_null=True)

    @extend_schema(
        parameters=[InputSerializer],
        responses={
            200: OutputSerializer,
            400: OpenApiResponse(description="Field name -> list of messages, for a bad query parameter."),
        },
        summary="List popular products",
        description=(
            "Active products ranked by the summed engagement score of their customers; ties go "
            "to more customers, then to the product id. Rankings are cached for 60 s by default."
        ),
    )
    def get(self, request):
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        k = params.validated_data["k"]
        days = params.validated_data.get("days")
        category = params.validated_data.get("category")
        popular = products_popular(k=k, days=days, category=category)
        items = [
            {"product": p.product, "score": p.score, "customers": p.customers, "rank": rank}
            for rank, p in enumerate(popular, start=1)
        ]
        return Response(self.OutputSerializer({"items": items, "k": k, "days": days, "category": category}).data)
