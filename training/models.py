"""Training runs and the model versions they produce.

State changes are conditional updates (``training.services``); the constraints below
are what makes them safe when two workers or two clicks race.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class TrainingRunQuerySet(models.QuerySet):
    def with_version(self) -> TrainingRunQuerySet:
        """Join the run's model version, without its id maps (megabytes at a million customers)."""
        return self.select_related("model_version").defer(
            "model_version__customer_ids", "model_version__product_ids"
        )


class ModelVersionQuerySet(models.QuerySet):
    def without_id_maps(self) -> ModelVersionQuerySet:
        """Leave out the id maps (megabytes at a million customers); the artifact holds them too."""
        return self.defer("customer_ids", "product_ids")


class TrainingRun(models.Model):
    """One attempt to train, evaluate and (maybe) promote a model."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        REJECTED = "rejected"  # trained fine, but the promotion gate said no

    IN_FLIGHT = (Status.QUEUED, Status.RUNNING)
    ENDED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.REJECTED)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    # Who or what asked: "api-key:<name>", "user:<username>", "command:train", ...
    triggered_by = models.CharField(max_length=200)
    # Overrides of settings.RECSITE_TRAINING for this run (epochs, seed, ...).
    options = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Written by the worker while it is alive; the sweeper fails a running run whose
    # heartbeat is older than RECSITE_TRAINING["STALE_SECONDS"] (a kill -9 writes nothing).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # The Celery task's id, chosen before it is sent (empty for manage.py train).
    task_id = models.CharField(max_length=50, blank=True)
    worker = models.CharField(max_length=200, blank=True)  # hostname:pid, for diagnosis
    # {"phase", "epoch", "epochs", "step", "steps", "loss", "eta_seconds"}; at most 1 write/s.
    progress = models.JSONField(default=dict, blank=True)
    history = models.JSONField(default=list, blank=True)  # one dict per finished epoch
    metrics = models.JSONField(default=dict, blank=True)  # model, popularity, champion
    error = models.TextField(blank=True)  # why it failed, or why the gate rejected it

    objects = TrainingRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Single flight, enforced by the database: at most one queued or running run.
            # The index is on a constant, so any two in-flight rows collide.
            models.UniqueConstraint(
                models.Value(1),
                condition=Q(status__in=["queued", "running"]),
                name="training_run_single_flight",
            ),
        ]
        indexes = [
            # The sweeper's query: running runs by heartbeat age.
            models.Index(fields=["status", "heartbeat_at"], name="training_run_status_heartbeat"),
        ]

    def __str__(self) -> str:
        return f"Training run {self.pk} ({self.status})"

    @property
    def is_in_flight(self) -> bool:
        return self.status in self.IN_FLIGHT


class ModelVersion(models.Model):
    """A trained RecommenderNN artifact, its evaluation and whether it serves."""

    class Status(models.TextChoices):
        CANDIDATE = "candidate"  # trained and stored, not (yet) serving
        PROMOTED = "promoted"  # the one the API serves
        RETIRED = "retired"  # served before; a rollback can promote it again
        REJECTED = "rejected"  # failed the gate, or its artifact failed to load

    training_run = models.OneToOneField(
        TrainingRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="model_version"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    # Relative to settings.RECSITE_TRAINING["MODEL_DIR"], so the directory can move.
    artifact_path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    config = models.JSONField(default=dict)  # {"model": RecommenderConfig, "train": TrainConfig}
    # Contiguous index -> external id; the artifact holds the same lists.
    customer_ids = models.JSONField(default=list)
    product_ids = models.JSONField(default=list)
    metrics = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)

    objects = ModelVersionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # What "the promoted model" means: at most one row at any instant.
            models.UniqueConstraint(
                models.Value(1),
                condition=Q(status="promoted"),
                name="model_version_single_promoted",
            ),
        ]

    def __str__(self) -> str:
        return f"Model version {self.pk} ({self.status})"


class ModelPromotion(models.Model):
    """The audit trail of what served when: every promote and rollback."""

    class Action(models.TextChoices):
        PROMOTE = "promote"
        ROLLBACK = "rollback"

    action = models.CharField(max_length=16, choices=Action.choices)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="promotions")
    previous = models.ForeignKey(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor = models.CharField(max_length=200)  # same vocabulary as TrainingRun.triggered_by
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} model version {self.model_version_id}"


class MerchandisingRule(models.Model):
    """A merchandiser's rule over every recommendation list, between its start and end (docs/rules.md)."""

    class Action(models.TextChoices):
        PIN = "pin"  # a product at a rank
        BOOST = "boost"  # a product or category up: its position divided by ``factor``
        BURY = "bury"  # ... down: its position multiplied by ``factor``
        EXCLUDE = "exclude"  # never in a list

    class Target(models.TextChoices):
        PRODUCT = "product"
        CATEGORY = "category"

    name = models.CharField(max_length=100)
    action = models.CharField(max_length=16, choices=Action.choices)
    target_type = models.CharField(max_length=16, choices=Target.choices)
    target = models.CharField(max_length=100)  # a product's external id, or a category
    rank = models.PositiveSmallIntegerField(null=True, blank=True)  # pin only: 1 is the top
    factor = models.FloatField(null=True, blank=True)  # boost and bury only: > 1
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-starts_at", "-id"]
        indexes = [models.Index(fields=["ends_at", "starts_at"], name="rule_window")]
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__gt=models.F("starts_at")), name="rule_ends_after_start"),
            models.CheckConstraint(
                condition=~Q(action="pin") | (Q(target_type="product") & Q(rank__gte=1) & Q(rank__lte=100)),
                name="rule_pin_is_a_product_at_a_rank",
            ),
            models.CheckConstraint(
                condition=~Q(action__in=["boost", "bury"]) | Q(factor__gt=1, factor__lte=100),
                name="rule_factor_above_one",
            ),
        ]

    def __str__(self) -> str:
        return f"Rule {self.pk} ({self.name})"


class MerchandisingRuleChange(models.Model):
    """The audit trail of rules: who created or ended which, and when."""

    class Change(models.TextChoices):
        CREATED = "created"
        ENDED = "ended"

    rule = models.ForeignKey(MerchandisingRule, on_delete=models.CASCADE, related_name="changes")
    change = models.CharField(max_length=16, choices=Change.choices)
    actor = models.CharField(max_length=200)  # same vocabulary as TrainingRun.triggered_by
    snapshot = models.JSONField(default=dict)  # the rule's fields after the change
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
