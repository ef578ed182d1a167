from django.contrib import admin
from rest_framework_api_key.admin import APIKeyModelAdmin

from .models import (
    Customer,
    Engagement,
    EngagementWatermark,
    InteractionEvent,
    Product,
    ShopApiKey,
)


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ("external_id", "created_at")
    search_fields = ("external_id",)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("external_id", "name", "category", "price", "active", "is_stub")
    list_filter = ("active", "is_stub", "category")
    search_fields = ("external_id", "name")


@admin.register(InteractionEvent)
class InteractionEventAdmin(admin.ModelAdmin):
    list_display = ("event_id", "customer", "product", "hover_ms", "dwell_ms", "clicked", "occurred_at")
    list_filter = ("clicked",)
    search_fields = ("event_id", "customer__external_id", "product__external_id")
    list_select_related = ("customer", "product")
    raw_id_fields = ("customer", "product")
    date_hierarchy = "occurred_at"
    # Events are append-only: the admin shows them, it does not edit them.
    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Engagement)
class EngagementAdmin(admin.ModelAdmin):
    list_display = ("customer", "product", "score", "event_count", "clicks", "last_event_at")
    search_fields = ("customer__external_id", "product__external_id")
    list_select_related = ("customer", "product")
    raw_id_fields = ("customer", "product")

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(EngagementWatermark)
class EngagementWatermarkAdmin(admin.ModelAdmin):
    list_display = ("name", "last_event_id", "updated_at")


@admin.register(ShopApiKey)
class ShopApiKeyAdmin(APIKeyModelAdmin):
    list_display = (*APIKeyModelAdmin.list_display, "is_admin")
    list_filter = (*APIKeyModelAdmin.list_filter, "is_admin")
