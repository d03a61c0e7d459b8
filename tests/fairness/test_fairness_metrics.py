"""Group metrics: each number equals fairlearn's own function and the hand arithmetic."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)

from explainer.fairness import FairnessBounds, audit

TOLERANCE = 1e-9
TINY = FairnessBounds(min_group_size=1)  # the hand-sized examples have groups of five

# Ten customers, two groups of five; threshold 0.5, so a score of exactly 0.5 is selected.
#
#   group  score  label  selected      group  score  label  selected
#   A      0.90   1      yes (TP)      B      0.80   1      yes (TP)
#   A      0.70   1      yes (TP)      B      0.50   0      yes (FP)
#   A      0.60   0      yes (FP)      B      0.40   1      no  (FN)
#   A      0.30   1      no  (FN)      B      0.10   1      no  (FN)
#   A      0.20   0      no  (TN)      B      0.05   0      no  (TN)
#
# A: selection rate 3/5 = 0.6, TPR 2/3 (2 of 3 positives selected), FPR 1/2 (1 of 2 negatives)
# B: selection rate 2/5 = 0.4, TPR 1/3 (1 of 3 positives selected), FPR 1/2 (1 of 2 negatives)
# disparate impact ratio        = 0.4 / 0.6             = 2/3
# demographic parity difference = 0.6 - 0.4             = 0.2
# equalized odds difference     = max(2/3 - 1/3, 1/2 - 1/2) = 1/3
GROUPS = ["A"] * 5 + ["B"] * 5
SCORES = np.array([0.9, 0.7, 0.6, 0.3, 0.2, 0.8, 0.5, 0.4, 0.1, 0.05])
LABELS = np.array([1, 1, 0, 1, 0, 1, 0, 1, 1, 0])
SELECTED = (SCORES >= 0.5).astype(int)
# Signed contributions of two raw features.
#   tenure   A: 0.2 -0.4 0.1 0.3 0.0 -> mean |.| = 1.0/5 = 0.2
#            B: 0.1 0.1 -0.1 0.1 0.1 -> mean |.| = 0.5/5 = 0.1
#   contract A: 0.05 x5              -> 0.05;  B: -0.05 x5 -> 0.05
ATTRIBUTIONS = pd.DataFrame(
    {
        "tenure": [0.2, -0.4, 0.1, 0.3, 0.0, 0.1, 0.1, -0.1, 0.1, 0.1],
        "contract": [0.05] * 5 + [-0.05] * 5,
    }
)


@pytest.fixture
def report() -> dict[str, Any]:
    return audit(
        scores=SCORES,
        protected=pd.DataFrame({"segment": GROUPS}),
        attributions=ATTRIBUTIONS,
        labels=LABELS,
        threshold=0.5,
        bounds=TINY,
    )


def fairlearn_frame() -> pd.DataFrame:
    frame = MetricFrame(
        metrics={"sr": selection_rate, "tpr": true_positive_rate, "fpr": false_positive_rate},
        y_true=LABELS,
        y_pred=SELECTED,
        sensitive_features=pd.Series(GROUPS, name="segment"),
    )
    return frame.by_group


def test_the_report_names_the_threshold_and_counts_the_records(report: dict[str, Any]) -> None:
    assert report["threshold"] == 0.5
    assert report["n_records"] == 10
    assert list(report["attributes"]) == ["segment"]


def test_group_rates_match_the_hand_arithmetic_and_fairlearn(report: dict[str, Any]) -> None:
    groups = {group["group"]: group for group in report["attributes"]["segment"]["groups"]}
    by_group = fairlearn_frame()
    hand = {"A": (5, 3 / 5, 2 / 3, 1 / 2), "B": (5, 2 / 5, 1 / 3, 1 / 2)}
    for name, (size, rate, tpr, fpr) in hand.items():
        group = groups[name]
        assert group["size"] == size
        assert group["selection_rate"] == pytest.approx(rate, abs=TOLERANCE)
        assert group["tpr"] == pytest.approx(tpr, abs=TOLERANCE)
        assert group["fpr"] == pytest.approx(fpr, abs=TOLERANCE)
        assert group["selection_rate"] == pytest.approx(by_group.loc[name, "sr"], abs=TOLERANCE)
        assert group["tpr"] == pytest.approx(by_group.loc[name, "tpr"], abs=TOLERANCE)
        assert group["fpr"] == pytest.approx(by_group.loc[name, "fpr"], abs=TOLERANCE)


def test_disparate_impact_ratio_is_lowest_over_highest_selection_rate(
    report: dict[str, Any],
) -> None:
    value = report["attributes"]["segment"]["disparate_impact_ratio"]
    assert value == pytest.approx(0.4 / 0.6, abs=TOLERANCE)
    fairlearns = demographic_parity_ratio(LABELS, SELECTED, sensitive_features=GROUPS)
    assert value == pytest.approx(fairlearns, abs=TOLERANCE)


def test_demographic_parity_difference_is_the_spread_of_selection_rates(
    report: dict[str, Any],
) -> None:
    value = report["attributes"]["segment"]["demographic_parity_difference"]
    assert value == pytest.approx(0.6 - 0.4, abs=TOLERANCE)
    fairlearns = demographic_parity_difference(LABELS, SELECTED, sensitive_features=GROUPS)
    assert value == pytest.approx(fairlearns, abs=TOLERANCE)


def test_equalized_odds_difference_is_the_worse_of_the_tpr_and_fpr_spreads(
    report: dict[str, Any],
) -> None:
    value = report["attributes"]["segment"]["equalized_odds_difference"]
    assert value == pytest.approx(max(2 / 3 - 1 / 3, 1 / 2 - 1 / 2), abs=TOLERANCE)
    fairlearns = equalized_odds_difference(LABELS, SELECTED, sensitive_features=GROUPS)
    assert value == pytest.approx(fairlearns, abs=TOLERANCE)


def test_mean_abs_attribution_per_group_matches_the_hand_arithmetic(
    report: dict[str, Any],
) -> None:
    groups = {group["group"]: group for group in report["attributes"]["segment"]["groups"]}
    assert groups["A"]["mean_abs_attribution"] == pytest.approx(
        {"tenure": 0.2, "contract": 0.05}, abs=TOLERANCE
    )
    assert groups["B"]["mean_abs_attribution"] == pytest.approx(
        {"tenure": 0.1, "contract": 0.05}, abs=TOLERANCE
    )


def test_attribution_disparity_ranks_features_by_the_gap_between_groups(
    report: dict[str, Any],
) -> None:
    tenure, contract = report["attributes"]["segment"]["attribution_disparity"]
    # tenure: 0.2 (A) - 0.1 (B) = 0.1, relative to the highest mean 0.1 / 0.2 = 0.5
    assert tenure["feature"] == "tenure"
    assert tenure["gap"] == pytest.approx(0.1, abs=TOLERANCE)
    assert tenure["relative_gap"] == pytest.approx(0.5, abs=TOLERANCE)
    assert (tenure["max_group"], tenure["min_group"]) == ("A", "B")
    assert tenure["max_mean_abs"] == pytest.approx(0.2, abs=TOLERANCE)
    assert tenure["min_mean_abs"] == pytest.approx(0.1, abs=TOLERANCE)
    # contract: the same magnitude in both groups (the sign differs): no gap
    assert contract["feature"] == "contract"
    assert contract["gap"] == 0.0
    assert contract["relative_gap"] == 0.0


def test_attribution_disparity_lists_the_top_five_features() -> None:
    rng = np.random.default_rng(7)
    groups = np.repeat(["F", "M"], 40)
    # feature_i's attributions are i times larger for M than for F: gap grows with i.
    attributions = pd.DataFrame(
        {
            f"feature_{i}": np.where(groups == "M", i, 1.0) * rng.uniform(0.5, 1.5, 80)
            for i in range(1, 9)
        }
    )
    result = audit(
        scores=np.full(80, 0.7),
        protected=pd.DataFrame({"gender": groups}),
        attributions=attributions,
        labels=None,
        threshold=0.5,
    )
    listed = [item["feature"] for item in result["attributes"]["gender"]["attribution_disparity"]]
    assert listed == ["feature_8", "feature_7", "feature_6", "feature_5", "feature_4"]


def test_groups_are_sorted_by_name_and_every_attribute_is_audited() -> None:
    result = audit(
        scores=SCORES,
        protected=pd.DataFrame(
            {"segment": ["b", "c", "a", "b", "c", "a", "b", "c", "a", "b"], "region": ["x"] * 10}
        ),
        attributions=ATTRIBUTIONS,
        labels=None,
        threshold=0.5,
        bounds=TINY,
    )
    assert list(result["attributes"]) == ["segment", "region"]
    names = [group["group"] for group in result["attributes"]["segment"]["groups"]]
    assert names == ["a", "b", "c"]


def test_records_are_matched_by_position_not_by_index() -> None:
    shuffled_index = pd.DataFrame({"segment": GROUPS}, index=range(100, 90, -1))
    result = audit(
        scores=SCORES,
        protected=shuffled_index,
        attributions=ATTRIBUTIONS.set_index(pd.Index(range(10, 20))),
        labels=LABELS,
        threshold=0.5,
        bounds=TINY,
    )
    value = result["attributes"]["segment"]["disparate_impact_ratio"]
    assert value == pytest.approx(2 / 3, abs=TOLERANCE)


class TestWithoutLabels:
    @pytest.fixture
    def attribute(self) -> dict[str, Any]:
        result = audit(
            scores=SCORES,
            protected=pd.DataFrame({"segment": GROUPS}),
            attributions=ATTRIBUTIONS,
            labels=None,
            threshold=0.5,
            bounds=TINY,
        )
        segment: dict[str, Any] = result["attributes"]["segment"]
        return segment

    def test_true_and_false_positive_rates_are_null(self, attribute: dict[str, Any]) -> None:
        assert all(group["tpr"] is None for group in attribute["groups"])
        assert all(group["fpr"] is None for group in attribute["groups"])

    def test_equalized_odds_difference_is_null(self, attribute: dict[str, Any]) -> None:
        assert attribute["equalized_odds_difference"] is None

    def test_selection_metrics_need_no_labels(self, attribute: dict[str, Any]) -> None:
        assert attribute["disparate_impact_ratio"] == pytest.approx(2 / 3, abs=TOLERANCE)
        assert attribute["demographic_parity_difference"] == pytest.approx(0.2, abs=TOLERANCE)
        dummy_truth = np.zeros(10, dtype=int)
        fairlearns = demographic_parity_ratio(dummy_truth, SELECTED, sensitive_features=GROUPS)
        assert attribute["disparate_impact_ratio"] == pytest.approx(fairlearns, abs=TOLERANCE)


def test_all_numbers_match_fairlearn_on_a_larger_random_sample() -> None:
    rng = np.random.default_rng(2024)
    n = 3000
    groups = rng.choice(["18-29", "30-44", "45-64", "65+"], n)
    labels = rng.integers(0, 2, n)
    scores = np.clip(rng.normal(0.4 + 0.2 * labels + 0.05 * (groups == "65+"), 0.2), 0, 1)
    result = audit(
        scores=scores,
        protected=pd.DataFrame({"age_band": groups}),
        attributions=pd.DataFrame({"tenure": rng.normal(size=n)}),
        labels=labels,
        threshold=0.5,
    )
    attribute = result["attributes"]["age_band"]
    selected = (scores >= 0.5).astype(int)
    assert attribute["disparate_impact_ratio"] == pytest.approx(
        demographic_parity_ratio(labels, selected, sensitive_features=groups), abs=TOLERANCE
    )
    assert attribute["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(labels, selected, sensitive_features=groups), abs=TOLERANCE
    )
    assert attribute["equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(labels, selected, sensitive_features=groups), abs=TOLERANCE
    )
