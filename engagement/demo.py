"""A synthetic shop with planted tastes, for demos and for checking the recommender.

Pure generation (numpy, no database): ``manage.py seed_demo`` stores what this makes.
The planted structure (docs/data.md):

- 10 categories; product ``demo-p<i>`` is in ``CATEGORIES[i % 10]``; within a category
  a few products are much more popular than the rest (Zipf-like, order drawn per seed).
- 5 taste groups of 2 categories each (``TASTE_GROUPS``); customer ``demo-c<i>`` is in
  group ``i % 5``, so :func:`demo_taste_categories` needs no database and no seed.
- About ``IN_TASTE_SHARE`` of a customer's events are on products of their two
  categories, and those events dwell and click more often than the rest.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np

from engagement.services import EventIn, ProductIn

CATEGORIES: tuple[str, ...] = (
    "books", "stationery", "electronics", "games", "home",
    "garden", "sports", "outdoor", "fashion", "beauty",
)  # fmt: skip

# name -> the two categories the group prefers; groups are disjoint so a test can tell
# a taste-following recommendation from a popular one.
TASTE_GROUPS: dict[str, tuple[str, str]] = {
    "readers": ("books", "stationery"),
    "gamers": ("electronics", "games"),
    "nesters": ("home", "garden"),
    "athletes": ("sports", "outdoor"),
    "stylists": ("fashion", "beauty"),
}
IN_TASTE_SHARE = 0.8
CUSTOMER_PREFIX = "demo-c"
PRODUCT_PREFIX = "demo-p"
# Fixed, so event ids (uuid5 of seed and index) are the same on every machine.
DEMO_NAMESPACE = uuid.UUID("5b7f3c8e-2d1a-4e0b-9c61-7a2f0d9e4b13")

_NOUNS: dict[str, tuple[str, ...]] = {
    "books": ("Novel", "Cookbook", "Atlas", "Biography", "Poetry Collection", "Field Guide"),
    "stationery": ("Notebook", "Fountain Pen", "Planner", "Sketchbook", "Pencil Set", "Desk Organiser"),
    "electronics": ("Headphones", "Smart Speaker", "Power Bank", "E-Reader", "Webcam", "Keyboard"),
    "games": ("Board Game", "Puzzle", "Card Game", "Controller", "Strategy Game", "Party Game"),
    "home": ("Table Lamp", "Throw Blanket", "Vase", "Cushion", "Wall Clock", "Candle"),
    "garden": ("Planter", "Watering Can", "Pruning Shears", "Seed Kit", "Hose", "Bird Feeder"),
    "sports": ("Yoga Mat", "Dumbbell Set", "Running Shoes", "Tennis Racket", "Jump Rope", "Water Bottle"),
    "outdoor": ("Tent", "Sleeping Bag", "Headlamp", "Hiking Poles", "Camping Stove", "Backpack"),
    "fashion": ("Scarf", "Denim Jacket", "Sneakers", "Wool Sweater", "Belt", "Sunglasses"),
    "beauty": ("Face Serum", "Lip Balm", "Hand Cream", "Shampoo", "Perfume", "Nail Polish"),
}
_ADJECTIVES = ("Classic", "Compact", "Deluxe", "Everyday", "Handmade", "Nordic", "Premium", "Travel", "Vintage", "Eco")
# Median price per category in EUR; products scatter around it (lognormal).
_MEDIAN_PRICE = dict(zip(CATEGORIES, (14, 9, 79, 29, 35, 22, 39, 69, 49, 19)))
# Mon..Sun: weekends are busier, Tuesday the quietest.
_WEEKDAY_FACTOR = np.array([0.95, 0.85, 0.9, 0.95, 1.05, 1.3, 1.25])
# Hour of day (UTC) 0..23: quiet nights, a lunch bump, an evening peak.
_HOUR_FACTOR = np.array(
    [0.3, 0.2, 0.15, 0.1, 0.1, 0.15, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0,
     1.2, 1.1, 0.9, 0.9, 1.0, 1.1, 1.3, 1.6, 1.8, 1.7, 1.2, 0.6]
)  # fmt: skip
# The shop grows: the newest day is this many times as busy as the oldest.
_GROWTH = 2.5
_DAY_S = 86_400


def demo_customer_id(index: int) -> str:
    return f"{CUSTOMER_PREFIX}{index:05d}"


def demo_product_id(index: int) -> str:
    return f"{PRODUCT_PREFIX}{index:04d}"


def demo_taste_group(customer_external_id: str) -> str:
    """Return the taste group of a demo customer (ValueError for other ids)."""
    if not customer_external_id.startswith(CUSTOMER_PREFIX):
        raise ValueError(f"{customer_external_id!r} is not a demo customer id.")
    index = int(customer_external_id.removeprefix(CUSTOMER_PREFIX))
    return list(TASTE_GROUPS)[index % len(TASTE_GROUPS)]


def demo_taste_categories(customer_external_id: str) -> set[str]:
    """Return the two categories a demo customer was planted to prefer."""
    return set(TASTE_GROUPS[demo_taste_group(customer_external_id)])


def demo_products(*, n_products: int, seed: int) -> list[ProductIn]:
    """Make the catalog: names, a category each (round robin) and plausible prices."""
    rng = np.random.default_rng([seed, 1])
    adjectives = rng.integers(len(_ADJECTIVES), size=n_products)
    nouns = rng.integers(6, size=n_products)
    scatter = rng.lognormal(0.0, 0.45, size=n_products)
    products = []
    for i in range(n_products):
        category = CATEGORIES[i % len(CATEGORIES)]
        # Shop prices end in .99; never below 0.99.
        price = Decimal(max(1, round(_MEDIAN_PRICE[category] * scatter[i]))) - Decimal("0.01")
        products.append(
            ProductIn(
                product=demo_product_id(i),
                name=f"{_ADJECTIVES[adjectives[i]]} {_NOUNS[category][nouns[i]]} {i:04d}",
                category=category,
                price=price,
                active=True,
            )
        )
    return products


@dataclass(frozen=True)
class DemoEvents:
    """Events as parallel arrays (one entry per event); ``occurred_at`` in Unix seconds."""

    seed: int
    customer: np.ndarray
    product: np.ndarray
    hover_ms: np.ndarray
    dwell_ms: np.ndarray
    clicked: np.ndarray
    occurred_at: np.ndarray

    def __len__(self) -> int:
        return len(self.customer)

    def batches(self, size: int) -> Iterator[list[EventIn]]:
        """Yield the events as ``EventIn`` lists; event ids are uuid5(seed, index)."""
        for start in range(0, len(self), size):
            stop = min(start + size, len(self))
            # tolist() once per batch: numpy scalars would be slow and not JSON/DB friendly.
            columns = zip(
                self.customer[start:stop].tolist(),
                self.product[start:stop].tolist(),
                self.hover_ms[start:stop].tolist(),
                self.dwell_ms[start:stop].tolist(),
                self.clicked[start:stop].tolist(),
                self.occurred_at[start:stop].tolist(),
            )
            yield [
                EventIn(
                    event_id=uuid.uuid5(DEMO_NAMESPACE, f"{self.seed}:{start + i}"),
                    customer=demo_customer_id(c),
                    product=demo_product_id(p),
                    hover_ms=h,
                    dwell_ms=d,
                    clicked=k,
                    occurred_at=datetime.fromtimestamp(t, UTC),
                )
                for i, (c, p, h, d, k, t) in enumerate(columns)
            ]


def _day_weights(*, days: int, now_s: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (start of each day in Unix s, oldest first, relative activity of each day)."""
    today = now_s - now_s % _DAY_S
    starts = today - _DAY_S * np.arange(days - 1, -1, -1, dtype=np.int64)
    weekday = ((starts // _DAY_S) + 3) % 7  # 1970-01-01 was a Thursday (Mon = 0)
    growth = 1.0 + (_GROWTH - 1.0) * np.linspace(0.0, 1.0, days)
    weights = growth * _WEEKDAY_FACTOR[weekday]
    weights[-1] *= (now_s - today) / _DAY_S  # today is not over yet
    return starts, weights


def demo_events(
    *,
    n_customers: int,
    n_products: int,
    n_events: int,
    seed: int,
    days: int,
    now: datetime,
    max_signal_ms: int = 3_600_000,
) -> DemoEvents:
    """Draw events with the planted tastes; the same arguments give the same events."""
    if n_customers < 1 or n_products < len(CATEGORIES) or days < 1 or n_events < 0:
        raise ValueError(f"Need >= 1 customer, >= {len(CATEGORIES)} products, >= 1 day.")
    rng = np.random.default_rng([seed, 2])
    n_cat = len(CATEGORIES)

    # Who: every customer gets a few events, the rest follow a skewed activity level.
    floor = min(3, n_events // n_customers)
    activity = rng.lognormal(0.0, 0.9, size=n_customers)
    customer = np.concatenate(
        [
            np.repeat(np.arange(n_customers), floor),
            rng.choice(n_customers, size=n_events - floor * n_customers, p=activity / activity.sum()),
        ]
    )
    rng.shuffle(customer)

    # Which category: one of the group's two with IN_TASTE_SHARE, else one of the other 8.
    cat_index = {c: i for i, c in enumerate(CATEGORIES)}
    group_cats = np.array([[cat_index[c] for c in cats] for cats in TASTE_GROUPS.values()])
    taste = group_cats[customer % len(TASTE_GROUPS)]  # (n, 2)
    in_taste = rng.random(n_events) < IN_TASTE_SHARE
    liked = taste[np.arange(n_events), rng.integers(2, size=n_events)]
    # Uniform over the 8 others: draw 0..7 and step over the two taste categories.
    other = rng.integers(n_cat - 2, size=n_events)
    low, high = taste.min(axis=1), taste.max(axis=1)
    other = other + (other >= low) + ((other + (other >= low)) >= high)
    category = np.where(in_taste, liked, other)

    # Which product within the category: Zipf-like popularity, ranks shuffled per seed.
    product = np.empty(n_events, dtype=np.int64)
    u = rng.random(n_events)
    for c in range(n_cat):
        members = np.arange(c, n_products, n_cat)
        popularity = 1.0 / (1.0 + rng.permutation(len(members))) ** 0.9
        cumulative = np.cumsum(popularity) / popularity.sum()
        mask = category == c
        product[mask] = members[np.minimum(np.searchsorted(cumulative, u[mask]), len(members) - 1)]

    # What: mostly hovers; some dwell (read the page), few clicks; more of both in taste.
    kind = rng.random(n_events)
    clicked = kind < np.where(in_taste, 0.07, 0.015)
    dwelled = clicked | (kind < np.where(in_taste, 0.30, 0.10))
    hover_ms = np.clip(rng.lognormal(np.log(900), 0.7, n_events), 50, max_signal_ms).astype(np.int64)
    dwell_ms = np.clip(rng.lognormal(np.log(np.where(in_taste, 25_000, 12_000)), 1.1), 1_000, max_signal_ms)
    dwell_ms = np.where(dwelled, dwell_ms, 0).astype(np.int64)

    # When: a day (growth x weekly rhythm), an hour (daily rhythm), a second in the hour.
    now_s = int(now.timestamp())
    starts, weights = _day_weights(days=days, now_s=now_s)
    day = rng.choice(days, size=n_events, p=weights / weights.sum())
    hour = rng.choice(24, size=n_events, p=_HOUR_FACTOR / _HOUR_FACTOR.sum())
    time_of_day = hour * 3600 + rng.integers(3600, size=n_events)
    # Today's events fall in the part of today that has happened (no future events).
    elapsed = now_s - starts[-1]
    time_of_day = np.where(day == days - 1, time_of_day * elapsed // _DAY_S, time_of_day)
    occurred_at = starts[day] + time_of_day

    return DemoEvents(
        seed=seed,
        customer=customer,
        product=product,
        hover_ms=hover_ms,
        dwell_ms=dwell_ms,
        clicked=clicked,
        occurred_at=occurred_at,
    )
