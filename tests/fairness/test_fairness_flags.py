"""Flags: a sentence exactly when a bound is breached, and a reason wherever a number is null.

Each bound is tested just below, exactly at and just above it. "Exactly at" includes the
floating-point traps: 0.4 - 0.3 is 0.10000000000000003 and 0.04 / 0.05 is 0.7999999999999999
in binary arithmetic, but the audit decides on the exact fractions, so neither is flagged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from explainer.fairness import FairnessBounds, audit
from explainer.fairness import _messages as msg

Build = Callable[..., dict[str, Any]]


def flags_about(report: dict[str, Any], words: str, attribute: str = "gender") -> list[str]:
    return [flag for flag in report["attributes"][attribute]["flags"] if words in flag]


def test_the_disparate_impact_flag_reads_as_a_sentence_with_groups_and_numbers(
    selection_counts: Build,
) -> None:
    # '30-44' is selected at 34/100 = 0.34, '65+' at 21/100 = 0.21: ratio 0.21/0.34 = 0.6176...
    report = audit(**selection_counts({"30-44": (100, 34), "65+": (100, 21)}, attribute="age_band"))
    assert flags_about(report, "disparate impact", "age_band") == [
        "age_band: disparate impact ratio 0.62 is below the four-fifths rule (0.8): "
        "group '65+' is selected at 0.21 versus 0.34 for '30-44'."
    ]


def test_the_parity_and_odds_flags_name_the_groups_at_either_end(
    selection_counts: Build, confusion_counts: Build
) -> None:
    parity = audit(**selection_counts({"F": (100, 20), "M": (100, 35)}))
    assert flags_about(parity, "demographic parity") == [
        "gender: demographic parity difference 0.15 exceeds the bound (0.1): "
        "selection rates range from 0.20 for 'F' to 0.35 for 'M'."
    ]
    # TPR: F 30/100, M 50/100 (spread 0.2); FPR: F 10/100, M 15/100 (spread 0.05)
    odds = audit(**confusion_counts({"F": (100, 30, 100, 10), "M": (100, 50, 100, 15)}))
    assert flags_about(odds, "equalized odds") == [
        "gender: equalized odds difference 0.20 exceeds the bound (0.1): "
        "true positive rates range from 0.30 for 'F' to 0.50 for 'M'."
    ]


def test_a_configured_minimum_is_named_as_such(selection_counts: Build) -> None:
    report = audit(
        **selection_counts({"F": (100, 85), "M": (100, 100)}),
        bounds=FairnessBounds(min_disparate_impact=0.9),
    )
    assert flags_about(report, "disparate impact") == [
        "gender: disparate impact ratio 0.85 is below the minimum (0.9): "
        "group 'F' is selected at 0.85 versus 1.00 for 'M'."
    ]


class TestDisparateImpactBound:
    """Flag when lowest / highest selection rate < 0.8, strictly."""

    @pytest.mark.parametrize(
        ("low", "high", "size", "flagged"),
        [
            (399, 500, 1000, True),  # 0.798: just below
            (400, 500, 1000, False),  # 0.8 exactly
            (4, 5, 100, False),  # 0.8 exactly, though 0.04 / 0.05 == 0.7999999999999999
            (401, 500, 1000, False),  # 0.802: just above
        ],
    )
    def test_flag_exactly_when_below(
        self, selection_counts: Build, low: int, high: int, size: int, flagged: bool
    ) -> None:
        report = audit(**selection_counts({"F": (size, low), "M": (size, high)}))
        assert bool(flags_about(report, "disparate impact")) is flagged

    def test_the_ratio_is_shown_with_enough_digits_to_be_below_the_bound(
        self, selection_counts: Build
    ) -> None:
        report = audit(**selection_counts({"F": (10000, 3999), "M": (10000, 5000)}))
        (flag,) = flags_about(report, "disparate impact")
        assert flag.startswith("gender: disparate impact ratio 0.7998 is below")


class TestDemographicParityBound:
    """Flag when highest - lowest selection rate > 0.1, strictly."""

    @pytest.mark.parametrize(
        ("low", "high", "size", "flagged"),
        [
            (100, 199, 1000, False),  # 0.099: just below
            (10, 20, 100, False),  # 0.1 exactly
            (30, 40, 100, False),  # 0.1 exactly, though 0.4 - 0.3 == 0.10000000000000003
            (100, 201, 1000, True),  # 0.101: just above
        ],
    )
    def test_flag_exactly_when_above(
        self, selection_counts: Build, low: int, high: int, size: int, flagged: bool
    ) -> None:
        report = audit(**selection_counts({"F": (size, low), "M": (size, high)}))
        assert bool(flags_about(report, "demographic parity")) is flagged


class TestEqualizedOddsBound:
    """Flag when the larger of the TPR and FPR spreads > 0.1, strictly."""

    @pytest.mark.parametrize(
        ("tpr_low", "tpr_high", "flagged"),
        [(300, 399, False), (300, 400, False), (300, 401, True)],
    )
    def test_flag_on_the_true_positive_rate_spread(
        self,
        confusion_counts: Build,
        tpr_low: int,
        tpr_high: int,
        flagged: bool,
    ) -> None:
        report = audit(
            **confusion_counts({"F": (1000, tpr_low, 1000, 100), "M": (1000, tpr_high, 1000, 100)})
        )
        assert bool(flags_about(report, "equalized odds")) is flagged

    @pytest.mark.parametrize(
        ("fpr_low", "fpr_high", "flagged"),
        [(30, 39, False), (30, 40, False), (30, 41, True)],  # 0.4 - 0.3 is exactly 0.1
    )
    def test_flag_on_the_false_positive_rate_spread(
        self,
        confusion_counts: Build,
        fpr_low: int,
        fpr_high: int,
        flagged: bool,
    ) -> None:
        report = audit(
            **confusion_counts({"F": (100, 50, 100, fpr_low), "M": (100, 50, 100, fpr_high)})
        )
        assert bool(flags_about(report, "equalized odds")) is flagged
        if flagged:
            assert (
                "false positive rates range from 0.30 for 'F' to 0.41 for 'M'"
                in (flags_about(report, "equalized odds")[0])
            )


def test_no_flags_at_all_when_every_group_is_treated_alike(confusion_counts: Build) -> None:
    report = audit(**confusion_counts({"F": (50, 25, 50, 5), "M": (60, 30, 40, 4)}))
    assert report["attributes"]["gender"]["flags"] == []


class TestEdgeCases:
    def test_a_single_group_has_ratio_one_and_no_differences(self, confusion_counts: Build) -> None:
        report = audit(**confusion_counts({"F": (40, 10, 40, 5)}))
        attribute = report["attributes"]["gender"]
        assert attribute["disparate_impact_ratio"] == 1.0
        assert attribute["demographic_parity_difference"] == 0.0
        assert attribute["equalized_odds_difference"] == 0.0
        assert attribute["flags"] == [
            msg.ONLY_ONE_GROUP.format(attribute="gender", group="F"),
        ]
        assert attribute["flags"][0].startswith("gender: only one group ('F') is present")

    def test_no_one_selected_makes_the_ratio_null_and_says_why(
        self, selection_counts: Build
    ) -> None:
        report = audit(**selection_counts({"F": (50, 0), "M": (50, 0)}))
        attribute = report["attributes"]["gender"]
        assert attribute["disparate_impact_ratio"] is None
        assert attribute["demographic_parity_difference"] == 0.0
        assert attribute["flags"] == [
            "gender: no group has a record selected at the threshold 0.5 (every selection "
            "rate compared is 0), so the disparate impact ratio is undefined and reported as null."
        ]

    def test_a_group_with_no_positive_labels_has_a_null_tpr(self, confusion_counts: Build) -> None:
        # 'X' has only negatives. fairlearn's true_positive_rate would report 0.0 for it, and
        # so an equalized odds difference of 0.42; the audit compares the TPRs of F and M only.
        report = audit(
            **confusion_counts({"F": (50, 20, 50, 10), "M": (50, 21, 50, 11), "X": (0, 0, 50, 14)})
        )
        attribute = report["attributes"]["gender"]
        groups = {group["group"]: group for group in attribute["groups"]}
        assert groups["X"]["tpr"] is None
        assert groups["X"]["fpr"] == pytest.approx(14 / 50)
        # TPR spread 21/50 - 20/50 = 0.02 (F, M); FPR spread 14/50 - 10/50 = 0.08 (F, M, X)
        assert attribute["equalized_odds_difference"] == pytest.approx(0.08, abs=1e-9)
        assert attribute["flags"] == [msg.NO_POSITIVES.format(attribute="gender", group="X")]

    def test_a_group_with_no_negative_labels_has_a_null_fpr(self, confusion_counts: Build) -> None:
        # M has only positives: its FPR is undefined, and only F has an FPR.
        report = audit(**confusion_counts({"F": (50, 20, 50, 10), "M": (50, 17, 0, 0)}))
        attribute = report["attributes"]["gender"]
        groups = {group["group"]: group for group in attribute["groups"]}
        assert groups["M"]["fpr"] is None
        # TPR spread 20/50 - 17/50 = 0.06; no FPR pair to compare
        assert attribute["equalized_odds_difference"] == pytest.approx(0.06, abs=1e-9)
        assert attribute["flags"] == [msg.NO_NEGATIVES.format(attribute="gender", group="M")]

    def test_equalized_odds_is_null_when_no_rate_can_be_compared(
        self, confusion_counts: Build
    ) -> None:
        # F has only positives, M only negatives: no TPR pair and no FPR pair to compare.
        report = audit(**confusion_counts({"F": (40, 20, 0, 0), "M": (0, 0, 40, 20)}))
        attribute = report["attributes"]["gender"]
        assert attribute["equalized_odds_difference"] is None
        assert msg.EQUALIZED_ODDS_UNDEFINED.format(attribute="gender") in attribute["flags"]

    def test_a_small_group_is_reported_but_not_judged(self, selection_counts: Build) -> None:
        # 'X' (5 records, none selected) would drive the ratio to 0.0 if it were judged.
        report = audit(**selection_counts({"F": (100, 40), "M": (100, 42), "X": (5, 0)}))
        attribute = report["attributes"]["gender"]
        groups = {group["group"]: group for group in attribute["groups"]}
        assert groups["X"]["size"] == 5
        assert groups["X"]["selection_rate"] == 0.0
        assert groups["X"]["too_small_to_judge"] is True
        assert groups["F"]["too_small_to_judge"] is False
        assert attribute["disparate_impact_ratio"] == pytest.approx(40 / 42)
        assert attribute["demographic_parity_difference"] == pytest.approx(0.02)
        assert attribute["flags"] == [
            "gender: group 'X' has 5 records, fewer than the minimum of 30; it is too small "
            "to judge and is left out of the ratio and the differences."
        ]

    def test_the_minimum_group_size_is_inclusive(self, selection_counts: Build) -> None:
        report = audit(
            **selection_counts({"F": (29, 10), "M": (30, 10)}),
            bounds=FairnessBounds(min_group_size=30),
        )
        groups = report["attributes"]["gender"]["groups"]
        assert [group["too_small_to_judge"] for group in groups] == [True, False]

    def test_only_one_group_large_enough_to_judge(self, selection_counts: Build) -> None:
        report = audit(**selection_counts({"F": (100, 40), "X": (5, 0)}))
        attribute = report["attributes"]["gender"]
        assert attribute["disparate_impact_ratio"] == 1.0
        assert attribute["demographic_parity_difference"] == 0.0
        assert (
            msg.ONLY_ONE_GROUP_JUDGED.format(attribute="gender", group="F", minimum=30)
            in (attribute["flags"])
        )

    def test_no_group_large_enough_to_judge(self, selection_counts: Build) -> None:
        report = audit(**selection_counts({"F": (10, 4), "M": (10, 1)}))
        attribute = report["attributes"]["gender"]
        assert attribute["disparate_impact_ratio"] is None
        assert attribute["demographic_parity_difference"] is None
        assert attribute["equalized_odds_difference"] is None
        assert attribute["attribution_disparity"] == []
        assert attribute["flags"][-1] == msg.NO_GROUP_JUDGED.format(attribute="gender", minimum=30)
