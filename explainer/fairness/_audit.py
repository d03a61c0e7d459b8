"""The fairness audit: group metrics, attribution disparity and likely proxies per attribute."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from explainer.exceptions import ValidationError
from explainer.fairness import _messages as msg
from explainer.fairness._attribution import TOP_FEATURES, feature_gaps, group_means
from explainer.fairness._bounds import DEFAULT_BOUNDS, FairnessBounds
from explainer.fairness._metrics import assess
from explainer.fairness._proxies import MEASURE_NAMES, likely_proxies
from explainer.fairness._validation import AuditInputs, validate

__all__ = ["audit"]

NOT_BOUNDS = "must be a FairnessBounds, got {type}"


def _audit_attribute(attribute: str, inputs: AuditInputs, bounds: FairnessBounds) -> dict[str, Any]:
    metrics = assess(
        attribute,
        inputs.protected[attribute],
        selected=inputs.selected,
        labels=inputs.labels,
        threshold=inputs.threshold,
        bounds=bounds,
    )
    names = [group.name for group in metrics.groups]
    means = group_means(inputs.attributions, metrics.codes, len(names))
    signed_means = group_means(inputs.attributions, metrics.codes, len(names), absolute=False)
    judged_rows = [i for i, group in enumerate(metrics.groups) if group.judged]
    judged_names = [names[i] for i in judged_rows]
    gaps = feature_gaps(means[judged_rows], judged_names, inputs.feature_names)
    signed_gaps = feature_gaps(signed_means[judged_rows], judged_names, inputs.feature_names)
    proxies = likely_proxies(
        attribute,
        metrics.codes,
        feature_names=inputs.feature_names,
        attributions=inputs.attributions,
        features=inputs.features,
        gaps={gap.feature: gap for gap in gaps},
        signed_gaps={gap.feature: gap for gap in signed_gaps},
        bound=bounds.proxy_association,
    )
    flags = list(metrics.flags)
    if proxies:
        listing = ", ".join(
            f"'{item['feature']}' ({MEASURE_NAMES[item['measure']]} "
            f"{msg.number(item['association'])})"
            for item in proxies
        )
        flags.append(
            msg.LIKELY_PROXIES.format(attribute=attribute, count=len(proxies), listing=listing)
        )
    groups = [
        {
            "group": group.name,
            "size": group.size,
            "selection_rate": group.selection_rate,
            "tpr": group.tpr,
            "fpr": group.fpr,
            "mean_abs_attribution": {
                feature: float(means[row, column])
                for column, feature in enumerate(inputs.feature_names)
            },
            "too_small_to_judge": not group.judged,
        }
        for row, group in enumerate(metrics.groups)
    ]
    return {
        "groups": groups,
        "disparate_impact_ratio": metrics.disparate_impact_ratio,
        "demographic_parity_difference": metrics.demographic_parity_difference,
        "equalized_odds_difference": metrics.equalized_odds_difference,
        "flags": flags,
        "attribution_disparity": [gap.to_dict() for gap in gaps[:TOP_FEATURES]],
        "likely_proxies": proxies,
    }


def audit(
    *,
    scores: np.ndarray[Any, Any],
    protected: pd.DataFrame,
    attributions: pd.DataFrame,
    labels: np.ndarray[Any, Any] | None,
    threshold: float,
    bounds: FairnessBounds = DEFAULT_BOUNDS,
    features: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Audit a model's decisions on a set of records for every protected attribute.

    Parameters
    ----------
    scores:
        The model's score per record: the probability of the positive (explained) class. A
        record is *selected* when its score is at or above ``threshold``.
    protected:
        One column per protected attribute, one row per record; values are group names
        (converted with ``str``; missing values are rejected).
    attributions:
        One column per raw feature, one row per record: the signed contributions.
    labels:
        The true outcome per record, 0 or 1 (1 = the positive class), or None. Without
        labels, true/false positive rates and the equalized odds difference are null.
    threshold:
        The selection threshold, between 0 and 1.
    bounds:
        What counts as a breach; see :class:`FairnessBounds`.
    features:
        The raw feature values per record (a column for every attributed feature), used to
        find likely proxies. Without them, proxies are judged from the attributions alone.

    Records are matched by position across all arguments.

    Returns
    -------
    A JSON-ready dict (plain Python floats, no NaN)::

        {"threshold": 0.5, "n_records": 7043, "bounds": {...},
         "attributes": {"gender": {
            "groups": [{"group": "F", "size": 3488, "selection_rate": 0.27, "tpr": 0.61,
                        "fpr": 0.12, "mean_abs_attribution": {"contract": 0.09},
                        "too_small_to_judge": false}, ...],       # sorted by group name
            "disparate_impact_ratio": 0.93, "demographic_parity_difference": 0.02,
            "equalized_odds_difference": 0.04,
            "flags": ["gender: ..."],
            "attribution_disparity": [{"feature", "gap", "relative_gap", "max_group",
                                       "max_mean_abs", "min_group", "min_mean_abs"}, ...],
            "likely_proxies": [{"feature", "association", "measure", "attribution_gap",
                                "signed_attribution_gap", "reason"}, ...]}}}

    Raises
    ------
    ValidationError
        When the input is wrong; its ``errors`` name each field (``scores``, ``labels``,
        ``threshold``, ``protected.gender``, ``attributions.tenure``, ``features.tenure``).
    """
    if not isinstance(bounds, FairnessBounds):
        raise ValidationError.for_field("bounds", NOT_BOUNDS.format(type=type(bounds).__name__))
    inputs = validate(
        scores=scores,
        protected=protected,
        attributions=attributions,
        labels=labels,
        threshold=threshold,
        features=features,
    )
    return {
        "threshold": inputs.threshold,
        "n_records": inputs.n_records,
        "bounds": bounds.to_dict(),
        "attributes": {
            attribute: _audit_attribute(attribute, inputs, bounds) for attribute in inputs.protected
        },
    }
