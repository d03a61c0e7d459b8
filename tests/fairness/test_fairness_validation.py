"""Bad input is refused with a ValidationError that names the offending field."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from explainer.exceptions import ValidationError
from explainer.fairness import FairnessBounds, audit


def good() -> dict[str, Any]:
    return {
        "scores": np.array([0.9, 0.2, 0.6, 0.4]),
        "protected": pd.DataFrame({"gender": ["F", "M", "F", "M"]}),
        "attributions": pd.DataFrame({"tenure": [0.1, -0.2, 0.0, 0.3]}),
        "labels": np.array([1, 0, 1, 0]),
        "threshold": 0.5,
        "bounds": FairnessBounds(min_group_size=1),
        "features": pd.DataFrame({"tenure": [3, 40, 12, 7]}),
    }


def fields(**changes: Any) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        audit(**(good() | changes))
    return [error.field for error in caught.value.errors]


def test_the_good_input_is_accepted() -> None:
    assert audit(**good())["n_records"] == 4


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"scores": np.array([0.9, np.nan, 0.6, 0.4])}, "scores"),
        ({"scores": np.array([0.9, np.inf, 0.6, 0.4])}, "scores"),
        ({"scores": np.array([0.9, 1.2, 0.6, 0.4])}, "scores"),
        ({"scores": np.array(["0.9", "0.2", "0.6", "0.4"])}, "scores"),
        ({"scores": np.zeros((2, 2))}, "scores"),
        ({"labels": np.array([1, 2, 1, 0])}, "labels"),
        ({"labels": np.array([1.0, np.nan, 1.0, 0.0])}, "labels"),
        ({"labels": np.array(["yes", "no", "yes", "no"])}, "labels"),
        ({"labels": np.array([1, 0, 1])}, "labels"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"protected": pd.DataFrame({"gender": ["F", None, "F", "M"]})}, "protected.gender"),
        ({"protected": pd.DataFrame({"gender": ["F", "M", "F"]})}, "protected"),
        ({"protected": pd.DataFrame(index=range(4))}, "protected"),
        ({"protected": {"gender": ["F", "M", "F", "M"]}}, "protected"),
        ({"attributions": pd.DataFrame({"tenure": [0.1, np.nan, 0, 0]})}, "attributions.tenure"),
        ({"attributions": pd.DataFrame({"tenure": ["a", "b", "c", "d"]})}, "attributions.tenure"),
        ({"attributions": pd.DataFrame({"tenure": [0.1, 0.2]})}, "attributions"),
        ({"features": pd.DataFrame({"contract": ["a", "b", "c", "d"]})}, "features.tenure"),
        ({"features": pd.DataFrame({"tenure": [1, np.inf, 2, 3]})}, "features.tenure"),
        ({"features": pd.DataFrame({"tenure": [1, 2]})}, "features"),
    ],
)
def test_each_bad_field_is_named(changes: dict[str, Any], field: str) -> None:
    assert fields(**changes) == [field]


def test_every_bad_field_is_named_at_once() -> None:
    named = fields(
        scores=np.array([0.9, np.nan, 0.6, 0.4]),
        labels=np.array([1, 0, 3, 0]),
        threshold=2,
        protected=pd.DataFrame({"gender": ["F", "M", None, "M"], "age_band": ["a"] * 4}),
    )
    assert named == ["scores", "threshold", "labels", "protected.gender"]


def test_the_message_is_one_sentence_naming_the_first_field_and_the_row() -> None:
    with pytest.raises(ValidationError) as caught:
        audit(**(good() | {"labels": np.array([1, 0, 2, 0])}))
    assert caught.value.message == (
        "The fairness audit input is invalid: labels: must be 0 or 1 (1 = the positive class); "
        "1 value(s) are not (first at row 2: 2)."
    )
    assert caught.value.errors[0].to_dict() == {
        "field": "labels",
        "message": "must be 0 or 1 (1 = the positive class); 1 value(s) are not "
        "(first at row 2: 2)",
    }


def test_boolean_and_float_labels_of_zero_and_one_are_accepted() -> None:
    audit(**(good() | {"labels": np.array([True, False, True, False])}))
    audit(**(good() | {"labels": np.array([1.0, 0.0, 1.0, 0.0])}))


def test_group_names_are_taken_as_strings() -> None:
    report = audit(**(good() | {"protected": pd.DataFrame({"cohort": [2019, 2020, 2019, 2020]})}))
    assert [group["group"] for group in report["attributes"]["cohort"]["groups"]] == [
        "2019",
        "2020",
    ]


@pytest.mark.parametrize(
    ("bounds", "field"),
    [
        ({"min_disparate_impact": 1.5}, "bounds.min_disparate_impact"),
        ({"max_demographic_parity_difference": -0.1}, "bounds.max_demographic_parity_difference"),
        ({"max_equalized_odds_difference": float("nan")}, "bounds.max_equalized_odds_difference"),
        ({"proxy_association": "high"}, "bounds.proxy_association"),
        ({"min_group_size": 0}, "bounds.min_group_size"),
        ({"min_group_size": 2.5}, "bounds.min_group_size"),
    ],
)
def test_bounds_are_checked_when_made(bounds: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        FairnessBounds(**bounds)
    assert [error.field for error in caught.value.errors] == [field]


def test_bounds_must_be_fairness_bounds() -> None:
    assert fields(bounds={"min_group_size": 1}) == ["bounds"]
