"""``{% metrics_table metrics "label" %}``: a run's or version's evaluation table (dashboard/_metrics.html)."""

from django import template

from dashboard.metrics import metric_headings, metric_rows

register = template.Library()


@register.inclusion_tag("dashboard/_metrics.html")
def metrics_table(metrics: dict | None, model_label: str = "This model") -> dict:
    return {"rows": metric_rows(metrics, model_label=model_label), "headings": metric_headings()}
