"""The rationale: names the largest drivers by label, in the direction their sign says."""

from __future__ import annotations

import pytest

from explainer.rationale import rationale
from explainer.service import Decision, ExplainerService
from explainer.types import Attribution
from model_store.types import FeatureSchema
from tests.conftest import DEMO_NAMES, customers, features_of

SCHEMA = FeatureSchema.from_dict(
    {
        "task": "binary",
        "target": "churn",
        "positive_class": "Yes",
        "classes": ["No", "Yes"],
        "features": [
            {
                "name": "contract",
                "type": "categorical",
                "label": "Contract type",
                "categories": ["Month-to-month", "Two year"],
            },
            {
                "name": "tenure",
                "type": "numeric",
                "label": "Months as a customer",
                "unit": "months",
            },
            {"name": "nps", "type": "numeric", "label": "NPS"},
        ],
    }
)


def text(attributions: list[Attribution], output: str = "probability") -> str:
    return rationale(
        schema=SCHEMA,
        card={"score_label": "Churn risk"},
        attributions=attributions,
        score=0.82,
        explained_class="Yes",
        band="high",
        output=output,  # type: ignore[arg-type]
        method="shap",
    )


def test_it_opens_with_the_score_and_band_and_names_drivers_with_direction_and_size() -> None:
    said = text(
        [
            Attribution("contract", "Contract type", "Month-to-month", 0.21),
            Attribution("tenure", "Months as a customer", 3, 0.12),
            Attribution("nps", "NPS", 9, -0.04),
        ]
    )
    assert said == (
        "Churn risk is high (82%), mainly because Contract type is Month-to-month (+21 points) "
        "and Months as a customer is 3 months (+12 points). "
        "What lowered it: NPS is 9 (-4.0 points)."
    )


def test_when_everything_lowers_the_score_nothing_is_said_to_raise_it() -> None:
    said = text([Attribution("tenure", "Months as a customer", 60, -0.3)])
    assert "mainly because" not in said
    assert "held down mainly by: Months as a customer is 60 months (-30 points)" in said


def test_log_odds_sizes_are_given_in_log_odds() -> None:
    said = text([Attribution("tenure", "Months as a customer", 3, 0.8)], output="log_odds")
    assert "(+0.80 log-odds)" in said


def test_negligible_contributions_are_not_read_aloud() -> None:
    said = text(
        [
            Attribution("contract", "Contract type", "Two year", 0.5),
            Attribution("nps", "NPS", 7, 0.001),
        ]
    )
    assert "NPS" not in said


@pytest.mark.parametrize("name", DEMO_NAMES)
@pytest.mark.parametrize("method", ["shap", "lime"])
def test_demo_rationales_name_the_top_driver_in_its_direction(
    demo_service: ExplainerService, name: str, method: str
) -> None:
    model = demo_service.model(name)
    frame = customers(name, 3)
    decisions = [Decision(features_of(frame, model.schema.feature_names, i)) for i in range(3)]
    for e in demo_service.explain(name, decisions, method=method):  # type: ignore[arg-type]
        top = e.attributions[0]
        assert top.label in e.rationale
        said_after = e.rationale.split(top.label, 1)[1]
        sign = "+" if top.contribution > 0 else "-"
        assert f"({sign}" in said_after.split(")")[0] + ")"
        lowered_part = (
            e.rationale.split("What lowered it:")[-1] if "What lowered it" in e.rationale else ""
        )
        assert (top.label in lowered_part) == (
            top.contribution < 0 and "mainly because" in e.rationale
        )
