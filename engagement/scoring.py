"""The engagement score: the reference definition (docs/engagement.md).

Pure Python, no ORM: the fold (``engagement.services.folding``) computes the same
numbers in SQL, and the tests hold the two to each other. Training reads the score
through ``score_at`` so every pair is decayed to the same moment.

Per event, signals are clipped and normalised to [0, 1]; each is weighted by
``0.5 ** (age / half_life)`` relative to the pair's last event; the weighted sums are
compressed with ``1 - exp(-sum / scale)`` and mixed with weights that sum to 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol

# Guards shared with the SQL fold, so both give the same numbers. PostgreSQL raises
# "value out of range: underflow" where Python quietly returns 0.0, so:
# - an event more than this many half-lives older than the anchor weighs exactly 0
#   (2**-600 ~ 1e-181 cannot move a 3-decimal score);
MAX_DECAY_HALF_LIVES = 600.0
# - a decayed sum below this is stored as 0, so sum * weight stays >= 1e-281 (no
#   underflow when a sum is decayed again at the next fold);
SUM_FLOOR = 1e-100
# - exp() is given at most -700 (exp(-700) ~ 1e-304; 1 - that is exactly 1.0 anyway).
MAX_EXPONENT = 700.0

_SECONDS_PER_DAY = 86_400.0
_THOUSANDTH = Decimal("0.001")


@dataclass(frozen=True, slots=True)
class EngagementWeights:
    """The score's parameters (settings.RECSITE_ENGAGEMENT), validated on creation."""

    hover_cap_ms: int
    dwell_cap_ms: int
    hover_scale: float
    dwell_scale: float
    click_scale: float
    hover_weight: float
    dwell_weight: float
    click_weight: float
    half_life_days: float

    def __post_init__(self) -> None:
        for name in ("hover_cap_ms", "dwell_cap_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name.upper()} must be a positive integer, got {value!r}.")
        for name in ("hover_scale", "dwell_scale", "click_scale", "half_life_days"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name.upper()} must be a positive number, got {value!r}.")
        signal_weights = (self.hover_weight, self.dwell_weight, self.click_weight)
        if not all(math.isfinite(w) and w >= 0 for w in signal_weights):
            raise ValueError(f"HOVER/DWELL/CLICK_WEIGHT must be >= 0, got {signal_weights}.")
        # The score's range is [0, sum of weights]; [0, 1] is the contract.
        if not math.isclose(sum(signal_weights), 1.0, rel_tol=0, abs_tol=1e-9):
            raise ValueError(
                f"HOVER_WEIGHT + DWELL_WEIGHT + CLICK_WEIGHT must be 1, got "
                f"{' + '.join(map(repr, signal_weights))} = {sum(signal_weights)!r}."
            )

    @property
    def half_life_seconds(self) -> float:
        return self.half_life_days * _SECONDS_PER_DAY

    @classmethod
    def from_settings(cls) -> EngagementWeights:
        """Read and validate settings.RECSITE_ENGAGEMENT; fail with the setting's name."""
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured

        conf = settings.RECSITE_ENGAGEMENT
        try:
            return cls(
                hover_cap_ms=conf["HOVER_CAP_MS"],
                dwell_cap_ms=conf["DWELL_CAP_MS"],
                hover_scale=float(conf["HOVER_SCALE"]),
                dwell_scale=float(conf["DWELL_SCALE"]),
                click_scale=float(conf["CLICK_SCALE"]),
                hover_weight=float(conf["HOVER_WEIGHT"]),
                dwell_weight=float(conf["DWELL_WEIGHT"]),
                click_weight=float(conf["CLICK_WEIGHT"]),
                half_life_days=float(conf["HALF_LIFE_DAYS"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"RECSITE_ENGAGEMENT: {exc}") from exc


class _HasDecayedSums(Protocol):
    hover_decayed: float
    dwell_decayed: float
    clicks_decayed: float


@dataclass(frozen=True, slots=True)
class DecayedSums:
    """Recency-weighted sums of the normalised signals, as of some anchor time."""

    hover: float
    dwell: float
    clicks: float

    @classmethod
    def of(cls, row: _HasDecayedSums) -> DecayedSums:
        """Take the sums stored on an Engagement row (anchored at its last_event_at)."""
        return cls(hover=row.hover_decayed, dwell=row.dwell_decayed, clicks=row.clicks_decayed)


@dataclass(frozen=True, slots=True)
class EventSignals:
    """What the score reads from one event."""

    hover_ms: int
    dwell_ms: int
    clicked: bool
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class EngagementSummary:
    """What the fold stores for one customer x product (the Engagement row's numbers)."""

    hover_ms_total: int  # sum of the clipped per-event hover, ms
    dwell_ms_total: int  # sum of the clipped per-event dwell, ms
    clicks: int
    event_count: int
    last_event_at: datetime
    sums: DecayedSums  # anchored at last_event_at
    score: float  # as of last_event_at


def decay_weight(age_seconds: float, *, weights: EngagementWeights) -> float:
    """Return the weight of a signal ``age_seconds`` older than the anchor: 0.5 per half-life."""
    half_lives = age_seconds / weights.half_life_seconds
    if half_lives > MAX_DECAY_HALF_LIVES:
        return 0.0
    return 0.5**half_lives


def floor_sum(value: float) -> float:
    """Store a decayed sum too small to matter as 0 (see SUM_FLOOR)."""
    return 0.0 if value < SUM_FLOOR else value


def _saturate(total: float, scale: float) -> float:
    return 1.0 - math.exp(-min(total / scale, MAX_EXPONENT))


def round_score(raw: float) -> float:
    """Round to 3 decimals, halves up (as SQL's ROUND on numeric does; round() is half-even)."""
    return float(Decimal(raw).quantize(_THOUSANDTH, rounding=ROUND_HALF_UP))


def score_from_sums(sums: DecayedSums, *, weights: EngagementWeights) -> float:
    """Return the score, in [0, 1] with 3 decimals, of decayed sums as of their anchor."""
    raw = (
        weights.hover_weight * _saturate(sums.hover, weights.hover_scale)
        + weights.dwell_weight * _saturate(sums.dwell, weights.dwell_scale)
        + weights.click_weight * _saturate(sums.clicks, weights.click_scale)
    )
    return round_score(raw)


def sums_at(
    sums: DecayedSums, last_event_at: datetime, as_of: datetime, *, weights: EngagementWeights
) -> DecayedSums:
    """Decay sums anchored at ``last_event_at`` to the later time ``as_of``.

    An ``as_of`` before ``last_event_at`` (events may carry a few minutes of client clock
    skew into the future) is treated as ``last_event_at``: sums are never inflated.
    """
    age = max(0.0, (as_of - last_event_at).total_seconds())
    factor = decay_weight(age, weights=weights)
    return DecayedSums(
        hover=floor_sum(sums.hover * factor),
        dwell=floor_sum(sums.dwell * factor),
        clicks=floor_sum(sums.clicks * factor),
    )


def score_at(
    sums: DecayedSums,
    last_event_at: datetime,
    as_of: datetime,
    *,
    weights: EngagementWeights | None = None,
) -> float:
    """Return the score of a pair as of ``as_of`` (e.g. training time), not of its last event.

    The stored ``Engagement.score`` is as of each pair's own last event, so two pairs'
    stored scores are not comparable in time; decayed to one ``as_of`` they are.
    """
    weights = weights or EngagementWeights.from_settings()
    return score_from_sums(sums_at(sums, last_event_at, as_of, weights=weights), weights=weights)


def engagement_summarize(
    events: Iterable[EventSignals], *, weights: EngagementWeights | None = None
) -> EngagementSummary:
    """Compute one pair's Engagement numbers from all its events (the fold's reference).

    ``math.fsum`` makes the sums exactly independent of the events' order.
    """
    weights = weights or EngagementWeights.from_settings()
    events = list(events)
    if not events:
        raise ValueError("A pair's engagement needs at least one event.")
    last = max(e.occurred_at for e in events)
    hover_ms = [min(e.hover_ms, weights.hover_cap_ms) for e in events]
    dwell_ms = [min(e.dwell_ms, weights.dwell_cap_ms) for e in events]
    recency = [decay_weight((last - e.occurred_at).total_seconds(), weights=weights) for e in events]
    sums = DecayedSums(
        hover=floor_sum(math.fsum(w * (ms / weights.hover_cap_ms) for w, ms in zip(recency, hover_ms))),
        dwell=floor_sum(math.fsum(w * (ms / weights.dwell_cap_ms) for w, ms in zip(recency, dwell_ms))),
        clicks=floor_sum(math.fsum(w for w, e in zip(recency, events) if e.clicked)),
    )
    return EngagementSummary(
        hover_ms_total=sum(hover_ms),
        dwell_ms_total=sum(dwell_ms),
        clicks=sum(1 for e in events if e.clicked),
        event_count=len(events),
        last_event_at=last,
        sums=sums,
        score=score_from_sums(sums, weights=weights),
    )
