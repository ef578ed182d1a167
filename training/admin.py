from django.contrib import admin

from engagement.admin import InRangeModelAdmin

from .models import ModelPromotion, ModelVersion, TrainingRun


class ReadOnlyAdmin(InRangeModelAdmin):
    """Runs, versions and promotions change only through their services (state rules, audit)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    list_display = ("id", "status", "triggered_by", "created_at", "started_at", "finished_at", "worker")
    list_filter = ("status",)
    search_fields = ("triggered_by", "error")


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ("id", "status", "training_run", "created_at", "promoted_at", "sha256")
    list_filter = ("status",)
    # The id maps can hold a million ids: neither the list nor the change page loads them.
    exclude = ("customer_ids", "product_ids")

    def get_queryset(self, request):
        return super().get_queryset(request).without_id_maps()


@admin.register(ModelPromotion)
class ModelPromotionAdmin(ReadOnlyAdmin):
    list_display = ("id", "action", "model_version", "previous", "actor", "created_at")
    list_filter = ("action",)
