"""Attribution disparity: does the model lean on a feature more for some groups than others?

For every group and raw feature, the mean absolute attribution over the group's records. A
feature's disparity compares those means across the groups large enough to judge:

- ``gap``: highest group mean minus lowest group mean (in the attributions' own units);
- ``relative_gap``: ``gap`` divided by the highest group mean, in [0, 1] (0.0 when the
  feature carries no attribution in any group).

Features are ranked by ``gap``, then ``relative_gap``, then name; the audit lists the top
:data:`TOP_FEATURES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["TOP_FEATURES", "FeatureGap", "feature_gaps", "group_means"]

TOP_FEATURES = 5


@dataclass(frozen=True)
class FeatureGap:
    feature: str
    gap: float
    relative_gap: float
    max_group: str
    max_mean_abs: float
    min_group: str
    min_mean_abs: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "gap": self.gap,
            "relative_gap": self.relative_gap,
            "max_group": self.max_group,
            "max_mean_abs": self.max_mean_abs,
            "min_group": self.min_group,
            "min_mean_abs": self.min_mean_abs,
        }


def group_means(
    attributions: NDArray[np.float64],
    codes: NDArray[np.intp],
    n_groups: int,
    *,
    absolute: bool = True,
) -> NDArray[np.float64]:
    """An ``n_groups x n_features`` table of mean |attribution| (or mean signed attribution).

    Sums are exact (``math.fsum``), so groups with equal attributions get equal means rather
    than means that differ by rounding noise. Every group is non-empty.
    """
    values = np.abs(attributions) if absolute else attributions
    table = np.zeros((n_groups, attributions.shape[1]), dtype=np.float64)
    for group in range(n_groups):
        rows = values[codes == group]
        for column in range(values.shape[1]):
            table[group, column] = math.fsum(rows[:, column].tolist()) / rows.shape[0]
    return table


def feature_gaps(
    means: NDArray[np.float64], group_names: list[str], feature_names: tuple[str, ...]
) -> list[FeatureGap]:
    """Every feature's disparity across the given groups (rows of ``means``), ranked.

    ``relative_gap`` is the gap over the largest magnitude among the means (for mean
    |attribution|, the highest mean).

    Empty when fewer than two groups are given: there is nothing to compare.
    """
    if len(group_names) < 2:
        return []
    gaps = []
    for column, feature in enumerate(feature_names):
        values = [float(value) for value in means[:, column]]
        # Groups are sorted by name; among equals the highest is the first, the lowest the
        # last, so the two differ even when every group has the same mean.
        high = values.index(max(values))
        low = len(values) - 1 - values[::-1].index(min(values))
        gap = values[high] - values[low]
        scale = max(abs(value) for value in values)
        gaps.append(
            FeatureGap(
                feature=feature,
                gap=gap,
                relative_gap=gap / scale if scale > 0.0 else 0.0,
                max_group=group_names[high],
                max_mean_abs=values[high],
                min_group=group_names[low],
                min_mean_abs=values[low],
            )
        )
    return sorted(gaps, key=lambda item: (-item.gap, -item.relative_gap, item.feature))
