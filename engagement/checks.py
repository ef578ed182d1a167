"""System checks: refuse to start with engagement weights the score can't use."""

from django.core.checks import Error
from django.core.exceptions import ImproperlyConfigured

from .scoring import EngagementWeights


def check_engagement_weights(app_configs, **kwargs) -> list[Error]:
    try:
        EngagementWeights.from_settings()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), hint="See docs/engagement.md for each weight.", id="engagement.E001")]
    return []
