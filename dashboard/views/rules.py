"""Merchandising rules: the list (in force, scheduled, ended), the form that creates one, End now, the audit log.

Merchandisers and admins alike may write rules (issue 16: steering the list is the
merchandiser's job); what a rule does is training/services/rules.py, docs/rules.md.
"""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from dashboard.access import actor_of, reader_required
from training.models import MerchandisingRule
from training.services.rules import RuleInvalid, rule_changes, rule_create, rule_end, rules_listed


class RuleForm(forms.Form):
    name = forms.CharField(max_length=100)
    action = forms.ChoiceField(choices=MerchandisingRule.Action.choices)
    target_type = forms.ChoiceField(choices=MerchandisingRule.Target.choices, label="Applies to")
    target = forms.CharField(max_length=100, label="Product id or category")
    rank = forms.IntegerField(required=False, min_value=1, max_value=100, help_text="Pin only: 1 is the top.")
    factor = forms.FloatField(required=False, min_value=1.01, max_value=100,
                              help_text="Boost or bury only: 2 halves (or doubles) the product's position.")  # fmt: skip
    starts_at = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
                                    help_text="Empty: now.")  # fmt: skip
    ends_at = forms.DateTimeField(widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))


def _page(request: HttpRequest, form: RuleForm, status: int = 200) -> HttpResponse:
    context = {"nav": "rules", "form": form, "rules": rules_listed(), "changes": rule_changes()}
    return render(request, "dashboard/rules.html", context, status=status)


@require_http_methods(["GET", "POST"])
@reader_required
def rule_list(request: HttpRequest) -> HttpResponse:
    """The rules and the form; a valid POST saves a rule (and its audit row) and comes back here."""
    if request.method == "GET":
        return _page(request, RuleForm(initial={"ends_at": (timezone.localtime() + timedelta(days=7)).replace(
            second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M")}))  # fmt: skip
    form = RuleForm(request.POST)
    if not form.is_valid():
        return _page(request, form, status=400)
    try:
        rule = rule_create(actor=actor_of(request), **form.cleaned_data)
    except RuleInvalid as exc:
        form.add_error(None, str(exc))
        return _page(request, form, status=400)
    messages.success(request, f"Rule \u201c{rule.name}\u201d saved: it applies to every list within seconds.")
    return redirect(reverse("dashboard:rule_list") + f"#rule-{rule.pk}")


@require_POST
@reader_required
def rule_end_now(request: HttpRequest, rule_id: int) -> HttpResponse:
    rule = get_object_or_404(MerchandisingRule, pk=rule_id)
    rule = rule_end(rule_id=rule.pk, actor=actor_of(request))
    messages.success(request, f"Rule \u201c{rule.name}\u201d has ended.")
    return redirect(reverse("dashboard:rule_list") + f"#rule-{rule.pk}")


urlpatterns = [
    path("rules/", rule_list, name="rule_list"),
    path("rules/<int:rule_id>/end/", rule_end_now, name="rule_end"),
]
