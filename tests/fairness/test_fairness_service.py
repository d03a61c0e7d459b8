"""Fairness through the service: the model scores the records, SHAP attributes them, and the
audit's numbers equal fairlearn's and the hand arithmetic."""

from __future__ import annotations

import io
from typing import Any

import joblib
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
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeClassifier

from explainer.exceptions import ValidationError
from explainer.fairness import FairnessBounds
from explainer.service import AuditRecord, ExplainerService
from model_store import FileSystemStore, MemoryStore
from model_store.demo import DemoModel
from model_store.types import FeatureSchema, FeatureSpec

TOLERANCE = 1e-9
TINY = FairnessBounds(min_group_size=1)

# The hand example of tests/fairness/test_fairness_metrics.py, now scored by a model: the tiny
# model selects a record exactly when x == 1 (P(yes) ~ 0.9999 for x = 1, ~ 0.0001 for x = 0).
#
#   group  x  label  selected      group  x  label  selected
#   A      1  1      yes (TP)      B      1  1      yes (TP)
#   A      1  1      yes (TP)      B      1  0      yes (FP)
#   A      1  0      yes (FP)      B      0  1      no  (FN)
#   A      0  1      no  (FN)      B      0  1      no  (FN)
#   A      0  0      no  (TN)      B      0  0      no  (TN)
#
# A: selection rate 3/5, TPR 2/3, FPR 1/2;  B: selection rate 2/5, TPR 1/3, FPR 1/2
# disparate impact ratio 2/3, demographic parity difference 1/5, equalized odds difference 1/3
GROUPS = ["A"] * 5 + ["B"] * 5
X = [1, 1, 1, 0, 0, 1, 1, 0, 0, 0]
LABELS = [1, 1, 0, 1, 0, 1, 0, 1, 1, 0]
PLANS = ["basic", "plus", "basic", "plus", "basic", "plus", "basic", "plus", "plus", "basic"]

TINY_SCHEMA = FeatureSchema(
    task="binary",
    target="outcome",
    positive_class="yes",
    features=(
        FeatureSpec("x", "numeric", "Flag", min=0, max=1),
        FeatureSpec("plan", "categorical", "Plan", categories=("basic", "plus")),
    ),
    protected_attributes=("segment",),
)
THREE_CLASS_SCHEMA = FeatureSchema(
    task="multiclass",
    target="tier",
    features=(
        FeatureSpec("x", "numeric", "Flag", min=0, max=2),
        FeatureSpec("plan", "categorical", "Plan", categories=("basic", "plus")),
    ),
)


def _pipeline(final: Any) -> Pipeline:
    prep = ColumnTransformer(
        [("cat", OneHotEncoder(categories=[["basic", "plus"]], sparse_output=False), ["plan"])],
        remainder="passthrough",
    )
    return Pipeline([("prep", prep), ("model", final)])


def tiny_store(store: FileSystemStore | None = None) -> FileSystemStore:
    """``tiny`` (binary, selects x == 1) and ``tiers`` (three classes low/mid/top = x; its
    card names mid and top as selected, the card of its twin ``tiers_open`` does not)."""
    rng = np.random.default_rng(0)
    store = store if store is not None else MemoryStore()
    data = pd.DataFrame({"x": rng.integers(0, 2, 400), "plan": rng.choice(["basic", "plus"], 400)})
    binary = _pipeline(LogisticRegression(C=1e4, max_iter=5000))
    binary.fit(data, np.where(data.x == 1, "yes", "no"))
    tiers = pd.DataFrame({"x": rng.integers(0, 3, 600), "plan": rng.choice(["basic", "plus"], 600)})
    three = _pipeline(DecisionTreeClassifier(max_depth=3, random_state=0))
    three.fit(tiers, np.array(["low", "mid", "top"])[tiers.x])
    for name, model, schema, frame, card in (
        ("tiny", binary, TINY_SCHEMA, data, {"owner": "tests"}),
        ("tiers", three, THREE_CLASS_SCHEMA, tiers, {"selected_classes": ["mid", "top"]}),
        ("tiers_open", three, THREE_CLASS_SCHEMA, tiers, {}),
    ):
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        record = store.register(
            name, buffer.getvalue(), background=frame.iloc[:50], schema=schema, card=card
        )
        store.promote(name, record.version)
    return store


def hand_records(labels: list[Any] | None = None) -> list[AuditRecord]:
    given = LABELS if labels is None else labels
    return [
        AuditRecord({"x": X[i], "plan": PLANS[i]}, {"segment": GROUPS[i]}, given[i])
        for i in range(len(X))
    ]


@pytest.fixture(scope="module")
def tiny_service() -> ExplainerService:
    return ExplainerService(tiny_store())


@pytest.fixture(scope="module")
def hand_report(tiny_service: ExplainerService) -> dict[str, Any]:
    return tiny_service.fairness("tiny", hand_records(), bounds=TINY)


class TestTheHandExample:
    def test_the_model_selects_exactly_the_records_with_x_equal_to_one(
        self, tiny_service: ExplainerService
    ) -> None:
        model = tiny_service.model("tiny")
        frame = pd.DataFrame({"x": X, "plan": PLANS})
        proba = model.predict_proba(frame)[:, model.class_index("yes")]
        assert ((proba >= 0.5).astype(int) == X).all()

    def test_group_rates_equal_the_hand_arithmetic(self, hand_report: dict[str, Any]) -> None:
        groups = {g["group"]: g for g in hand_report["attributes"]["segment"]["groups"]}
        expected = {"A": (5, 3 / 5, 2 / 3, 1 / 2), "B": (5, 2 / 5, 1 / 3, 1 / 2)}
        for name, (size, rate, tpr, fpr) in expected.items():
            assert groups[name]["size"] == size
            assert groups[name]["selection_rate"] == pytest.approx(rate, abs=TOLERANCE)
            assert groups[name]["tpr"] == pytest.approx(tpr, abs=TOLERANCE)
            assert groups[name]["fpr"] == pytest.approx(fpr, abs=TOLERANCE)

    def test_summary_metrics_equal_the_hand_arithmetic(self, hand_report: dict[str, Any]) -> None:
        segment = hand_report["attributes"]["segment"]
        assert segment["disparate_impact_ratio"] == pytest.approx(2 / 3, abs=TOLERANCE)
        assert segment["demographic_parity_difference"] == pytest.approx(1 / 5, abs=TOLERANCE)
        assert segment["equalized_odds_difference"] == pytest.approx(1 / 3, abs=TOLERANCE)

    def test_every_metric_equals_fairlearn(self, hand_report: dict[str, Any]) -> None:
        selected = np.array(X)
        labels = np.array(LABELS)
        sensitive = pd.Series(GROUPS, name="segment")
        frame = MetricFrame(
            metrics={"sr": selection_rate, "tpr": true_positive_rate, "fpr": false_positive_rate},
            y_true=labels,
            y_pred=selected,
            sensitive_features=sensitive,
        ).by_group
        segment = hand_report["attributes"]["segment"]
        for group in segment["groups"]:
            row = frame.loc[group["group"]]
            assert group["selection_rate"] == pytest.approx(row["sr"], abs=TOLERANCE)
            assert group["tpr"] == pytest.approx(row["tpr"], abs=TOLERANCE)
            assert group["fpr"] == pytest.approx(row["fpr"], abs=TOLERANCE)
        kwargs = {"y_true": labels, "y_pred": selected, "sensitive_features": sensitive}
        assert segment["disparate_impact_ratio"] == pytest.approx(
            demographic_parity_ratio(**kwargs), abs=TOLERANCE
        )
        assert segment["demographic_parity_difference"] == pytest.approx(
            demographic_parity_difference(**kwargs), abs=TOLERANCE
        )
        assert segment["equalized_odds_difference"] == pytest.approx(
            equalized_odds_difference(**kwargs), abs=TOLERANCE
        )

    def test_attributions_are_shap_in_the_native_space_as_explain_frame_gives_them(
        self, tiny_service: ExplainerService, hand_report: dict[str, Any]
    ) -> None:
        model = tiny_service.model("tiny")
        assert hand_report["attributions"] == {"method": "shap", "output": model.native_output}
        frame = pd.DataFrame({"x": X, "plan": PLANS})
        explanations = tiny_service.explain_frame(
            model, frame, [None] * len(X), output=model.native_output
        )
        for group in hand_report["attributes"]["segment"]["groups"]:
            rows = [i for i, g in enumerate(GROUPS) if g == group["group"]]
            for feature in ("x", "plan"):
                expected = np.mean(
                    [
                        abs(
                            next(
                                a.contribution
                                for a in explanations[i].attributions
                                if a.feature == feature
                            )
                        )
                        for i in rows
                    ]
                )
                assert group["mean_abs_attribution"][feature] == pytest.approx(
                    expected, abs=TOLERANCE
                )

    def test_the_response_names_model_threshold_selection_and_counts(
        self, hand_report: dict[str, Any]
    ) -> None:
        assert hand_report["model"]["name"] == "tiny"
        assert hand_report["threshold"] == 0.5
        assert hand_report["n_records"] == 10
        assert hand_report["labels"] is True
        assert hand_report["selection"] == {
            "classes": ["yes"],
            "score": "P(yes)",
            "rule": "selected when P(yes) >= 0.5",
        }

    def test_labels_may_be_class_names(
        self, tiny_service: ExplainerService, hand_report: dict[str, Any]
    ) -> None:
        named = ["yes" if label else "no" for label in LABELS]
        again = tiny_service.fairness("tiny", hand_records(named), bounds=TINY)
        assert again["attributes"] == hand_report["attributes"]

    def test_without_labels_the_error_rates_are_null(self, tiny_service: ExplainerService) -> None:
        report = tiny_service.fairness("tiny", hand_records([None] * 10), bounds=TINY)
        segment = report["attributes"]["segment"]
        assert report["labels"] is False
        assert segment["equalized_odds_difference"] is None
        assert all(g["tpr"] is None and g["fpr"] is None for g in segment["groups"])
        assert segment["disparate_impact_ratio"] == pytest.approx(2 / 3, abs=TOLERANCE)


class TestFlagsExactlyWhenBoundsAreBreached:
    @pytest.mark.parametrize(
        ("bounds", "breached"),
        [
            ({"min_disparate_impact": 0.67}, "disparate impact"),  # 2/3 < 0.67
            ({"max_demographic_parity_difference": 0.19}, "demographic parity"),  # 0.2 > 0.19
            ({"max_equalized_odds_difference": 0.33}, "equalized odds"),  # 1/3 > 0.33
        ],
    )
    def test_a_bound_just_inside_the_metric_flags_it(
        self, tiny_service: ExplainerService, bounds: dict[str, float], breached: str
    ) -> None:
        relaxed = {
            "min_disparate_impact": 0.0,
            "max_demographic_parity_difference": 1.0,
            "max_equalized_odds_difference": 1.0,
        }
        chosen = FairnessBounds(min_group_size=1, **{**relaxed, **bounds})
        flags = tiny_service.fairness("tiny", hand_records(), bounds=chosen)["attributes"][
            "segment"
        ]["flags"]
        assert len(flags) == 1 and breached in flags[0]

    def test_bounds_exactly_at_the_metrics_raise_no_flag(
        self, tiny_service: ExplainerService
    ) -> None:
        at = FairnessBounds(
            min_group_size=1,
            min_disparate_impact=0.6,  # 2/3 is not below it
            max_demographic_parity_difference=0.2,  # 0.2 is not above it
            max_equalized_odds_difference=0.34,  # 1/3 is not above it
        )
        report = tiny_service.fairness("tiny", hand_records(), bounds=at)
        assert report["attributes"]["segment"]["flags"] == []


@pytest.fixture(scope="module")
def churn_audit(
    demo_service: ExplainerService, demo_models: dict[str, DemoModel]
) -> dict[str, Any]:
    frame = demo_models["churn"].audit_frame
    return demo_service.fairness_frame(
        "churn",
        frame,
        protected=["gender", "age_band"],
        label="churn",
    )


class TestTheDemoDisparity:
    """The churn model selects the 65+ age band far more often, through age proxies."""

    def test_the_four_fifths_rule_is_breached_for_age(self, churn_audit: dict[str, Any]) -> None:
        age = churn_audit["attributes"]["age_band"]
        assert age["disparate_impact_ratio"] < 0.8
        assert any("four-fifths" in flag for flag in age["flags"])
        rates = {g["group"]: g["selection_rate"] for g in age["groups"]}
        assert max(rates, key=rates.__getitem__) == "65+"

    def test_the_cards_known_proxy_is_named(
        self, churn_audit: dict[str, Any], demo_models: dict[str, DemoModel]
    ) -> None:
        proxy = demo_models["churn"].card["known_proxy"]
        found = [
            p["feature"] for p in churn_audit["attributes"][proxy["protected"]]["likely_proxies"]
        ]
        assert proxy["feature"] in found
        assert "avg_session_minutes" in found  # the card's limitations name it too

    @pytest.mark.parametrize("name", ["lead_score", "case_priority"])
    def test_every_demo_models_disparity_and_proxy_are_found_with_default_bounds(
        self, demo_service: ExplainerService, demo_models: dict[str, DemoModel], name: str
    ) -> None:
        model = demo_models[name]
        audit = demo_service.fairness_frame(
            name, model.audit_frame.iloc[:800], protected=["age_band"], label=model.schema.target
        )
        age = audit["attributes"]["age_band"]
        assert any("four-fifths" in flag for flag in age["flags"])
        assert model.card["known_proxy"]["feature"] in [p["feature"] for p in age["likely_proxies"]]

    def test_the_audit_reproduces_the_selection_rates_on_the_card(
        self, churn_audit: dict[str, Any], demo_models: dict[str, DemoModel]
    ) -> None:
        card = demo_models["churn"].card["fairness"]
        for attribute in ("gender", "age_band"):
            found = churn_audit["attributes"][attribute]
            rates = {g["group"]: g["selection_rate"] for g in found["groups"]}
            assert rates == pytest.approx(card[attribute]["selection_rate"], abs=1e-4)
            assert found["disparate_impact_ratio"] == pytest.approx(
                card[attribute]["disparate_impact_ratio"], abs=1e-4
            )


def test_lead_scores_positive_class_is_its_first_probability_column(
    demo_service: ExplainerService, demo_models: dict[str, DemoModel]
) -> None:
    lead = demo_models["lead_score"]
    frame = lead.audit_frame.iloc[:200]
    report = demo_service.fairness_frame("lead_score", frame, protected=["age_band"])
    assert report["selection"]["classes"] == ["converted"]
    proba = lead.estimator.predict_proba(frame[lead.schema.feature_names])
    column = list(lead.estimator.classes_).index("converted")
    assert column == 0
    selected = pd.Series(proba[:, column] >= 0.5).groupby(frame["age_band"].to_numpy()).mean()
    rates = {g["group"]: g["selection_rate"] for g in report["attributes"]["age_band"]["groups"]}
    assert rates == pytest.approx(selected.to_dict(), abs=TOLERANCE)


TIER_RECORDS = [
    AuditRecord({"x": x, "plan": p}, {"segment": s})
    for x, p, s in [
        (0, "basic", "A"),
        (1, "plus", "A"),
        (2, "basic", "A"),
        (0, "plus", "B"),
        (0, "basic", "B"),
        (2, "plus", "B"),
    ]
]


class TestMulticlass:
    def test_the_score_is_the_summed_probability_of_the_selected_classes(
        self, tiny_service: ExplainerService
    ) -> None:
        report = tiny_service.fairness("tiers", TIER_RECORDS, bounds=TINY)
        assert report["selection"]["score"] == "P(mid) + P(top)"  # the card's selected_classes
        rates = {g["group"]: g["selection_rate"] for g in report["attributes"]["segment"]["groups"]}
        assert rates == pytest.approx({"A": 2 / 3, "B": 1 / 3}, abs=TOLERANCE)

    def test_positive_classes_override_the_card(self, tiny_service: ExplainerService) -> None:
        report = tiny_service.fairness("tiers", TIER_RECORDS, bounds=TINY, positive_classes=["top"])
        rates = {g["group"]: g["selection_rate"] for g in report["attributes"]["segment"]["groups"]}
        assert rates == pytest.approx({"A": 1 / 3, "B": 1 / 3}, abs=TOLERANCE)

    def test_attributions_of_a_class_set_add_up_per_class(
        self, tiny_service: ExplainerService
    ) -> None:
        model = tiny_service.model("tiers")
        frame = pd.DataFrame([dict(r.features) for r in TIER_RECORDS])
        report = tiny_service.fairness("tiers", TIER_RECORDS, bounds=TINY)
        per_class = [
            tiny_service.explain_frame(
                model, frame, [None] * len(frame), output="probability", class_name=c
            )
            for c in ("mid", "top")
        ]
        for group in report["attributes"]["segment"]["groups"]:
            rows = [
                i for i, r in enumerate(TIER_RECORDS) if r.protected["segment"] == group["group"]
            ]
            expected = np.mean(
                [
                    abs(
                        sum(
                            next(a.contribution for a in e[i].attributions if a.feature == "x")
                            for e in per_class
                        )
                    )
                    for i in rows
                ]
            )
            assert group["mean_abs_attribution"]["x"] == pytest.approx(expected, abs=1e-9)

    def test_a_multiclass_model_needs_its_selected_classes(
        self, tiny_service: ExplainerService
    ) -> None:
        with pytest.raises(ValidationError) as caught:
            tiny_service.fairness("tiers_open", TIER_RECORDS)
        assert [e.field for e in caught.value.errors] == ["positive_classes"]
        report = tiny_service.fairness(
            "tiers_open", TIER_RECORDS, bounds=TINY, positive_classes=["mid", "top"]
        )
        assert report["selection"]["classes"] == ["mid", "top"]


class TestBadRecordsAreNamed:
    def fields(self, service: ExplainerService, records: list[AuditRecord], **kw: Any) -> list[str]:
        with pytest.raises(ValidationError) as caught:
            service.fairness("tiny", records, **kw)
        return [e.field for e in caught.value.errors]

    def test_features_labels_and_groups_are_named_all_at_once(
        self, tiny_service: ExplainerService
    ) -> None:
        records = hand_records()
        records[3] = AuditRecord({"x": "high", "plan": "basic"}, {"segment": "A"}, 1)
        records[0] = AuditRecord({"x": 1, "plan": "basic"}, {"segment": ""}, 7)
        records[5] = AuditRecord({"x": 1, "plan": "gold"}, {"segment": "B", "age": "30"}, 1)
        assert self.fields(tiny_service, records) == [
            "records[3].features.x",
            "records[5].features.plan",
            "records[0].protected.segment",
            "records[5].protected.age",
            "records[0].label",
        ]

    def test_labels_are_all_or_none(self, tiny_service: ExplainerService) -> None:
        labels: list[Any] = list(LABELS)
        labels[4] = None
        assert self.fields(tiny_service, hand_records(labels)) == ["records[4].label"]

    def test_a_missing_group_is_named(self, tiny_service: ExplainerService) -> None:
        records = hand_records()
        records[2] = AuditRecord({"x": 1, "plan": "basic"}, {}, 1)
        assert self.fields(tiny_service, records) == ["records[2].protected.segment"]

    @pytest.mark.parametrize(
        ("kw", "field"),
        [({"threshold": 1.5}, "threshold"), ({"positive_classes": ["maybe"]}, "positive_classes")],
    )
    def test_bad_settings_are_named(
        self, tiny_service: ExplainerService, kw: dict[str, Any], field: str
    ) -> None:
        assert self.fields(tiny_service, hand_records(), **kw) == [field]

    def test_a_table_names_rows_and_columns(self, tiny_service: ExplainerService) -> None:
        table = pd.DataFrame({"x": X, "plan": PLANS, "segment": GROUPS, "y": LABELS})
        table.loc[6, "x"] = np.nan
        with pytest.raises(ValidationError) as caught:
            tiny_service.fairness_frame("tiny", table, protected=["segment"], label="y")
        assert [e.field for e in caught.value.errors] == ["rows[6].features.x"]
        with pytest.raises(ValidationError, match="'gender'"):
            tiny_service.fairness_frame("tiny", table, protected=["gender"])
