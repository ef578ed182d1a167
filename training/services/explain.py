"""Why each recommendation, and a product's similar products (docs/model.md, "Explanations").

``recommendations_explain`` explains a ranking already made: it never ranks, so asking
for reasons cannot change the answer. For a model item it cites the customer's engaged
products whose removal would lower the item's score most (the influence on the
customer's learnt vector, ``explain_space.supporting_products``), with their signals
from the engagement table and their categories (the "taste"). The sentence says the
item's own category only where it is one of those ("It is in shoes, like 2 of the 3
products behind it."), and nothing about taste otherwise. Only rows the served model
was trained on can be cited (``_training_rows``): not the products training held out
for validation and testing, not rows that changed since it was trained. For a popular
item it says why the customer got popular products.

``products_similar`` returns a product's nearest active products in the model's product
space (``explain_space.nearest_products``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from django.db.models import Count, Q, Subquery, Sum
from django.db.models.functions import Coalesce

from engagement.models import FOLD_WATERMARK, Engagement, EngagementWatermark, InteractionEvent, Product
from engagement.selectors import customer_engaged_now
from engagement.scoring import EngagementWeights
from training.serving import MAX_K, Recommendations, served_model
from training.services.dataset import channel_targets
from training.ml.explain_fold import removal_supports
from training.ml.explain_space import (
    MAX_ENGAGED,
    Dense,
    InfluenceConfig,
    negatives_sample,
    nearest_products,
    product_space,
    supporting_products,
)

# Why a customer got popular products.
REASON_NO_MODEL = "no_model"  # no promoted model serves
REASON_NEW_CUSTOMER = "new_customer"  # nothing training would learn from (yet)
REASON_NOT_IN_MODEL = "not_in_model"  # engaged since the serving model was trained
# Model items.
REASON_ENGAGED = "engaged_products"  # the cited products support it
REASON_NO_SUPPORT = "no_support"  # none of the customer's products stands out
REASON_MODEL_CHANGED = "model_changed"  # a new version was swapped in between ranking and explaining
REASON_RULE = "rule"  # a merchandising rule pinned it there (training/services/rules.py)
REASONS = (REASON_ENGAGED, REASON_NO_SUPPORT, REASON_MODEL_CHANGED, REASON_NO_MODEL, REASON_NEW_CUSTOMER,
           REASON_NOT_IN_MODEL, REASON_RULE)  # fmt: skip


@dataclass(frozen=True)
class SupportingProduct:
    product: str
    name: str
    category: str
    influence: float  # the estimated drop of the item's score without this product's engagement
    hover_s: float
    dwell_s: float
    clicks: int
    events: int

    @property
    def dwell_text(self) -> str:
        return seconds_text(self.dwell_s)

    @property
    def hover_text(self) -> str:
        return seconds_text(self.hover_s)


def seconds_text(seconds: float) -> str:
    """How the sentence and the dashboard write a signal's seconds: "45 s", "2.5 s" (halves round up)."""
    if seconds >= 10:
        return f"{int(seconds + 0.5)} s"
    return f"{int(seconds * 10 + 0.5) / 10:g} s"


@dataclass(frozen=True)
class Because:
    source: str  # "model", "popular" or "rule"
    reason: str  # one of REASONS
    sentence: str
    products: list[SupportingProduct] = field(default_factory=list)
    # The supporting products' categories, most supporting first (not the item's: the
    # sentence says the item's category only when it is one of these).
    taste: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SimilarProduct:
    product: str
    name: str
    category: str
    similarity: float  # cosine in the model's product space
    rank: int


@dataclass(frozen=True)
class SimilarProducts:
    product: str
    model_version: int | None
    reason: str | None  # None when the list is the model's; "no_model" or "not_in_model" when it is empty
    items: list[SimilarProduct]


def recommendations_explain(recommendations: Recommendations, *, category: str | None = None) -> dict[str, Because]:
    """Return why each of these recommendations was made, by product id (one or two queries)."""
    if not recommendations.items:
        return {}
    if recommendations.strategy != "model":
        because = _popular_because(recommendations.customer, category)
        return {item.product: because for item in recommendations.items}
    served = served_model()
    if served is None or served.version_id != recommendations.model_version:
        changed = Because("model", REASON_MODEL_CHANGED, "The model changed while this was answered; ask again.")
        return {item.product: changed for item in recommendations.items}
    loaded = served.loaded
    index = loaded.customer_index.get(recommendations.customer)
    if loaded.config.folds_items:
        return _folded_because(recommendations, served, index)
    config = InfluenceConfig.of_artifact(loaded.extra, loaded.metrics)
    trained = _training_rows(recommendations.customer, loaded, config) if index is not None else None
    rows = trained.rows if trained is not None else []
    items = np.array([loaded.product_index[item.product] for item in recommendations.items], dtype=np.int64)
    categories = _categories(served, items)
    if not rows:  # nothing the model trained on is left (deleted, or changed since): nothing to cite
        supports = [(np.zeros(0, dtype=np.int64), np.zeros(0))] * len(items)
    else:
        dense = Dense.of(loaded.model, loaded.prior, loaded.channel_weights)
        supports = supporting_products(
            dense,
            dense.customer_vector(loaded.model, index),
            items,
            np.array([row["index"] for row in rows], dtype=np.int64),
            trained.targets,
            negatives_sample(
                len(loaded.product_ids), trained.every_product, seed=index, positives=trained.total,
                per_positive=config.negatives_per_positive,
            ),  # fmt: skip
            config=config,
            total_engaged=trained.total,
        )
    return {
        item.product: _model_because(rows, positions, drops, category=own)
        for item, own, (positions, drops) in zip(recommendations.items, categories, supports, strict=True)
    }


def _folded_because(recommendations: Recommendations, served, index: int | None) -> dict[str, Because]:
    """For a folded model: the products whose removal from the customer's fold lowers each item most (exact).

    The served vector was folded from every engaged row the customer had when the model
    was trained (training/ml/explain_fold.py); those rows, as far as the table still
    tells (unchanged since ``as_of``), newest first as the fold orders them, are what
    can be removed. A row changed since is not in the served vector: never cited.
    """
    loaded = served.loaded
    items = np.array([loaded.product_index[item.product] for item in recommendations.items], dtype=np.int64)
    categories = _categories(served, items)
    folded_now = recommendations.customer_vector == "folded"
    if folded_now:  # folded at the request, from the products as they are now: the same fold again
        rows = _rows_now(recommendations.customer, served)
    else:
        rows = _folded_rows(recommendations.customer, loaded) if index is not None else []
    if not rows:
        supports = [(np.zeros(0, dtype=np.int64), np.zeros(0))] * len(items)
    else:
        history = np.array([row["index"] for row in rows], dtype=np.int64)
        # A request-time fold is folded again from ``rows``; a trained one is read from the model.
        served = None if folded_now else [t.weight[index].detach().numpy() for t in loaded.model.customer_tables()]
        supports = removal_supports(loaded.model, loaded.prior, loaded.channel_weights, history, items, served=served)
    return {
        item.product: _model_because(rows, positions, drops, category=own)
        for item, own, (positions, drops) in zip(recommendations.items, categories, supports, strict=True)
    }


def _folded_rows(customer: str, loaded) -> list[dict]:
    """The customer's engaged rows the served fold was made of, newest first (ties: the larger product index)."""
    _, unchanged, _ = _engaged_rows(customer, loaded)
    newest_first = sorted(unchanged, key=lambda row: (row["last_event_at"], row["index"]), reverse=True)
    return newest_first[: loaded.config.history_length + 1]  # one more: what moves in when one is removed


def _rows_now(customer: str, served) -> list[dict]:
    """The customer's products a request-time fold reads, in its order (newest first), with what they did.

    ``customer_engaged_now`` gives the products and the order serving folded them in;
    what the customer did with each is their Engagement row plus their events the fold
    has not reached yet (summed here).
    """
    # The served model the ranking came from (not asked again: a swap in between would mix two).
    catalog, loaded = served.catalog, served.loaded
    at = catalog.indices_of(customer_engaged_now(customer).engaged)[: loaded.config.history_length + 1]
    pks = catalog.pks[at].tolist()
    rows = {
        row["product_id"]: row
        for row in Engagement.objects.filter(customer__external_id=customer, product_id__in=pks).values(
            "product_id", "product__external_id", "product__name", "product__category", "hover_ms_total",
            "dwell_ms_total", "clicks", "event_count",
        )  # fmt: skip
    }
    watermark = EngagementWatermark.objects.filter(name=FOLD_WATERMARK).values("last_event_id")
    pending = (
        InteractionEvent.objects.filter(customer__external_id=customer, product_id__in=pks,
                                        pk__gt=Coalesce(Subquery(watermark), 0))  # fmt: skip
        .values("product_id", "product__external_id", "product__name", "product__category")
        .annotate(hover=Sum("hover_ms"), dwell=Sum("dwell_ms"), clicks_now=Count("pk", filter=Q(clicked=True)),
                  events=Count("pk"))  # fmt: skip
    )
    for event in pending:
        row = rows.setdefault(event["product_id"], {
            "product_id": event["product_id"], "product__external_id": event["product__external_id"],
            "product__name": event["product__name"], "product__category": event["product__category"],
            "hover_ms_total": 0, "dwell_ms_total": 0, "clicks": 0, "event_count": 0,
        })  # fmt: skip
        row["hover_ms_total"] += event["hover"] or 0
        row["dwell_ms_total"] += event["dwell"] or 0
        row["clicks"] += event["clicks_now"]
        row["event_count"] += event["events"]
    return [{**rows[pk], "index": int(i)} for pk, i in zip(pks, at.tolist(), strict=True) if pk in rows]


# Training's positives (training/services/dataset.py): a pair with some signal.
_ENGAGED = Q(hover_decayed__gt=0) | Q(dwell_decayed__gt=0) | Q(clicks_decayed__gt=0)


@dataclass(frozen=True)
class TrainingRows:
    rows: list[dict]  # the trained rows considered, strongest first (at most MAX_ENGAGED)
    targets: np.ndarray  # their channel targets as training built them, float32[len(rows), 3]
    total: int  # all the customer's trained rows (N)
    every_product: np.ndarray  # every product of the customer's the model knows (never a negative)


def _training_rows(customer: str, loaded, config: InfluenceConfig) -> TrainingRows:
    """Return the customer's rows the served model was trained on, as far as the table still tells (one query).

    Training (training/services/pipeline.py) loads the engaged rows, holds out each
    customer's newest row twice (leave_last_out: with 3 or more rows the 2 newest, with
    2 the newest; ties to the larger product index) and trains on the rest. Engagement
    keeps no first-event time, so a row whose ``last_event_at`` is after the artifact's
    ``as_of`` (the newest event it was trained on) is "changed since": new, or updated
    with signals the model never saw. Those are never cited; the hold-out is recomputed
    over the unchanged rows, counting the changed ones as if they had existed then, so
    at least every unchanged row training held out is left out (docs/model.md).
    """
    known, unchanged, as_of = _engaged_rows(customer, loaded)
    at_training = len(known)  # an upper bound on the rows the customer had then
    held_out = 2 if at_training >= 3 else 1 if at_training == 2 else 0
    newest = sorted(range(len(unchanged)), key=lambda i: (unchanged[i]["last_event_at"], unchanged[i]["index"]))
    dropped = set(newest[len(newest) - held_out :]) if held_out else set()
    trained = [row for i, row in enumerate(unchanged) if i not in dropped]
    considered = trained[:MAX_ENGAGED]
    return TrainingRows(
        rows=considered,
        targets=_targets(considered, unchanged, as_of, config.target_recency),
        total=len(trained),
        every_product=np.array([row["index"] for row in known], dtype=np.int64),
    )


def _engaged_rows(customer: str, loaded) -> tuple[list[dict], list[dict], datetime | None]:
    """Return the customer's engaged rows of products the model knows, those unchanged since ``as_of``, and it.

    One query; strongest first. A product the model does not know (created since it was
    trained) was not trained on.
    """
    values = (
        Engagement.objects.filter(_ENGAGED, customer__external_id=customer)
        .order_by("-score", "product__external_id")
        .values(
            "product__external_id", "product__name", "product__category", "hover_ms_total", "dwell_ms_total",
            "clicks", "event_count", "hover_decayed", "dwell_decayed", "clicks_decayed", "last_event_at",
        )  # fmt: skip
    )
    index = loaded.product_index
    known = [{**row, "index": index[row["product__external_id"]]} for row in values
             if row["product__external_id"] in index]  # fmt: skip
    as_of = _as_of(loaded.extra)
    unchanged = [row for row in known if as_of is None or row["last_event_at"] <= as_of]
    return known, unchanged, as_of


def _as_of(extra: dict) -> datetime | None:
    """The newest event the artifact was trained on (runs.py stores it), or None when unknown."""
    try:
        as_of = datetime.fromisoformat(extra["as_of"])
    except (KeyError, TypeError, ValueError):
        return None
    return as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=UTC)


def _targets(rows: list[dict], unchanged: list[dict], as_of: datetime | None, recency: str) -> np.ndarray:
    """The rows' channel targets as training built them (training_data_load's recency anchors).

    "customer": decayed to the customer's newest event then, here their newest unchanged
    row (held-out ones included, as in training); "shop": to ``as_of``; "none": not at all.
    """
    timestamps = np.array([row["last_event_at"].timestamp() for row in rows])
    if recency == "none" or not len(rows):
        age = np.zeros(len(rows))
    elif recency == "shop" and as_of is not None:
        age = as_of.timestamp() - timestamps
    else:
        age = max(row["last_event_at"].timestamp() for row in unchanged) - timestamps
    return channel_targets(
        hover=np.array([row["hover_decayed"] for row in rows], dtype=np.float64),
        dwell=np.array([row["dwell_decayed"] for row in rows], dtype=np.float64),
        clicks=np.array([row["clicks_decayed"] for row in rows], dtype=np.float64),
        age_seconds=age,
        weights=EngagementWeights.from_settings(),
    )


def _categories(served, items: np.ndarray) -> list[str]:
    """The recommended items' own categories, as the served catalog facts hold them ("" where none)."""
    names = {number: name for name, number in served.catalog.category_numbers.items()}
    return [names.get(int(code), "") for code in served.catalog.category_codes[items].tolist()]


def _model_because(rows: list[dict], positions: np.ndarray, drops: np.ndarray, *, category: str) -> Because:
    """Why the model ranks an item in ``category`` highly: the supporting rows at ``positions``, each its drop."""
    products = [
        SupportingProduct(
            product=rows[p]["product__external_id"],
            name=rows[p]["product__name"],
            category=rows[p]["product__category"],
            influence=round(float(drop), 5),
            hover_s=round(rows[p]["hover_ms_total"] / 1000, 1),
            dwell_s=round(rows[p]["dwell_ms_total"] / 1000, 1),
            clicks=rows[p]["clicks"],
            events=rows[p]["event_count"],
        )
        for p, drop in zip(positions.tolist(), drops.tolist(), strict=True)
    ]
    if not products:
        return Because(
            "model", REASON_NO_SUPPORT,
            "The model ranks it highly for you, though none of your products stands out as the reason.",
        )  # fmt: skip
    taste = list(dict.fromkeys(p.category for p in products if p.category))
    sentence = "Because you " + _joined([_what_you_did(p) for p in products]) + "."
    if category and category in taste:  # a taste sentence about the item itself, or none
        sentence += " " + _same_category(category, sum(p.category == category for p in products), len(products))
    return Because("model", REASON_ENGAGED, sentence, products, taste)


def _same_category(category: str, alike: int, supporting: int) -> str:
    """Say that the item is in ``category``, like ``alike`` of the ``supporting`` products behind it."""
    if supporting == 1:
        like = "like the product behind it"
    elif alike == supporting:
        like = "like both products behind it" if supporting == 2 else f"like all {supporting} products behind it"
    else:
        like = f"like {alike} of the {supporting} products behind it"
    return f"It is in {category}, {like}."


def _what_you_did(product: SupportingProduct) -> str:
    label = product.name or product.product
    clicked = "clicked it" if product.clicks == 1 else f"clicked it {product.clicks} times"
    if product.dwell_s >= 1:
        return f"spent {product.dwell_text} on {label}" + (f" and {clicked}" if product.clicks else "")
    if product.clicks:
        return clicked.replace("it", label, 1)
    return f"looked at {label}"


def _joined(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _popular_because(customer: str, category: str | None) -> Because:
    where = f"Popular in {category}" if category else "Popular in the shop"
    if served_model() is None:
        return Because("popular", REASON_NO_MODEL, f"{where}: no trained model is serving yet.")
    # What training would learn from (training_data_load's filter): engaged rows of a
    # customer not flagged for click fraud. A flagged customer is told the same as one
    # with nothing yet: the shop's customers are not told about the flag.
    if not Engagement.objects.filter(_ENGAGED, customer__external_id=customer,
                                     customer__suspicion__isnull=True).exists():  # fmt: skip
        new = f"{where}: there is not enough of your activity yet to go on."
        return Because("popular", REASON_NEW_CUSTOMER, new)
    return Because(
        "popular", REASON_NOT_IN_MODEL,
        f"{where}: the serving model was trained before your first visit; the next training will include you.",
    )  # fmt: skip


# --- similar products ---

_spaces: dict[str, np.ndarray] = {}  # artifact sha256 -> its product space (the served version and maybe the last)


def _space_of(served) -> np.ndarray:
    space = _spaces.get(served.loaded.sha256)
    if space is None:
        space = product_space(served.loaded.model)
        if len(_spaces) >= 2:
            _spaces.clear()
        _spaces[served.loaded.sha256] = space
    return space


def products_similar(*, product: Product, k: int = 10) -> SimilarProducts:
    """Return the ``k`` active products nearest ``product`` in the served model's product space.

    Empty, with a reason, when no model serves (``no_model``) or the model was trained
    before the product existed (``not_in_model``). The product itself and inactive
    products are never among them; the shortlist is checked against the catalog as
    recommendations are (in the same query that reads the rows shown).
    """
    k = max(1, min(k, MAX_K))
    served = served_model()
    if served is None:
        return SimilarProducts(product.external_id, None, REASON_NO_MODEL, [])
    index = served.loaded.product_index.get(product.external_id)
    if index is None:
        return SimilarProducts(product.external_id, served.version_id, REASON_NOT_IN_MODEL, [])
    catalog = served.catalog
    top, similarity = nearest_products(_space_of(served), index, catalog.active, k=k + 10)
    # One query both checks the shortlist against the catalog and reads the rows shown.
    products = Product.objects.filter(active=True).in_bulk(catalog.pks[top].tolist())
    items = []
    for i, s in zip(top.tolist(), similarity.tolist(), strict=True):
        row = products.get(int(catalog.pks[i]))
        if row is not None and len(items) < k:
            items.append(SimilarProduct(row.external_id, row.name, row.category, round(float(s), 4), len(items) + 1))
    return SimilarProducts(product.external_id, served.version_id, None, items)
