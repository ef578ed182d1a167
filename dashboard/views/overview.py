"""The overview page."""

from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from dashboard.access import reader_required
from dashboard.charts import bar_chart
from dashboard.selectors.overview import events_per_day, latest_run, promoted_version, shop_counts


@require_GET
@reader_required
def overview(request):
    days = events_per_day()
    version = promoted_version()
    context = {
        "nav": "overview",
        "counts": shop_counts(),
        "version": version,
        "version_age": timezone.now() - version.promoted_at if version and version.promoted_at else None,
        "latest_run": latest_run(),
        "chart": bar_chart(
            f"Events per day, last {len(days)} days (UTC)",
            [d.day.strftime("%b %d") for d in days],
            [d.events for d in days],
        ),
    }
    return render(request, "dashboard/overview.html", context)
