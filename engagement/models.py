"""Customers, products, the events the shop sends, and the engagement folded from them."""

from django.core.exceptions import ValidationError
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey

ID_MAX_LENGTH = 100


class Customer(models.Model):
    # The shop's own id for the visitor; unique so ingestion can upsert by it.
    external_id = models.CharField(max_length=ID_MAX_LENGTH, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.external_id


class Product(models.Model):
    external_id = models.CharField(max_length=ID_MAX_LENGTH, unique=True)
    name = models.CharField(max_length=300, blank=True)
    category = models.CharField(max_length=ID_MAX_LENGTH, blank=True)
    price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    active = models.BooleanField(default=True)
    # Created by an event before the catalog named it; cleared by the catalog upsert.
    is_stub = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            # Popular products and recommendations filtered by ?category= among active ones.
            models.Index(fields=["category", "active"], name="product_category_active"),
        ]

    def __str__(self) -> str:
        return self.name or self.external_id


class InteractionEvent(models.Model):
    """One thing a visitor did with a product. Append-only: never updated, never deleted."""

    # The shop's idempotency key: the unique index decides what is a duplicate, so two
    # concurrent requests carrying the same event store it once.
    event_id = models.UUIDField(unique=True)
    # No single-column index: event_customer_time below leads with customer.
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="events", db_index=False)
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="events")
    hover_ms = models.PositiveIntegerField(default=0)
    dwell_ms = models.PositiveIntegerField(default=0)
    clicked = models.BooleanField(default=False)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # A customer's event history, newest first (dashboard customer page).
            models.Index(fields=["customer", "-occurred_at"], name="event_customer_time"),
            # Events per day and events today / last 7 days (dashboard overview).
            models.Index(fields=["occurred_at"], name="event_occurred_at"),
        ]
        # The engagement fold scans by primary key above its watermark: the pk index serves it.

    def __str__(self) -> str:
        return str(self.event_id)


class Engagement(models.Model):
    """One row per customer x product: totals of the events so far and their score.

    The decayed sums are the recency-weighted signals as of ``last_event_at``;
    ``score`` is computed from them (docs/engagement.md). Written only by the fold.
    """

    # No single-column indexes: the unique constraint leads with customer and
    # engagement_product_score with product.
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="engagements", db_index=False)
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="engagements", db_index=False)
    # Totals of the clipped per-event signals (what the score sees), in ms.
    hover_ms_total = models.BigIntegerField(default=0)
    dwell_ms_total = models.BigIntegerField(default=0)
    clicks = models.PositiveIntegerField(default=0)
    event_count = models.PositiveIntegerField(default=0)
    last_event_at = models.DateTimeField()
    # Recency-weighted sums of the normalised signals, anchored at last_event_at.
    hover_decayed = models.FloatField(default=0.0)
    dwell_decayed = models.FloatField(default=0.0)
    clicks_decayed = models.FloatField(default=0.0)
    score = models.DecimalField(max_digits=4, decimal_places=3, default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # The fold's upsert target (ON CONFLICT); also serves a customer's engagement list.
            models.UniqueConstraint(fields=["customer", "product"], name="engagement_customer_product"),
        ]
        indexes = [
            # Product popularity and a product's top engaged customers.
            models.Index(fields=["product", "-score"], name="engagement_product_score"),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} x {self.product_id}: {self.score}"


class ProductDay(models.Model):
    """One product's folded events on one UTC day: the dashboard's time windows and charts.

    Written only by the fold, in the same transaction as Engagement and from the same
    events (clipped signals, as in Engagement's totals), so both are always as of the
    same watermark. Aggregating events over a window directly took ~200 ms on the demo
    shop (SQLite, 200,000 events); summing these rows takes a few.
    """

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="days", db_index=False)
    day = models.DateField()  # UTC
    events = models.PositiveIntegerField(default=0)
    hover_ms = models.BigIntegerField(default=0)
    dwell_ms = models.BigIntegerField(default=0)
    clicks = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            # The fold's upsert target; also serves one product's days (product page chart).
            models.UniqueConstraint(fields=["product", "day"], name="product_day_product_day"),
        ]
        indexes = [
            # Rankings over the last N days and the shop's events per day.
            models.Index(fields=["day"], name="product_day_day"),
        ]

    def __str__(self) -> str:
        return f"{self.product_id} on {self.day}: {self.events} events"


# The fold's row: events with an id up to its last_event_id are in Engagement.
FOLD_WATERMARK = "engagement"


class EngagementWatermark(models.Model):
    """How far the fold has read the event table: events with id <= last_event_id are in."""

    name = models.CharField(max_length=50, primary_key=True)
    last_event_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} @ {self.last_event_id}"


class ApiKeyScope(models.TextChoices):
    """What a key may do (README "API"); each API view needs one."""

    INGEST = "ingest", "send events and the catalog"
    RECOMMEND = "recommend", "read recommendations and popular products"
    ADMIN = "admin", "start and cancel training runs, read, promote and roll back model versions"


SHOP_SCOPES = [ApiKeyScope.INGEST.value, ApiKeyScope.RECOMMEND.value]
ALL_SCOPES = [scope.value for scope in ApiKeyScope]


def shop_scopes() -> list[str]:
    """The scopes of a key created without any named: what the shop's storefront needs."""
    return list(SHOP_SCOPES)


def validate_scopes(value) -> None:
    """Accept a list of distinct known scope names, at least one."""
    if not isinstance(value, list) or not value:
        raise ValidationError("Give a list of at least one scope.")
    unknown = [scope for scope in value if scope not in ALL_SCOPES]
    if unknown or len(set(value)) != len(value):
        raise ValidationError(f"Scopes are distinct names among {', '.join(ALL_SCOPES)}; got {value!r}.")


class ShopApiKey(AbstractAPIKey):
    """A key the shop sends as ``Authorization: Api-Key <key>``; only its hash is stored."""

    # A list, not three booleans: a view asks for one scope by name, and the admin and
    # create_api_key (--scope, repeatable) name them the same way. JSON works on SQLite too.
    scopes = models.JSONField(
        default=shop_scopes,
        validators=[validate_scopes],
        help_text="What the key may do: ingest, recommend, admin (create_api_key NAME --scope ...).",
    )

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "shop API key"
        verbose_name_plural = "shop API keys"

    def has_scope(self, scope: str) -> bool:
        # A list only: scopes="ingest,admin" set in a shell would otherwise grant "in" and "admin"
        # by substring. Such a key has no scope until it is given a list.
        return isinstance(self.scopes, list) and scope in self.scopes


class SuspiciousCustomer(models.Model):
    """A customer whose traffic no person could make: kept, but left out of training (docs/engagement.md "Click fraud").

    The fold flags a customer when, in any 60 s, their events number more than
    RECSITE_FRAUD_MAX_EVENTS_PER_MINUTE, or the dwell they claim (clipped per event, as
    the score clips it) passes those 60 s by more than RECSITE_FRAUD_DWELL_SLACK_MS. Only
    live events with the shop's own occurred_at are judged (not imported history).
    Their events stay stored and folded; training and popular products skip them.
    Deleting the row clears the flag (until such traffic comes again).
    """

    customer = models.OneToOneField(Customer, on_delete=models.CASCADE, primary_key=True, related_name="suspicion")
    too_many_events = models.BooleanField(default=False, help_text="More events in a minute than a person makes.")
    too_much_dwell = models.BooleanField(default=False, help_text="More dwell in a minute than the minute holds.")
    max_events_per_minute = models.PositiveIntegerField(default=0)
    max_dwell_ms_per_minute = models.BigIntegerField(default=0)  # clipped per event, summed over the minute
    first_seen_at = models.DateTimeField(help_text="Start of the first implausible minute.")
    last_seen_at = models.DateTimeField(help_text="Start of the latest implausible minute.")
    flagged_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return f"{self.customer_id}: {', '.join(self.reasons)}"

    @property
    def reasons(self) -> list[str]:
        return [name for name, flagged in (("events_per_minute", self.too_many_events),
                                           ("dwell_over_wall_clock", self.too_much_dwell)) if flagged]  # fmt: skip
