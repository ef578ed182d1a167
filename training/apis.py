"""Recommendations for the shop; training runs and model versions for admins (DESIGN.md "Contracts")."""

from __future__ import annotations

from dataclasses import asdict

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from engagement.apis import StrictBooleanField, StrictInputSerializer, StrictIntegerField
from engagement.models import Product, ShopApiKey
from engagement.permissions import CanReadTraining, CanRecommend, IsRecsysAdmin
from recsite.exceptions import RETRY_AFTER_SECONDS

from .models import ModelVersion, TrainingRun
from .services import (
    BrokerUnavailable,
    PromotionRefused,
    TrainingOptionsInvalid,
    model_version_promote,
    model_version_rollback,
    training_run_cancel,
    training_run_start,
)
from .selectors import recommendations_get
from .serving import MAX_K, Recommendations
from .services.explain import REASONS, products_similar
from .api_fields import FractionBelowOneField, StrictNumberField, bounded


def actor_of(request) -> str:
    """Who is asking, in the words TrainingRun.triggered_by and ModelPromotion.actor use."""
    if isinstance(request.auth, ShopApiKey):
        return f"api-key:{request.auth.name}"
    return f"user:{request.user.get_username()}"


# --- recommendations ---


class RuleRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    action = serializers.ChoiceField(choices=["pin", "boost", "bury"])


class RecommendedItemSerializer(serializers.Serializer):
    product = serializers.CharField()
    score = serializers.FloatField(help_text="Ranks the items, higher first: the model's engagement estimate, or its blend "
        "with products engaged with together where the run chose one (docs/model.md), or summed engagement when popular. "
        "Null for a product a merchandising rule pinned that the ranking did not score.", allow_null=True)
    rank = serializers.IntegerField()
    rule = RuleRefSerializer(allow_null=True, help_text="The merchandising rule that moved it (docs/rules.md), or null.")


class SupportingProductSerializer(serializers.Serializer):
    product = serializers.CharField()
    name = serializers.CharField()
    category = serializers.CharField()
    influence = serializers.FloatField(
        help_text="The drop of the recommended product's score without this product's engagement: exact for a "
        "model that folds customers from their products (the default), estimated for one with per-customer vectors."
    )
    hover_s = serializers.FloatField()
    dwell_s = serializers.FloatField()
    clicks = serializers.IntegerField()
    events = serializers.IntegerField()


class BecauseSerializer(serializers.Serializer):
    source = serializers.ChoiceField(choices=["model", "popular", "rule"], help_text="The strategy the item came "
                                     "from, or the merchandising rule that pinned it.")  # fmt: skip
    reason = serializers.ChoiceField(choices=list(REASONS))
    sentence = serializers.CharField()
    products = SupportingProductSerializer(
        many=True, help_text="Up to 3 of the customer's engaged products (ones the model was trained on) that most "
        "support it; none for popular items or when none does.",
    )  # fmt: skip
    taste = serializers.ListField(child=serializers.CharField(), help_text="The supporting products' categories.")


class ExplainedItemSerializer(RecommendedItemSerializer):
    because = BecauseSerializer(required=False, help_text="Only with ?explain=true.")


class RecommendationsOutputSerializer(serializers.Serializer):
    customer = serializers.CharField()
    model_version = serializers.IntegerField(allow_null=True)
    strategy = serializers.ChoiceField(choices=["model", "popular"])
    customer_vector = serializers.ChoiceField(
        choices=["trained", "folded"], allow_null=True,
        help_text="With `strategy: model`: `trained`, the customer as the model was trained, or `folded`, "
        "folded at this request from their products now (a new customer, or events since the model was "
        "trained, the last moment's included). Null with `strategy: popular`.",
    )  # fmt: skip
    items = ExplainedItemSerializer(many=True)


def recommendations_payload(result: Recommendations) -> dict:
    """The body RecommendationsOutputSerializer describes, built directly (without ``because``).

    Built by hand because the serializer deep-copied its fields for every request and
    every item: about 0.4 ms of a cached answer, as much as its database statement
    (docs/precompute.md). The schema still comes from the serializer, and a test keeps
    the two equal (tests/training/test_api_recommendations.py).
    """
    return {
        "customer": result.customer,
        "model_version": result.model_version,
        "strategy": result.strategy,
        "customer_vector": result.customer_vector,
        "items": [{"product": i.product, "score": None if i.score is None else float(i.score), "rank": int(i.rank),
                   "rule": None if i.rule is None else asdict(i.rule)} for i in result.items],
    }


class RecommendationListApi(APIView):
    permission_classes = [CanRecommend]

    class InputSerializer(serializers.Serializer):
        k = serializers.IntegerField(min_value=1, max_value=MAX_K, default=10)
        category = serializers.CharField(max_length=100, required=False)
        exclude_seen = serializers.BooleanField(default=True)
        explain = serializers.BooleanField(
            default=False, help_text="Add `because` to each item: why it is recommended. The ranking is the same."
        )

    @extend_schema(
        operation_id="recommendations_list",
        parameters=[InputSerializer],
        responses={
            200: RecommendationsOutputSerializer,
            400: OpenApiResponse(description="k, category, exclude_seen or explain is not valid."),
        },
        description="A customer's top products. A customer the model does not know, or one with events "
        "since it was trained, is ranked from their products as they are at this request (`customer_vector: "
        "folded`): an accepted event counts at once. A customer with no product the model knows, or no "
        "promoted model, gets popular products (`strategy: popular`), never an error. Seen (up to this "
        "moment) and inactive products are left out. "
        "With `explain=true` each item carries `because`: for the model's items the customer's engaged "
        "products that most support it (with their signals), their categories and a sentence; for popular "
        "items why the customer got popular products.",
    )
    def get(self, request, customer: str):
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        # The precomputed list when there is a fresh one for this request (docs/precompute.md).
        answer = recommendations_get(customer=customer, **params.validated_data)
        data = recommendations_payload(answer.recommendations)
        if answer.because:
            for item in data["items"]:  # BecauseSerializer's shape; asdict is 1.7 ms cheaper for 10 items
                item["because"] = asdict(answer.because[item["product"]])
        return Response(data)


class SimilarProductSerializer(serializers.Serializer):
    product = serializers.CharField()
    name = serializers.CharField()
    category = serializers.CharField()
    similarity = serializers.FloatField(help_text="Cosine in the model's product space, in [-1, 1].")
    rank = serializers.IntegerField()


class SimilarProductsOutputSerializer(serializers.Serializer):
    product = serializers.CharField()
    model_version = serializers.IntegerField(allow_null=True)
    reason = serializers.ChoiceField(
        choices=["no_model", "not_in_model"], allow_null=True,
        help_text="Why the list is empty: no model serves, or the serving model has no vector for the product "
        "(added since it was trained, or inactive then with no engagement).",
    )  # fmt: skip
    items = SimilarProductSerializer(many=True)


class ProductSimilarApi(APIView):
    permission_classes = [CanRecommend]

    class InputSerializer(serializers.Serializer):
        k = serializers.IntegerField(min_value=1, max_value=MAX_K, default=10)

    @extend_schema(
        operation_id="products_similar",
        parameters=[InputSerializer],
        responses={
            200: SimilarProductsOutputSerializer,
            400: OpenApiResponse(description="k is not valid (1 to 100)."),
            401: OpenApiResponse(description="No credentials."),
            403: OpenApiResponse(description="The credentials may not read recommendations."),
            404: OpenApiResponse(description="No product with this id in the catalog."),
            429: OpenApiResponse(description="Throttled."),
        },
        description="The product's nearest active products in the served model's product space (item to item), "
        "itself left out. With no model serving, or a product newer than the model, the list is empty and "
        "`reason` says why (200, not an error: the product exists).",
    )
    def get(self, request, product: str):
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        found = get_object_or_404(Product, external_id=product)
        return Response(SimilarProductsOutputSerializer(products_similar(product=found, **params.validated_data)).data)


# --- training runs ---

_not_found = OpenApiResponse(description="No such id.")


class TrainingRunOutputSerializer(serializers.ModelSerializer):
    model_version = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id", "status", "triggered_by", "options", "task_id", "created_at", "started_at", "finished_at",
            "heartbeat_at", "cancel_requested_at", "progress", "history", "metrics", "error", "model_version",
        ]  # fmt: skip

    def get_model_version(self, run: TrainingRun) -> int | None:
        version = getattr(run, "model_version", None)
        return version.pk if version is not None else None


@extend_schema_serializer(component_name="TrainingOptions")
class TrainingOptionsSerializer(StrictInputSerializer):
    """Per-run overrides of settings.RECSITE_TRAINING (the service checks them again: the train command takes them too).

    Every number has a minimum and a maximum: what a run on this service can do in
    reasonable time and memory (a value past one is answered 400, naming it).
    """

    epochs = bounded(StrictIntegerField, "epochs")
    batch_size = bounded(StrictIntegerField, "batch_size", help_text="0: chosen from the training set's size.")
    lr = bounded(StrictNumberField, "lr")
    weight_decay = bounded(StrictNumberField, "weight_decay")
    negatives_per_positive = bounded(StrictIntegerField, "negatives_per_positive")
    patience = bounded(StrictIntegerField, "patience")
    seed = bounded(StrictIntegerField, "seed")
    max_validation_customers = bounded(StrictIntegerField, "max_validation_customers")
    embed_dim = bounded(StrictIntegerField, "embed_dim")
    dropout = FractionBelowOneField(required=False)
    dot_branch = StrictBooleanField(required=False)
    positive_floor = bounded(StrictNumberField, "positive_floor")
    embedding_l2 = bounded(StrictNumberField, "embedding_l2")
    customer_vector = serializers.ChoiceField(choices=["id", "items", "items+id"], required=False)
    history_length = bounded(StrictIntegerField, "history_length")
    history_decay = bounded(StrictNumberField, "history_decay")
    tied_context = StrictBooleanField(required=False)
    loss = serializers.ChoiceField(choices=["bce", "softmax"], required=False)
    softmax_negatives = bounded(StrictIntegerField, "softmax_negatives")
    negative_exponent = bounded(StrictNumberField, "negative_exponent")
    search = StrictBooleanField(
        required=False,
        help_text="true: search the training settings on this shop's validation split first; false: do not "
        "(default: when none has run, or the last is older than RECSITE_TRAINING_SEARCH_EVERY_DAYS).",
    )


class TrainingRunListApi(APIView):
    """GET lists recent runs; POST starts one (single flight: 409 with the run in flight)."""

    @extend_schema_serializer(component_name="TrainingRunStart")
    class InputSerializer(StrictInputSerializer):
        options = TrainingOptionsSerializer(required=False)

    def get_permissions(self):
        return [IsRecsysAdmin()] if self.request.method == "POST" else [CanReadTraining()]

    @extend_schema(operation_id="training_runs_list", responses={200: TrainingRunOutputSerializer(many=True)})
    def get(self, request):
        runs = TrainingRun.objects.with_version()[:50]
        return Response(TrainingRunOutputSerializer(runs, many=True).data)

    @extend_schema(
        operation_id="training_runs_start",
        request=InputSerializer,
        responses={
            201: TrainingRunOutputSerializer,
            409: OpenApiResponse(TrainingRunOutputSerializer, description="A run is already in flight: that run."),
            400: OpenApiResponse(description="Unknown or ill-typed options, or a number past its bounds (the field is named)."),
            503: OpenApiResponse(description="The task broker cannot be reached: the run was recorded as failed "
                                 "and nothing trains; try again after Retry-After seconds."),
        },
        description="Start a retrain (admin). Options override settings.RECSITE_TRAINING for this run: "
        "epochs, batch_size, lr, weight_decay, negatives_per_positive, patience, seed, "
        "max_validation_customers, embed_dim, dropout, dot_branch, positive_floor, embedding_l2.",
    )
    def post(self, request):
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            options = dict(body.validated_data.get("options", {}))
            run, created = training_run_start(triggered_by=actor_of(request), options=options)
        except TrainingOptionsInvalid as exc:
            raise ValidationError({"options": [str(exc)]}) from exc
        except BrokerUnavailable as exc:
            # The run was failed at once (its row says why); the client may try again
            # shortly. The broker's address stays in the run's error, not the answer.
            return Response(
                {"detail": f"The task broker cannot be reached: training run {exc.run_id} was not started. "
                 "Try again later."},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )  # fmt: skip
        run = TrainingRun.objects.with_version().get(pk=run.pk)
        return Response(
            TrainingRunOutputSerializer(run).data, status=status.HTTP_201_CREATED if created else status.HTTP_409_CONFLICT
        )


class TrainingRunDetailApi(APIView):
    permission_classes = [CanReadTraining]

    @extend_schema(operation_id="training_runs_retrieve", responses={200: TrainingRunOutputSerializer, 404: _not_found})
    def get(self, request, run_id: int):
        run = get_object_or_404(TrainingRun.objects.with_version(), pk=run_id)
        return Response(TrainingRunOutputSerializer(run).data)


class TrainingRunCancelApi(APIView):
    permission_classes = [IsRecsysAdmin]

    @extend_schema(
        operation_id="training_runs_cancel",
        request=None,
        responses={
            200: TrainingRunOutputSerializer,
            404: _not_found,
            409: OpenApiResponse(TrainingRunOutputSerializer, description="The run had already ended: that run."),
        },
        description="Cancel a queued run at once, or ask a running one to stop (within a second).",
    )
    def post(self, request, run_id: int):
        get_object_or_404(TrainingRun, pk=run_id)
        training_run_cancel(run_id=run_id)
        run = TrainingRun.objects.with_version().get(pk=run_id)
        ended = run.status in TrainingRun.ENDED and run.status != TrainingRun.Status.CANCELLED
        return Response(TrainingRunOutputSerializer(run).data, status=409 if ended else 200)


# --- model versions ---


class ModelVersionOutputSerializer(serializers.ModelSerializer):
    training_run = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)  # a version made by hand has none
    customers = serializers.SerializerMethodField()
    products = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        # The id maps are left out: they can be megabytes; the counts say enough.
        fields = ["id", "status", "training_run", "sha256", "config", "metrics", "customers", "products",
                  "created_at", "promoted_at"]  # fmt: skip

    def get_customers(self, version: ModelVersion) -> int:
        return version.config.get("model", {}).get("num_customers", 0)

    def get_products(self, version: ModelVersion) -> int:
        return version.config.get("model", {}).get("num_products", 0)


class ModelVersionListApi(APIView):
    permission_classes = [CanReadTraining]

    @extend_schema(operation_id="model_versions_list", responses={200: ModelVersionOutputSerializer(many=True)})
    def get(self, request):
        return Response(ModelVersionOutputSerializer(ModelVersion.objects.without_id_maps()[:50], many=True).data)


class ModelVersionDetailApi(APIView):
    permission_classes = [CanReadTraining]

    @extend_schema(operation_id="model_versions_retrieve", responses={200: ModelVersionOutputSerializer, 404: _not_found})
    def get(self, request, version_id: int):
        return Response(ModelVersionOutputSerializer(get_object_or_404(ModelVersion.objects.without_id_maps(), pk=version_id)).data)


_refused = OpenApiResponse(
    inline_serializer("PromotionRefused", {"detail": serializers.CharField()}),
    description="Refused: the artifact fails its checksum or load, or there is nothing to roll back to.",
)


class ModelVersionPromoteApi(APIView):
    permission_classes = [IsRecsysAdmin]

    @extend_schema(
        operation_id="model_versions_promote",
        request=None,
        responses={200: ModelVersionOutputSerializer, 404: _not_found, 409: _refused},
        description="Serve this version (admins may promote any version, a gate-rejected one included: "
        "the gate guards automatic promotion, not an admin's decision). Its artifact must load.",
    )
    def post(self, request, version_id: int):
        get_object_or_404(ModelVersion, pk=version_id)
        try:
            version = model_version_promote(version_id=version_id, actor=actor_of(request))
        except PromotionRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(ModelVersionOutputSerializer(ModelVersion.objects.without_id_maps().get(pk=version.pk)).data)


class ModelVersionRollbackApi(APIView):
    permission_classes = [IsRecsysAdmin]

    @extend_schema(
        operation_id="model_versions_rollback",
        request=None,
        responses={200: ModelVersionOutputSerializer, 409: _refused},
        description="Promote again the version that served before the current one.",
    )
    def post(self, request):
        try:
            version = model_version_rollback(actor=actor_of(request))
        except PromotionRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(ModelVersionOutputSerializer(ModelVersion.objects.without_id_maps().get(pk=version.pk)).data)
