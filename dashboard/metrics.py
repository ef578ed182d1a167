"""A run's or version's evaluation as table rows: the model, popularity and the serving model side by side."""

from __future__ import annotations

from dataclasses import dataclass

# (group, metric, column heading); the first is the promotion gate's metric.
COLUMNS = (
    ("full", "ndcg@10", "NDCG@10"),
    ("full", "hr@10", "HR@10"),
    ("full", "recall@20", "Recall@20"),
    ("sampled", "hr@10", "HR@10 (sampled)"),
    ("sampled", "ndcg@10", "NDCG@10 (sampled)"),
)
ROWS = (
    ("model", "This model"),
    ("popularity", "Popularity"),
    ("champion", "Model serving before"),
)


@dataclass(frozen=True)
class MetricRow:
    key: str
    label: str
    values: tuple[float | None, ...]


def metric_headings() -> tuple[str, ...]:
    return tuple(heading for _, _, heading in COLUMNS)


def metric_rows(metrics: dict | None, *, model_label: str = "This model") -> list[MetricRow]:
    """Return one row per evaluated ranker found in ``metrics`` (TrainingRun/ModelVersion.metrics)."""
    rows = []
    for key, label in ROWS:
        found = (metrics or {}).get(key)
        if not isinstance(found, dict):
            continue
        if key == "model":
            label = model_label
        elif key == "champion" and found.get("version"):
            label = f"{label} (version {found['version']})"
        values = tuple(_number(found.get(group, {}).get(name)) for group, name, _ in COLUMNS)
        rows.append(MetricRow(key, label, values))
    return rows


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) else None
