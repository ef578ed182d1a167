"""Reads for training (STYLE 4): what a customer is recommended, one entry point for every caller.

The API and the dashboard both ask here, so they show the same answer: the precomputed
list when a fresh one answers the request (training/recommendation_cache.py), else the
one computed on the fly (training/serving.py), and why, when asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from training.recommendation_cache import recommendations_cached
from training.serving import Recommendations, recommendations_for
from training.services.explain import Because, recommendations_explain


@dataclass(frozen=True)
class RecommendationsAnswer:
    recommendations: Recommendations
    because: dict[str, Because] = field(default_factory=dict)  # by product id; empty unless explained


def recommendations_get(
    *, customer: str, k: int = 10, category: str | None = None, exclude_seen: bool = True, explain: bool = False
) -> RecommendationsAnswer:
    """Return a customer's top ``k`` products as the API serves them, with why each one when ``explain``."""
    result = recommendations_cached(customer=customer, k=k, category=category, exclude_seen=exclude_seen)
    if result is None:
        result = recommendations_for(customer=customer, k=k, category=category, exclude_seen=exclude_seen)
    # Explained after ranking: the ranking cannot depend on it.
    because = recommendations_explain(result, category=category) if explain else {}
    return RecommendationsAnswer(result, because)
