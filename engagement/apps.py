from django.apps import AppConfig
from django.core import checks


class EngagementConfig(AppConfig):
    name = "engagement"
    verbose_name = "Engagement"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from .authentication import api_keys_forget
        from .checks import check_engagement_weights
        from .models import ShopApiKey

        checks.register(check_engagement_weights)
        # A key revoked or deleted through the ORM here is refused at once in this process.
        post_save.connect(api_keys_forget, sender=ShopApiKey, dispatch_uid="engagement.api_keys_forget.save")
        post_delete.connect(api_keys_forget, sender=ShopApiKey, dispatch_uid="engagement.api_keys_forget.delete")
