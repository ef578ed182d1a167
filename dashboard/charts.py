"""Server-drawn SVG charts: coordinates computed here, markup in ``dashboard/_chart.html``.

No chart library and no JavaScript: a chart is a polyline (or bars) in a fixed viewBox
that CSS scales to the column's width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 600
HEIGHT = 160
PAD_LEFT = 48  # room for the y-axis labels
PAD_RIGHT = 8
PAD_TOP = 10
PAD_BOTTOM = 22  # room for the x-axis labels


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # the tooltip: "<x label>: <value>"


@dataclass(frozen=True)
class Chart:
    """What ``_chart.html`` draws; ``empty`` when there is nothing to plot."""

    title: str
    kind: str  # "line" or "bars"
    width: int
    height: int
    points: str  # polyline "x,y x,y ..." (line charts)
    bars: tuple[Bar, ...]
    y_max_label: str
    y_min_label: str
    x_first_label: str
    x_last_label: str
    plot_left: int
    plot_right: int
    plot_top: int
    plot_bottom: int

    @property
    def empty(self) -> bool:
        return not self.points and not self.bars


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _frame(title: str, kind: str, labels: Sequence[str], y_min: float, y_max: float) -> dict:
    return {
        "title": title,
        "kind": kind,
        "width": WIDTH,
        "height": HEIGHT,
        "y_max_label": _fmt(y_max),
        "y_min_label": _fmt(y_min),
        "x_first_label": labels[0] if labels else "",
        "x_last_label": labels[-1] if labels else "",
        "plot_left": PAD_LEFT,
        "plot_right": WIDTH - PAD_RIGHT,
        "plot_top": PAD_TOP,
        "plot_bottom": HEIGHT - PAD_BOTTOM,
    }


def line_chart(title: str, labels: Sequence[str], values: Sequence[float | None]) -> Chart:
    """Return a line through ``values`` (None: skipped) over evenly spaced ``labels``."""
    known = [v for v in values if v is not None]
    if not known:
        return Chart(points="", bars=(), **_frame(title, "line", labels, 0, 0))
    y_min, y_max = min(known), max(known)
    if y_max == y_min:  # a flat line sits mid-height rather than dividing by zero
        y_min, y_max = y_min - 1, y_max + 1
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    step = inner_w / max(len(values) - 1, 1)
    points = " ".join(
        f"{PAD_LEFT + i * step:.1f},{PAD_TOP + inner_h * (1 - (v - y_min) / (y_max - y_min)):.1f}"
        for i, v in enumerate(values)
        if v is not None
    )
    return Chart(points=points, bars=(), **_frame(title, "line", labels, y_min, y_max))


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float]) -> Chart:
    """Return one bar per label, from zero up to its value."""
    y_max = max(values, default=0)
    if not values or y_max <= 0:
        return Chart(points="", bars=(), **_frame(title, "bars", labels, 0, 0))
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = inner_w / len(values)
    bars = tuple(
        Bar(
            x=round(PAD_LEFT + i * slot + slot * 0.1, 1),
            y=round(PAD_TOP + inner_h * (1 - v / y_max), 1),
            width=round(slot * 0.8, 1),
            height=round(inner_h * v / y_max, 1),
            label=f"{label}: {_fmt(v)}",
        )
        for i, (label, v) in enumerate(zip(labels, values, strict=True))
    )
    return Chart(points="", bars=bars, **_frame(title, "bars", labels, 0, y_max))
