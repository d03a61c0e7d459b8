"""Importance charts as SVG or PNG files, drawn with matplotlib (no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from explainer.exceptions import ValidationError


def importance_plot(result: Mapping[str, Any], path: Path) -> None:
    """Horizontal bars of mean |attribution|; one bar group per model when comparing."""
    if path.suffix.lower() not in (".svg", ".png"):
        raise ValidationError.for_field("--plot", "must end in .svg or .png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = _series(result)
    labels = list(next(iter(series.values())).keys())
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.2))
    height = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        positions = [y + i * height for y in range(len(labels))]
        ax.barh(positions, [values.get(label, 0.0) for label in labels], height=height, label=name)
    ax.set_yticks([y + 0.4 - height / 2 for y in range(len(labels))], labels)
    ax.invert_yaxis()
    ax.set_xlabel("mean |contribution|")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _series(result: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    if "importances" in result:
        model = result["model"]
        name = f"{model['name']}@{model['version']}"
        return {name: {row["label"]: row["mean_abs"] for row in result["importances"]}}
    return {
        ref: {f["label"]: f["values"].get(ref, 0.0) for f in result["features"]}
        for ref in result["models"]
    }
