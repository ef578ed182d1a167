"""Input fields of the training API: strict JSON numbers and the training options' bounds (used by apis.py)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from .services.options import BOUNDS as OPTION_BOUNDS


class StrictNumberField(serializers.FloatField):
    """A JSON number: "0.1" and true are wrong types (a bool is an int to Python)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        try:
            return super().to_internal_value(data)
        except OverflowError:  # an integer beyond a float's range
            self.fail("invalid")


@extend_schema_field({"type": "number", "minimum": 0, "maximum": 1, "exclusiveMaximum": True})
class FractionBelowOneField(StrictNumberField):
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not 0 <= value < 1:
            raise ValidationError("Must be at least 0 and less than 1.")
        return value


def bounded(field: type[serializers.Field], name: str, **kwargs) -> serializers.Field:
    """An optional option field with the service's bounds (options.BOUNDS): checked, and in the schema."""
    low, high = OPTION_BOUNDS[name]
    return field(min_value=low, max_value=high, required=False, **kwargs)
