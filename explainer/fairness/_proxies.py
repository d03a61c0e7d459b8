r"""Likely proxies: features whose values track a protected attribute.

The model never sees the protected attribute, but it can still treat groups differently
through a feature that stands in for it (a postcode for ethnicity, a product tier for age).
For every attributed raw feature the audit measures its association with the attribute, on
a scale from 0 (independent) to 1 (the feature's values sort records into the groups), with
one deterministic measure per kind of feature:

- **categorical** features (strings, booleans, categories): **Cramér's V with Bergsma's
  bias correction** (Bergsma 2013, *J. Korean Stat. Soc.* 42:323-328). With the Pearson
  chi-squared statistic :math:`\chi^2` (no continuity correction) of the r x k table of
  feature value by group, over the n records whose feature value is present,

  .. math::
     \tilde\varphi^2 = \max\Big(0, \frac{\chi^2}{n} - \frac{(k-1)(r-1)}{n-1}\Big),\quad
     \tilde r = r - \frac{(r-1)^2}{n-1},\quad \tilde k = k - \frac{(k-1)^2}{n-1},\quad
     V = \sqrt{\tilde\varphi^2 / \min(\tilde k - 1, \tilde r - 1)}

- **numeric** features: the **correlation ratio with the same kind of correction**
  (Kelley's epsilon): with the total and within-group sums of squares of the feature over
  the n records where it is present and the k groups among them,

  .. math::
     \varepsilon = \sqrt{\max\Big(0, 1 - \frac{SS_{within} / (n - k)}{SS_{total} / (n - 1)}\Big)}

Both are 1.0 when the feature determines the group and close to 0 for an independent
feature. The uncorrected measures are biased upwards by a feature's many distinct values and
by small samples: a postcode with 1,000 values among 7,000 records has an uncorrected V of
about 0.38 with gender when the two are independent, which would wrongly name it a proxy.
A measure is 0.0 where it is undefined (a single group or value, a constant feature, fewer
records than groups). Missing feature values are left out of that feature's measure.

When the raw feature values are not supplied, the correlation ratio is taken of each
feature's signed attributions instead (measure ``attribution_correlation_ratio``): the
attributions are a function of the feature's value, so they track the attribute where the
feature does.

A feature whose association is at or above ``FairnessBounds.proxy_association`` is listed,
by association, largest first, with two gaps across the groups large enough to judge (null
when fewer than two are):

- ``attribution_gap``: the spread of the groups' mean |attribution| (how much more the model
  leans on the feature for some groups, as in the attribution disparity);
- ``signed_attribution_gap``: the spread of the groups' mean signed attribution. A proxy
  that pushes one group's scores up and another's down moves their selection rates apart
  even when its mean |attribution| is the same in both, so this is the gap that shows the
  proxy at work.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from explainer.fairness._attribution import FeatureGap

__all__ = [
    "MEASURE_NAMES",
    "Measure",
    "correlation_ratio",
    "cramers_v",
    "feature_association",
    "likely_proxies",
]

Measure = Literal["cramers_v", "correlation_ratio", "attribution_correlation_ratio"]
MEASURE_NAMES: dict[Measure, str] = {
    "cramers_v": "Cramér's V",
    "correlation_ratio": "correlation ratio",
    "attribution_correlation_ratio": "correlation ratio of its attributions",
}
REASON = (
    "'{feature}' tracks {attribute}: {measure} {association:.2f} is at or above the proxy "
    "threshold ({bound}){source}; {gap_text}."
)
GAP_TEXT = (
    "the model's mean |attribution| for it differs by {gap:.4g} between groups "
    "('{high}' {high_value:.4g} versus '{low}' {low_value:.4g})"
)
SAME_GAP_TEXT = "the model's mean |attribution| for it is the same in every group ({value:.4g})"
SIGNED_TEXT = (
    ", and its mean signed attribution ranges from {low_value:+.4g} for '{low}' to "
    "{high_value:+.4g} for '{high}'"
)
NO_GAP_TEXT = "its attributions cannot be compared across groups (fewer than two large enough)"
FROM_ATTRIBUTIONS = ", measured on its attributions because feature values were not supplied"


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def cramers_v(first: NDArray[np.intp], second: NDArray[np.intp]) -> float:
    """Bias-corrected Cramér's V between two categorical codings of the same records."""
    n = len(first)
    if n < 2:
        return 0.0
    _, rows = np.unique(first, return_inverse=True)
    _, columns = np.unique(second, return_inverse=True)
    r = int(rows.max()) + 1
    k = int(columns.max()) + 1
    table = np.bincount(rows * k + columns, minlength=r * k).reshape(r, k).astype(np.float64)
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    phi2 = max(0.0, chi2 / n - (k - 1) * (r - 1) / (n - 1))
    r_tilde = r - (r - 1) ** 2 / (n - 1)
    k_tilde = k - (k - 1) ** 2 / (n - 1)
    denominator = min(k_tilde - 1.0, r_tilde - 1.0)
    if denominator <= 0.0:
        return 0.0
    return _clip(math.sqrt(phi2 / denominator))


def correlation_ratio(values: NDArray[np.float64], groups: NDArray[np.intp]) -> float:
    """Bias-corrected correlation ratio (epsilon) of numeric ``values`` by group codes."""
    n = len(values)
    if n == 0:
        return 0.0
    sizes = np.bincount(groups).astype(np.float64)
    present = sizes > 0
    k = int(present.sum())
    if n <= k or k < 2 or values.min() == values.max():  # a constant: nothing to explain
        return 0.0
    centred = values - values.mean()
    total = float(centred @ centred)
    if total <= 0.0:
        return 0.0
    sums = np.bincount(groups, weights=values)
    means = np.divide(sums, sizes, out=np.zeros_like(sums), where=present)
    residual = values - means[groups]
    within = float(residual @ residual)
    epsilon2 = 1.0 - (within / (n - k)) / (total / (n - 1))
    return _clip(math.sqrt(max(0.0, epsilon2)))


def _is_numeric(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series))


def feature_association(series: pd.Series, groups: NDArray[np.intp]) -> tuple[float, Measure]:
    """The association of one raw feature's values with the groups, and its measure."""
    if _is_numeric(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        present = ~np.isnan(values)
        return correlation_ratio(values[present], groups[present]), "correlation_ratio"
    present = ~series.isna().to_numpy(dtype=bool)
    labels = np.asarray([str(value) for value in series.to_numpy()[present]], dtype=np.str_)
    _, codes = np.unique(labels, return_inverse=True)
    return cramers_v(codes.astype(np.intp), groups[present]), "cramers_v"


def likely_proxies(
    attribute: str,
    groups: NDArray[np.intp],
    *,
    feature_names: tuple[str, ...],
    attributions: NDArray[np.float64],
    features: pd.DataFrame | None,
    gaps: dict[str, FeatureGap],
    signed_gaps: dict[str, FeatureGap],
    bound: float,
) -> list[dict[str, Any]]:
    """The features at or above ``bound``, by association (then gap, then name)."""
    found = []
    for column, feature in enumerate(feature_names):
        measure: Measure
        if features is None:
            association = correlation_ratio(attributions[:, column], groups)
            measure = "attribution_correlation_ratio"
        else:
            association, measure = feature_association(features[feature], groups)
        if association < bound:
            continue
        gap = gaps.get(feature)
        signed = signed_gaps.get(feature)
        if gap is None or signed is None:
            gap_text = NO_GAP_TEXT
        else:
            gap_text = (
                SAME_GAP_TEXT.format(value=gap.max_mean_abs)
                if gap.gap == 0.0
                else GAP_TEXT.format(
                    gap=gap.gap,
                    high=gap.max_group,
                    high_value=gap.max_mean_abs,
                    low=gap.min_group,
                    low_value=gap.min_mean_abs,
                )
            ) + SIGNED_TEXT.format(
                high=signed.max_group,
                high_value=signed.max_mean_abs,
                low=signed.min_group,
                low_value=signed.min_mean_abs,
            )
        reason = REASON.format(
            feature=feature,
            attribute=attribute,
            measure=MEASURE_NAMES[measure],
            association=association,
            bound=repr(float(bound)),
            source=FROM_ATTRIBUTIONS if features is None else "",
            gap_text=gap_text,
        )
        found.append(
            {
                "feature": feature,
                "association": association,
                "measure": measure,
                "attribution_gap": None if gap is None else gap.gap,
                "signed_attribution_gap": None if signed is None else signed.gap,
                "reason": reason,
            }
        )
    return sorted(
        found,
        key=lambda item: (
            -item["association"],
            -(item["attribution_gap"] or 0.0),
            item["feature"],
        ),
    )
