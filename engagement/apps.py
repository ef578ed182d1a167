from django.apps import AppConfig
from django.core import checks


class EngagementConfig(AppConfig):
    name = "engagement"
    verbose_name = "Engagement"

    def ready(self) -> None:
        from .checks import check_engagement_weights

        checks.register(check_engagement_weights)
