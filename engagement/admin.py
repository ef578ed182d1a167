from django import forms
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from rest_framework_api_key.admin import APIKeyModelAdmin

from .models import (
    ApiKeyScope,
    Customer,
    Engagement,
    EngagementWatermark,
    InteractionEvent,
    Product,
    ShopApiKey,
)


# --- changelists: a number too large for the database is an invalid filter (issue 17 row 10) ---


class InRangeChangeList(ChangeList):
    """A changelist that answers a filter number no column can hold as the admin's invalid filter.

    The admin turns any query parameter naming a field or relation into a filter
    (``?days=...`` on products filters on the reverse relation to ProductDay). A number
    past 64 bits raised OverflowError: in SQLite's driver when the count query binds it,
    and in the date hierarchy's datetime() for ``?occurred_at__year=...``, on any database.
    Django checks the range of a plain integer field's lookup, not a relation's.
    """

    def get_queryset(self, request, exclude_parameters=None):
        try:
            return super().get_queryset(request, exclude_parameters)
        except OverflowError as exc:
            raise IncorrectLookupParameters(exc) from exc

    def get_results(self, request):
        try:
            super().get_results(request)
        except OverflowError as exc:
            raise IncorrectLookupParameters(exc) from exc


class InRangeModelAdmin(admin.ModelAdmin):
    """A ModelAdmin whose changelist redirects to ``?e=1`` (the admin's invalid filter) on an out-of-range number."""

    def get_changelist(self, request, **kwargs):
        return InRangeChangeList


@admin.register(Customer)
class CustomerAdmin(InRangeModelAdmin):
    list_display = ("external_id", "created_at")
    search_fields = ("external_id",)


@admin.register(Product)
class ProductAdmin(InRangeModelAdmin):
    list_display = ("external_id", "name", "category", "price", "active", "is_stub")
    list_filter = ("active", "is_stub", "category")
    search_fields = ("external_id", "name")


@admin.register(InteractionEvent)
class InteractionEventAdmin(InRangeModelAdmin):
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
class EngagementAdmin(InRangeModelAdmin):
    list_display = ("customer", "product", "score", "event_count", "clicks", "last_event_at")
    search_fields = ("customer__external_id", "product__external_id")
    list_select_related = ("customer", "product")
    raw_id_fields = ("customer", "product")

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(EngagementWatermark)
class EngagementWatermarkAdmin(InRangeModelAdmin):
    list_display = ("name", "last_event_id", "updated_at")


class ShopApiKeyForm(forms.ModelForm):
    # Ticked boxes rather than the JSON text area a JSONField gets by default.
    scopes = forms.MultipleChoiceField(
        choices=ApiKeyScope.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text=ShopApiKey._meta.get_field("scopes").help_text,
    )

    class Meta:
        model = ShopApiKey
        fields = "__all__"


@admin.register(ShopApiKey)
class ShopApiKeyAdmin(InRangeModelAdmin, APIKeyModelAdmin):
    form = ShopApiKeyForm
    list_display = (*APIKeyModelAdmin.list_display, "scope_list")

    @admin.display(description="scopes")
    def scope_list(self, obj: ShopApiKey) -> str:
        return ", ".join(obj.scopes)


# --- click fraud (engagement.services.fraud): deleting a row clears the flag ---

from .models import SuspiciousCustomer  # noqa: E402 (kept apart from the block above)


@admin.register(SuspiciousCustomer)
class SuspiciousCustomerAdmin(InRangeModelAdmin):
    list_display = ("customer", "too_many_events", "too_much_dwell", "max_events_per_minute",
                    "max_dwell_ms_per_minute", "first_seen_at", "last_seen_at", "flagged_at")  # fmt: skip
    list_filter = ("too_many_events", "too_much_dwell")
    search_fields = ("customer__external_id",)
    list_select_related = ("customer",)
    readonly_fields = ("customer", "too_many_events", "too_much_dwell", "max_events_per_minute",
                       "max_dwell_ms_per_minute", "first_seen_at", "last_seen_at", "flagged_at")  # fmt: skip

    def has_add_permission(self, request) -> bool:
        return False  # the fold flags; an admin only reads or clears


# --- Django's own users and groups: their changelists take the same filters (?groups=..., ?user=...) ---

from django.contrib.auth.admin import GroupAdmin, UserAdmin  # noqa: E402 (registers them first)
from django.contrib.auth.models import Group, User  # noqa: E402

for _model, _admin in ((User, UserAdmin), (Group, GroupAdmin)):
    admin.site.unregister(_model)
    admin.site.register(_model, type(_admin.__name__, (InRangeModelAdmin, _admin), {}))
