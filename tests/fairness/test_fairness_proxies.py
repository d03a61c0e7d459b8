"""Likely proxies: features whose values track a protected attribute."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency

from explainer.fairness import FairnessBounds, audit
from explainer.fairness._proxies import correlation_ratio, cramers_v

TOLERANCE = 1e-9


def codes(values: list[str]) -> np.ndarray[Any, np.dtype[np.intp]]:
    return np.unique(values, return_inverse=True)[1].astype(np.intp)


class TestCramersV:
    def test_a_two_by_two_table_by_hand(self) -> None:
        # Ten records; the feature is mostly 'a' in group A and mostly 'b' in group B:
        #
        #              group A  group B
        #   feature a     4        1        expected counts: 2.5 in every cell
        #   feature b     1        4
        #
        # chi2 = 4 * (1.5^2 / 2.5) = 3.6;  phi2 = chi2 / n = 0.36 (uncorrected V = 0.6)
        # Bergsma: phi2~ = 0.36 - (2-1)(2-1)/(10-1) = 0.36 - 1/9
        #          r~ = k~ = 2 - (2-1)^2/9 = 17/9, so min(r~, k~) - 1 = 8/9
        #          V = sqrt((0.36 - 1/9) / (8/9)) = sqrt(2.24 / 8) = sqrt(0.28)
        feature = ["a", "a", "a", "a", "b", "a", "b", "b", "b", "b"]
        group = ["A"] * 5 + ["B"] * 5
        table = np.array([[4, 1], [1, 4]])
        assert chi2_contingency(table, correction=False).statistic == pytest.approx(3.6)
        assert cramers_v(codes(feature), codes(group)) == pytest.approx(
            math.sqrt(0.28), abs=TOLERANCE
        )

    def test_is_one_when_the_feature_determines_the_group(self) -> None:
        group = ["F", "M", "F", "M", "F", "M"]
        feature = ["north", "south", "north", "south", "north", "south"]
        assert cramers_v(codes(feature), codes(group)) == pytest.approx(1.0, abs=TOLERANCE)

    def test_is_zero_when_undefined(self) -> None:
        assert cramers_v(codes(["x", "x", "x"]), codes(["F", "M", "F"])) == 0.0
        assert cramers_v(codes(["x"]), codes(["F"])) == 0.0

    def test_a_many_valued_independent_feature_is_not_mistaken_for_a_proxy(self) -> None:
        # 1,000 postcodes among 3,000 records, independent of gender. The uncorrected V is
        # inflated by the many small cells (about sqrt(999 / 3000) = 0.58); corrected, ~0.
        rng = np.random.default_rng(11)
        postcode = rng.integers(0, 1000, 3000).astype(str).tolist()
        gender = rng.choice(["F", "M"], 3000).tolist()
        table = pd.crosstab(pd.Series(postcode), pd.Series(gender)).to_numpy()
        uncorrected = math.sqrt(chi2_contingency(table, correction=False).statistic / 3000)
        assert uncorrected > 0.3
        assert cramers_v(codes(postcode), codes(gender)) < 0.1


class TestCorrelationRatio:
    def test_a_small_example_by_hand(self) -> None:
        # group A: 1 2 3 (mean 2), group B: 4 5 6 (mean 5); overall mean 3.5; n = 6, k = 2
        # SS_total  = 2 * (2.5^2 + 1.5^2 + 0.5^2) = 17.5
        # SS_within = 2 * (1 + 0 + 1) = 4             (uncorrected eta^2 = 1 - 4/17.5)
        # epsilon^2 = 1 - (4 / (6-2)) / (17.5 / (6-1)) = 1 - 1/3.5 = 5/7
        values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        group = codes(["A", "A", "A", "B", "B", "B"])
        assert correlation_ratio(values, group) == pytest.approx(math.sqrt(5 / 7), abs=TOLERANCE)

    def test_is_one_when_groups_do_not_overlap_at_all(self) -> None:
        values = np.array([1.0, 1.0, 7.0, 7.0])
        assert correlation_ratio(values, codes(["A", "A", "B", "B"])) == pytest.approx(1.0)

    def test_is_zero_for_a_constant_feature_or_a_single_group(self) -> None:
        assert correlation_ratio(np.ones(4), codes(["A", "A", "B", "B"])) == 0.0
        # 0.1 has no exact binary form: the mean of many 0.1s is off by rounding, and the
        # "variance" left over must not be mistaken for a difference between groups.
        assert correlation_ratio(np.full(1001, 0.1), codes(["A", "B"] * 500 + ["A"])) == 0.0
        assert correlation_ratio(np.arange(4.0), codes(["A"] * 4)) == 0.0


def synthetic_crm(n: int = 600, seed: int = 5) -> dict[str, Any]:
    """Customers whose 'area' is a planted proxy for gender (it matches 90% of the time)."""
    rng = np.random.default_rng(seed)
    gender = rng.choice(["F", "M"], n)
    matches = rng.random(n) < 0.9
    area = np.where(
        matches, np.where(gender == "F", "north", "south"), rng.choice(["north", "south"], n)
    )
    features = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n).astype(float),  # independent of gender
            "area": area,  # the planted proxy
            "plan": rng.choice(["basic", "plus", "premium"], n),  # independent of gender
        }
    )
    attributions = pd.DataFrame(
        {
            "tenure": -(features["tenure"] - 36) / 200,
            "area": np.where(area == "south", 0.15, -0.05),
            "plan": rng.normal(0, 0.02, n),
        }
    )
    scores = 1 / (1 + np.exp(-(attributions.sum(axis=1).to_numpy() * 4)))
    return {
        "scores": scores,
        "protected": pd.DataFrame({"gender": gender}),
        "attributions": attributions,
        "labels": None,
        "threshold": 0.5,
        "features": features,
    }


class TestLikelyProxies:
    def test_a_planted_proxy_is_named_first_and_independent_features_are_not(self) -> None:
        proxies = audit(**synthetic_crm())["attributes"]["gender"]["likely_proxies"]
        assert [proxy["feature"] for proxy in proxies] == ["area"]
        (area,) = proxies
        assert area["measure"] == "cramers_v"
        assert area["association"] > 0.8
        assert area["reason"].startswith("'area' tracks gender: Cramér's V 0.")

    def test_a_proxy_entry_carries_its_attribution_gaps(self) -> None:
        report = audit(**synthetic_crm())["attributes"]["gender"]
        (area,) = report["likely_proxies"]
        disparity = {item["feature"]: item for item in report["attribution_disparity"]}
        assert area["attribution_gap"] == disparity["area"]["gap"]
        # The model pushes 'south' (mostly M) up by 0.15 and 'north' (mostly F) down by 0.05.
        assert area["signed_attribution_gap"] > 0.1
        assert "mean signed attribution ranges from" in area["reason"]

    def test_a_numeric_proxy_is_measured_by_the_correlation_ratio(self) -> None:
        inputs = synthetic_crm()
        gender = inputs["protected"]["gender"].to_numpy()
        rng = np.random.default_rng(3)
        inputs["features"]["income"] = rng.normal(40, 5, len(gender)) + 15 * (gender == "M")
        inputs["attributions"]["income"] = (inputs["features"]["income"] - 45) / 500
        proxies = audit(**inputs)["attributes"]["gender"]["likely_proxies"]
        names = [proxy["feature"] for proxy in proxies]
        assert set(names) == {"area", "income"}
        income = proxies[names.index("income")]
        assert income["measure"] == "correlation_ratio"
        assert [proxy["association"] for proxy in proxies] == sorted(
            (proxy["association"] for proxy in proxies), reverse=True
        )

    def test_without_feature_values_the_attributions_are_measured(self) -> None:
        inputs = synthetic_crm()
        inputs["features"] = None
        proxies = audit(**inputs)["attributes"]["gender"]["likely_proxies"]
        assert [proxy["feature"] for proxy in proxies] == ["area"]
        assert proxies[0]["measure"] == "attribution_correlation_ratio"
        assert "feature values were not supplied" in proxies[0]["reason"]

    def test_the_threshold_is_configurable_and_inclusive(self) -> None:
        inputs = synthetic_crm()
        strict = audit(**inputs, bounds=FairnessBounds(proxy_association=0.99))
        assert strict["attributes"]["gender"]["likely_proxies"] == []
        everything = audit(**inputs, bounds=FairnessBounds(proxy_association=0.0))
        listed = everything["attributes"]["gender"]["likely_proxies"]
        assert {proxy["feature"] for proxy in listed} == {"tenure", "area", "plan"}
        assert listed[0]["feature"] == "area"

    def test_proxies_raise_a_flag_naming_them(self) -> None:
        flags = audit(**synthetic_crm())["attributes"]["gender"]["flags"]
        proxy_flags = [flag for flag in flags if "proxies" in flag]
        assert len(proxy_flags) == 1
        assert proxy_flags[0].startswith(
            "gender: 1 feature(s) track the attribute and may act as proxies for it: "
            "'area' (Cramér's V 0."
        )

    def test_missing_feature_values_are_left_out_of_the_measure(self) -> None:
        inputs = synthetic_crm()
        inputs["features"].loc[::7, "area"] = None
        inputs["features"].loc[::5, "tenure"] = np.nan
        proxies = audit(**inputs)["attributes"]["gender"]["likely_proxies"]
        assert [proxy["feature"] for proxy in proxies] == ["area"]
