"""Per-epoch curves of a job, drawn on the server: the job page and its polled progress panel
show each validation metric (the loss among them) as an inline SVG line chart, no script (the
console's CSP allows scripts from itself only), with a title, a description and a table of the
same figures for those who cannot see the chart."""

from __future__ import annotations

import math
from typing import Any

WIDTH, HEIGHT, PAD = 480, 120, 8
"""The plot area in SVG units, and the margin that keeps end points inside the frame."""
LOWER_IS_BETTER = frozenset({"loss", "log_loss", "mae", "mse", "rmse"})


def epoch_curves(history: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """Charts of a job's ``history`` (the epochs the label party reported, oldest first): one
    per validation metric, with its points; the rows of the table alternative. None: no epoch
    yet."""
    epochs = [e for e in history or [] if isinstance(e.get("validation"), dict)]
    if not epochs:
        return None
    names = sorted({k for e in epochs for k in e["validation"]}, key=lambda k: (k != "loss", k))
    charts = [c for c in (_chart(epochs, name) for name in names) if c is not None]
    rows = [
        {
            "epoch": int(e["epoch"]),
            "train_loss": float(e.get("train_loss", math.nan)),
            "cells": [_value(e, name) for name in names],
        }
        for e in epochs
    ]
    return {"charts": charts, "names": names, "rows": rows}


def _value(epoch: dict[str, Any], name: str) -> float | None:
    value = epoch["validation"].get(name)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _chart(epochs: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    points = [(int(e["epoch"]), v) for e in epochs if (v := _value(e, name)) is not None]
    if not points:
        return None
    first, last = points[0][0], points[-1][0]
    low, high = min(v for _, v in points), max(v for _, v in points)
    span_x, span_y = max(1, last - first), (high - low) or 1.0
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD

    def x(epoch: int) -> float:
        if last == first:
            return WIDTH / 2
        return round(PAD + inner_w * (epoch - first) / span_x, 1)

    def y(value: float) -> float:
        if high == low:
            return HEIGHT / 2
        return round(PAD + inner_h * (high - value) / span_y, 1)

    drawn = [{"x": x(epoch), "y": y(v), "epoch": epoch, "value": v} for epoch, v in points]
    pick = min if name in LOWER_IS_BETTER else max
    best = pick(points, key=lambda p: p[1])
    return {
        "name": name,
        "points": drawn,
        "line": " ".join(f"{p['x']},{p['y']}" for p in drawn),
        "low": low,
        "high": high,
        "first": first,
        "last": last,
        "latest": points[-1][1],
        "best": {"epoch": best[0], "value": best[1]},
        "width": WIDTH,
        "height": HEIGHT,
    }
