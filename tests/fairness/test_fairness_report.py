"""The report as a whole: the public API, JSON-readiness, and invariants over random data."""

from __future__ import annotations

import inspect
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import explainer.fairness
from explainer.fairness import DEFAULT_BOUNDS, FairnessBounds, audit


def test_the_public_api_is_audit_and_its_bounds() -> None:
    assert explainer.fairness.__all__ == ["DEFAULT_BOUNDS", "FairnessBounds", "audit"]
    parameters = inspect.signature(audit).parameters
    assert list(parameters) == [
        "scores",
        "protected",
        "attributions",
        "labels",
        "threshold",
        "bounds",
        "features",
    ]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    assert parameters["bounds"].default == FairnessBounds()
    assert parameters["features"].default is None


def test_the_default_bounds_are_the_documented_ones() -> None:
    assert DEFAULT_BOUNDS.to_dict() == {
        "min_disparate_impact": 0.8,
        "max_demographic_parity_difference": 0.1,
        "max_equalized_odds_difference": 0.1,
        "min_group_size": 30,
        "proxy_association": 0.2,
    }


def plain_json(value: Any) -> None:
    """Only dict / list / str / int / float / bool / None, floats being plain and finite."""
    if isinstance(value, dict):
        assert all(isinstance(key, str) for key in value)
        for item in value.values():
            plain_json(item)
    elif isinstance(value, list):
        for item in value:
            plain_json(item)
    else:
        assert value is None or type(value) in (str, int, float, bool), repr(value)
        if type(value) is float:
            assert np.isfinite(value)


EDGE_CASES = {
    "labelled": (
        [0.9, 0.1, 0.6, 0.4, 0.55, 0.3],
        [1, 0, 1, 1, 0, 0],
        ["F", "F", "F", "M", "M", "M"],
    ),
    "unlabelled": ([0.9, 0.1, 0.6, 0.4, 0.55, 0.3], None, ["F", "F", "F", "M", "M", "M"]),
    "nobody selected": ([0.1] * 6, [1, 0, 1, 1, 0, 0], ["F", "F", "F", "M", "M", "M"]),
    "one group": ([0.9, 0.1, 0.6, 0.4, 0.55, 0.3], [1, 0, 1, 1, 0, 0], ["F"] * 6),
    "no positives in a group": (
        [0.9, 0.1, 0.6, 0.4, 0.55, 0.3],
        [1, 0, 1, 0, 0, 0],
        ["F"] * 3 + ["M"] * 3,
    ),
}


@pytest.mark.parametrize("case", EDGE_CASES)
def test_the_report_is_strict_json(case: str) -> None:
    scores, labels, groups = EDGE_CASES[case]
    for minimum in (1, 30):
        report = audit(
            scores=np.array(scores),
            protected=pd.DataFrame({"gender": groups}),
            attributions=pd.DataFrame({"tenure": np.linspace(-1, 1, 6), "plan": np.ones(6)}),
            labels=None if labels is None else np.array(labels),
            threshold=0.5,
            bounds=FairnessBounds(min_group_size=minimum, proxy_association=0.0),
            features=pd.DataFrame({"tenure": np.arange(6.0), "plan": ["a", "b"] * 3}),
        )
        plain_json(report)
        assert json.loads(json.dumps(report, allow_nan=False)) == report


@st.composite
def audits(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(min_value=1, max_value=60))
    groups = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n))
    scores = draw(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=n, max_size=n))
    labelled = draw(st.booleans())
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)) if labelled else None
    return {
        "scores": np.array(scores),
        "protected": pd.DataFrame({"segment": groups}),
        "attributions": pd.DataFrame({"tenure": np.array(scores) - 0.5}),
        "labels": None if labels is None else np.array(labels),
        "threshold": draw(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])),
        "bounds": FairnessBounds(min_group_size=draw(st.integers(1, 10))),
    }


# Every audit builds a fairlearn MetricFrame (~0.1 s whatever the size), so the examples are
# few; the fixed examples in the other modules pin the exact numbers.
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MARGIN = 1e-9  # away from a bound, floating point and the exact arithmetic agree


@FAST
@given(audits())
def test_numbers_stay_in_range_and_flags_follow_the_bounds(inputs: dict[str, Any]) -> None:
    attribute = audit(**inputs)["attributes"]["segment"]
    json.dumps(attribute, allow_nan=False)
    for group in attribute["groups"]:
        assert 0.0 <= group["selection_rate"] <= 1.0
        assert group["tpr"] is None or 0.0 <= group["tpr"] <= 1.0
        assert group["fpr"] is None or 0.0 <= group["fpr"] <= 1.0

    bounds: FairnessBounds = inputs["bounds"]
    flags = " ".join(attribute["flags"])
    ratio = attribute["disparate_impact_ratio"]
    assert ratio is None or 0.0 <= ratio <= 1.0
    if ratio is not None and abs(ratio - bounds.min_disparate_impact) > MARGIN:
        assert ("disparate impact ratio" in flags) is (ratio < bounds.min_disparate_impact)
    parity = attribute["demographic_parity_difference"]
    assert parity is None or 0.0 <= parity <= 1.0
    if parity is not None and abs(parity - bounds.max_demographic_parity_difference) > MARGIN:
        expected = parity > bounds.max_demographic_parity_difference
        assert ("demographic parity difference" in flags) is expected
    odds = attribute["equalized_odds_difference"]
    assert odds is None or 0.0 <= odds <= 1.0
    if odds is not None and abs(odds - bounds.max_equalized_odds_difference) > MARGIN:
        expected = odds > bounds.max_equalized_odds_difference
        flagged = any(
            "equalized odds difference" in flag and "exceeds the bound" in flag
            for flag in attribute["flags"]  # one flag: other flags name the difference too
        )
        assert flagged is expected


@FEWER
@given(audits())
def test_every_number_is_fairlearns_over_the_groups_large_enough_to_judge(
    inputs: dict[str, Any],
) -> None:
    attribute = audit(**inputs)["attributes"]["segment"]
    judged = {g["group"] for g in attribute["groups"] if not g["too_small_to_judge"]}
    keep = inputs["protected"]["segment"].isin(judged).to_numpy()
    if len(judged) < 2:
        return  # the single-group and no-group cases are specified in test_fairness_flags
    groups = inputs["protected"]["segment"].to_numpy()[keep]
    selected = (inputs["scores"] >= inputs["threshold"]).astype(int)[keep]
    labels = inputs["labels"]
    truth = np.zeros(len(groups), dtype=int) if labels is None else labels[keep]
    assert attribute["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(truth, selected, sensitive_features=groups), abs=1e-9
    )
    if selected.any():
        assert attribute["disparate_impact_ratio"] == pytest.approx(
            demographic_parity_ratio(truth, selected, sensitive_features=groups), abs=1e-9
        )
    else:
        assert attribute["disparate_impact_ratio"] is None
    every_rate_defined = labels is not None and all(
        0 < truth[groups == name].sum() < (groups == name).sum() for name in judged
    )
    if every_rate_defined:
        assert attribute["equalized_odds_difference"] == pytest.approx(
            equalized_odds_difference(truth, selected, sensitive_features=groups), abs=1e-9
        )
