"""Reads for training (STYLE 4): what a customer is recommended, one entry point for every caller.

The API and the dashboard both ask here, so they show the same answer: the precomputed
list when a fresh one answers the request (training/recommendation_cache.py), else the
one computed on the fly (training/serving.py), and why, when asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from training.recommendation_cache import recommendations_cached
from training.serving import Recommendations, recommendations_for
from training.services.explain import REASON_RULE, Because, recommendations_explain
from training.services.rules import rules_apply, rules_fetch_size, rules_in_force


@dataclass(frozen=True)
class RecommendationsAnswer:
    recommendations: Recommendations
    because: dict[str, Because] = field(default_factory=dict)  # by product id; empty unless explained


def recommendations_get(
    *, customer: str, k: int = 10, category: str | None = None, exclude_seen: bool = True, explain: bool = False
) -> RecommendationsAnswer:
    """Return a customer's top ``k`` products as the API serves them, with why each one when ``explain``."""
    rules = rules_in_force()
    # Merchandising rules steer every list, whatever ranked it; boosts and exclusions need a deeper one.
    fetch = rules_fetch_size(rules, k) if rules else k
    result = recommendations_cached(customer=customer, k=fetch, category=category, exclude_seen=exclude_seen)
    if result is None:
        result = recommendations_for(customer=customer, k=fetch, category=category, exclude_seen=exclude_seen)
    if rules:
        result = rules_apply(result, rules, k=k, category=category, exclude_seen=exclude_seen)
    # Explained after ranking: the ranking cannot depend on it.
    because = _explained(result, category) if explain else {}
    return RecommendationsAnswer(result, because)


def _explained(result: Recommendations, category: str | None) -> dict[str, Because]:
    """Why each item: the ranking's reasons for what it ranked, the rule's for what a pin placed."""
    placed = {i.product: i.rule for i in result.items if i.score is None and i.rule is not None}
    ranked = replace(result, items=[i for i in result.items if i.product not in placed])
    because = recommendations_explain(ranked, category=category) if ranked.items else {}
    for product, rule in placed.items():
        because[product] = Because("rule", REASON_RULE, f"Pinned here by the rule \u201c{rule.name}\u201d.")
    return because
