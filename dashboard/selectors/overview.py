"""The overview page: counts, the serving model against popularity, events per day, the latest run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db.models import Count, Q, Sum
from django.utils import timezone

from engagement.models import Customer, InteractionEvent, Product, ProductDay
from training.models import ModelVersion, TrainingRun

ACTIVE_CUSTOMER_DAYS = 30
CHART_DAYS = 30


@dataclass(frozen=True)
class ShopCounts:
    events_today: int
    events_7_days: int
    active_customers: int  # with an event in the last ACTIVE_CUSTOMER_DAYS days
    customers: int
    active_products: int
    products: int


@dataclass(frozen=True)
class DayCount:
    day: date
    events: int


def shop_counts(*, now: datetime | None = None) -> ShopCounts:
    """Count events (raw, so not-yet-folded ones count too), customers and products."""
    now = now or timezone.now()
    midnight = datetime.combine(now.date(), time.min, tzinfo=now.tzinfo)
    events = InteractionEvent.objects
    catalog = Product.objects.aggregate(products=Count("pk"), active=Count("pk", filter=Q(active=True)))
    return ShopCounts(
        # Both range counts walk the occurred_at index.
        events_today=events.filter(occurred_at__gte=midnight, occurred_at__lte=now).count(),
        events_7_days=events.filter(occurred_at__gte=now - timedelta(days=7), occurred_at__lte=now).count(),
        active_customers=events.filter(occurred_at__gte=now - timedelta(days=ACTIVE_CUSTOMER_DAYS))
        .values("customer_id")
        .distinct()
        .count(),
        customers=Customer.objects.count(),
        active_products=catalog["active"],
        products=catalog["products"],
    )


def events_per_day(*, days: int = CHART_DAYS, today: date | None = None) -> list[DayCount]:
    """Return folded events per UTC day for the last ``days`` days, oldest first, zeros included."""
    today = today or timezone.now().date()
    first = today - timedelta(days=days - 1)
    rows = (
        ProductDay.objects.filter(day__gte=first, day__lte=today)
        .values("day")
        .annotate(events=Sum("events"))
        .order_by("day")
    )
    found = {row["day"]: row["events"] for row in rows}
    return [DayCount(day, found.get(day, 0)) for day in (first + timedelta(days=i) for i in range(days))]


def promoted_version() -> ModelVersion | None:
    return ModelVersion.objects.without_id_maps().filter(status=ModelVersion.Status.PROMOTED).first()


def latest_run() -> TrainingRun | None:
    return TrainingRun.objects.with_version().first()
