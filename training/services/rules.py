"""Merchandising rules: create and end them (with an audit row), and apply the ones in force to a list.

A rule pins a product at a rank, boosts or buries a product or a category, or excludes
one, between its start and its end. Every list the service answers goes through
``rules_apply`` (training/selectors.py), whatever ranked it: the model, a fold at the
request, popular products or a precomputed list. docs/rules.md has the semantics:

- **exclude** wins over everything: an excluded product is never in a list, not even pinned;
- **boost / bury** by a factor f > 1 move an item's position p (1 is the top) to p / f
  or p x f, then the list is sorted again (ties keep the ranking's order); several
  matching rules multiply. Positions, not scores: scores of different strategies are on
  different scales, a position means the same everywhere;
- **pin** puts an eligible product at its rank (active, in the asked category, not seen
  by the customer when seen products are left out); two pins on one rank go in the
  order they were created.

Each web process reads the rules in force at most every ``RECSITE_RULES_REFRESH_SECONDS``
(2): a saved or ended rule applies within that. With no rule in force a request costs
nothing more.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.forms.models import model_to_dict
from django.utils import timezone

from engagement.models import Product
from engagement.selectors import customer_engaged_now
from training.models import MerchandisingRule, MerchandisingRuleChange
from training.serving import RecommendedItem, Recommendations

Action, Target = MerchandisingRule.Action, MerchandisingRule.Target

# The longest list a boost may draw from (the API's largest k): a boost of 10 on k = 10
# looks 100 deep, and no further.
MAX_FETCH = 100
# Spare candidates for the ones exclusions take out.
EXCLUDE_MARGIN = 10


class RuleInvalid(ValueError):
    """A rule that cannot be saved; the message says why, for the person who wrote it."""


@dataclass(frozen=True)
class RuleRef:
    """What an item says about the rule that placed or moved it (the API's ``rule``)."""

    id: int
    name: str
    action: str


@dataclass(frozen=True)
class RuleInForce:
    id: int
    name: str
    action: str
    target_type: str
    target: str
    rank: int | None
    factor: float | None

    @property
    def ref(self) -> RuleRef:
        return RuleRef(self.id, self.name, self.action)


# --- writing rules ---


def rule_create(
    *,
    actor: str,
    name: str,
    action: str,
    target_type: str,
    target: str,
    ends_at: datetime,
    starts_at: datetime | None = None,
    rank: int | None = None,
    factor: float | None = None,
) -> MerchandisingRule:
    """Save a rule and its audit row in one transaction; ``RuleInvalid`` says what is wrong."""
    starts_at = starts_at or timezone.now()
    name, target = (name or "").strip(), (target or "").strip()
    if not name:
        raise RuleInvalid("Give the rule a name.")
    if action not in Action.values:
        raise RuleInvalid(f"The action must be one of {', '.join(Action.values)}.")
    if target_type not in Target.values:
        raise RuleInvalid("The target must be a product or a category.")
    if not target:
        raise RuleInvalid("Name the product or category the rule is about.")
    if ends_at <= starts_at:
        raise RuleInvalid("The rule must end after it starts.")
    if action == Action.PIN:
        if target_type != Target.PRODUCT:
            raise RuleInvalid("Only a product can be pinned.")
        if not isinstance(rank, int) or not 1 <= rank <= MAX_FETCH:
            raise RuleInvalid(f"A pin needs a rank from 1 to {MAX_FETCH}.")
        factor = None
    elif action in (Action.BOOST, Action.BURY):
        if not isinstance(factor, int | float) or not (1 < factor <= 100) or not math.isfinite(factor):
            raise RuleInvalid("A boost or bury needs a factor above 1 and at most 100.")
        rank = None
    else:
        rank = factor = None
    if target_type == Target.PRODUCT and not Product.objects.filter(external_id=target).exists():
        raise RuleInvalid(f"There is no product {target!r}.")
    if target_type == Target.CATEGORY and not Product.objects.filter(category=target).exists():
        raise RuleInvalid(f"No product is in the category {target!r}.")
    with transaction.atomic():
        rule = MerchandisingRule.objects.create(
            name=name[:100], action=action, target_type=target_type, target=target, rank=rank,
            factor=float(factor) if factor is not None else None, starts_at=starts_at, ends_at=ends_at,
            created_by=actor,
        )  # fmt: skip
        _audit(rule, MerchandisingRuleChange.Change.CREATED, actor)
    rules_forget()
    return rule


def rule_end(*, rule_id: int, actor: str) -> MerchandisingRule:
    """End a rule now (a scheduled one never starts); one that has ended already is left as it is."""
    now = timezone.now()
    with transaction.atomic():
        rule = MerchandisingRule.objects.select_for_update().get(pk=rule_id)
        if rule.ends_at <= now:
            return rule
        # A scheduled rule ended before its start never comes into force: it ends now, and
        # (so that it still ends after it starts) starts a microsecond before.
        rule.starts_at = min(rule.starts_at, now - timedelta(microseconds=1))
        rule.ends_at = now
        rule.save(update_fields=["starts_at", "ends_at"])
        _audit(rule, MerchandisingRuleChange.Change.ENDED, actor)
    rules_forget()
    return rule


def _audit(rule: MerchandisingRule, change: str, actor: str) -> None:
    snapshot = {key: (value.isoformat() if isinstance(value, datetime) else value)
                for key, value in model_to_dict(rule).items()}  # fmt: skip
    MerchandisingRuleChange.objects.create(rule=rule, change=change, actor=actor, snapshot=snapshot)


# --- the rules in force, per process ---


class _InForce:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: tuple[RuleInForce, ...] = ()
        self.read_at = -math.inf
        # A rule's start or end between two reads: read again at that moment, not up to 2 s later.
        self.next_change: datetime | None = None


_in_force = _InForce()


def rules_forget() -> None:
    """Read the rules again at the next request (this process saved or ended one; tests)."""
    _in_force.read_at = -math.inf


def rules_in_force() -> tuple[RuleInForce, ...]:
    """The rules in force now, read from the database at most every RECSITE_RULES_REFRESH_SECONDS."""
    state, every = _in_force, settings.RECSITE_RULES_REFRESH_SECONDS
    now_monotonic = time.monotonic()
    if now_monotonic - state.read_at < every and (state.next_change is None or timezone.now() < state.next_change):
        return state.rules
    with state.lock:
        now = timezone.now()
        rows = list(MerchandisingRule.objects.filter(ends_at__gt=now).order_by("created_at", "id"))
        state.rules = tuple(
            RuleInForce(r.pk, r.name, r.action, r.target_type, r.target, r.rank, r.factor)
            for r in rows
            if r.starts_at <= now
        )
        moments = [r.starts_at for r in rows if r.starts_at > now] + [r.ends_at for r in rows]
        state.next_change = min(moments) if moments else None
        state.read_at = now_monotonic
    return state.rules


def rules_listed(*, now: datetime | None = None) -> dict[str, list[MerchandisingRule]]:
    """Every rule for the dashboard, as in force, scheduled and ended (newest first)."""
    now = now or timezone.now()
    rules = list(MerchandisingRule.objects.all())
    return {
        "in_force": [r for r in rules if r.starts_at <= now < r.ends_at],
        "scheduled": [r for r in rules if r.starts_at > now],
        "ended": [r for r in rules if r.ends_at <= now],
    }


def rule_changes(*, limit: int = 50) -> list[MerchandisingRuleChange]:
    return list(MerchandisingRuleChange.objects.select_related("rule")[:limit])


# --- applying them ---


def rules_fetch_size(rules: tuple[RuleInForce, ...], k: int) -> int:
    """How many ranked items the rules need to fill ``k``: boosts reach deeper, exclusions take some out."""
    boost = max((r.factor or 1.0 for r in rules if r.action == Action.BOOST), default=1.0)
    excludes = any(r.action == Action.EXCLUDE for r in rules)
    return min(MAX_FETCH, max(k, math.ceil(k * boost)) + (EXCLUDE_MARGIN if excludes else 0))


def rules_apply(
    result: Recommendations,
    rules: tuple[RuleInForce, ...],
    *,
    k: int,
    category: str | None = None,
    exclude_seen: bool = True,
) -> Recommendations:
    """Return ``result`` (ranked ``rules_fetch_size`` deep) steered by ``rules``, cut to ``k``, ranks renumbered."""
    if not rules:
        return replace(result, items=_renumbered(result.items[:k]))
    items = list(result.items)
    categories = _categories_of([i.product for i in items]) if _about_categories(rules) else {}

    def matches(rule: RuleInForce, product: str) -> bool:
        if rule.target_type == Target.PRODUCT:
            return rule.target == product
        return categories.get(product) == rule.target

    excluded = [r for r in rules if r.action == Action.EXCLUDE]
    items = [i for i in items if not any(matches(r, i.product) for r in excluded)]

    # Boost and bury: positions, divided or multiplied by the factors of the rules that match.
    moved: list[tuple[float, int, RecommendedItem]] = []
    for position, item in enumerate(items, start=1):
        key, by = float(position), None
        for rule in rules:
            if rule.action in (Action.BOOST, Action.BURY) and matches(rule, item.product):
                key = key / rule.factor if rule.action == Action.BOOST else key * rule.factor
                by = by or rule.ref
        moved.append((key, position, replace(item, rule=by) if by else item))
    items = [item for _, _, item in sorted(moved, key=lambda m: (m[0], m[1]))]

    pins = sorted((r for r in rules if r.action == Action.PIN), key=lambda r: r.rank)
    if pins:
        items = _pinned(items, pins, excluded, result.customer, category, exclude_seen)
    return replace(result, items=_renumbered(items[:k]))


def _pinned(items, pins, excluded, customer, category, exclude_seen) -> list[RecommendedItem]:
    by_product = {i.product: i for i in items}
    absent = [p.target for p in pins if p.target not in by_product]
    eligible = set(_eligible(absent, customer, category, exclude_seen, excluded)) if absent else set()
    placed: list[tuple[RecommendedItem, int]] = []
    for pin in pins:
        if pin.target in by_product:
            item = by_product[pin.target]
        elif pin.target in eligible:
            item = RecommendedItem(pin.target, None, 0)
        else:
            continue
        if any(p.product == item.product for p, _ in placed):
            continue
        placed.append((replace(item, rule=pin.ref), pin.rank))
    pinned_products = {item.product for item, _ in placed}
    rest = [i for i in items if i.product not in pinned_products]
    for item, rank in placed:  # by rank, then the order rules were created in
        rest.insert(min(rank - 1, len(rest)), item)
    return rest


def _eligible(products, customer, category, exclude_seen, excluded) -> list[str]:
    """Of ``products`` (not in the ranked list), those a pin may show: active, in ``category``, unseen, not excluded."""
    query = Product.objects.filter(external_id__in=products, active=True)
    if category is not None:
        query = query.filter(category=category)
    for rule in excluded:
        query = query.exclude(**({"external_id": rule.target} if rule.target_type == Target.PRODUCT
                                 else {"category": rule.target}))  # fmt: skip
    found = dict(query.values_list("pk", "external_id"))
    if exclude_seen and found:
        seen = set(customer_engaged_now(customer).seen)
        found = {pk: external for pk, external in found.items() if pk not in seen}
    return list(found.values())


def _about_categories(rules) -> bool:
    return any(r.target_type == Target.CATEGORY for r in rules)


def _categories_of(products: list[str]) -> dict[str, str]:
    return dict(Product.objects.filter(external_id__in=products).values_list("external_id", "category"))


def _renumbered(items: list[RecommendedItem]) -> list[RecommendedItem]:
    return [item if item.rank == rank else replace(item, rank=rank) for rank, item in enumerate(items, start=1)]

