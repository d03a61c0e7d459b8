"""Builders of small audit inputs from group counts, shared by the fairness tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

SELECTED_SCORE = 0.9
UNSELECTED_SCORE = 0.1
THRESHOLD = 0.5

Inputs = dict[str, Any]


def _inputs(
    attribute: str, names: list[str], selected: list[int], labels: list[int] | None
) -> Inputs:
    n = len(names)
    return {
        "scores": np.where(np.array(selected) == 1, SELECTED_SCORE, UNSELECTED_SCORE),
        "protected": pd.DataFrame({attribute: names}),
        "attributions": pd.DataFrame({"tenure": np.zeros(n)}),
        "labels": None if labels is None else np.array(labels, dtype=np.int64),
        "threshold": THRESHOLD,
    }


@pytest.fixture
def selection_counts() -> Callable[..., Inputs]:
    """``{group: (size, selected)}`` -> audit keyword arguments without labels."""

    def build(groups: dict[str, tuple[int, int]], attribute: str = "gender") -> Inputs:
        names: list[str] = []
        selected: list[int] = []
        for name, (size, chosen) in groups.items():
            names += [name] * size
            selected += [1] * chosen + [0] * (size - chosen)
        return _inputs(attribute, names, selected, None)

    return build


@pytest.fixture
def confusion_counts() -> Callable[..., Inputs]:
    """``{group: (positives, true_positives, negatives, false_positives)}`` -> audit kwargs."""

    def build(groups: dict[str, tuple[int, int, int, int]], attribute: str = "gender") -> Inputs:
        names: list[str] = []
        selected: list[int] = []
        labels: list[int] = []
        for name, (positives, true_positives, negatives, false_positives) in groups.items():
            names += [name] * (positives + negatives)
            labels += [1] * positives + [0] * negatives
            selected += [1] * true_positives + [0] * (positives - true_positives)
            selected += [1] * false_positives + [0] * (negatives - false_positives)
        return _inputs(attribute, names, selected, labels)

    return build
