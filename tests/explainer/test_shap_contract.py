"""The SHAP contract, run over every demo model and an XGBoost pipeline registered via the CLI:
additivity in both output spaces, XGBoost's own pred_contribs in log-odds, raw features only,
sorted by size."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost

from explainer.service import Decision, ExplainerService
from explainer.types import Explanation
from tests.conftest import DEMO_NAMES, customers, features_of

TOLERANCE = 1e-6


def explain_rows(
    service: ExplainerService, name: str, n: int, output: str, class_name: str | None = None
) -> list[Explanation]:
    model = service.model(name)
    frame = customers(name, n)
    decisions = [
        Decision(features_of(frame, model.schema.feature_names, i), frame.customer_id[i])
        for i in range(n)
    ]
    return service.explain(name, decisions, output=output, class_name=class_name)  # type: ignore[arg-type]


def explained_score(service: ExplainerService, name: str, e: Explanation) -> float:
    """The model's own score for the explained class, in the explanation's output space."""
    model = service.model(name)
    proba = e.prediction.score if e.explained_class == e.prediction.class_ else None
    row = {a.feature: a.value for a in e.attributions}
    import pandas as pd

    frame = pd.DataFrame([row], columns=model.schema.feature_names)
    probability = float(
        model.estimator.predict_proba(frame)[0, model.class_index(e.explained_class)]
    )
    if proba is not None:
        assert proba == pytest.approx(probability, abs=1e-6)
    if e.output == "probability":
        return probability
    if model.family == "xgboost":
        margin = float(model.final_estimator.predict(model.transform(frame), output_margin=True)[0])
        return margin if model.class_index(e.explained_class) == 1 else -margin
    return float(np.log(probability) - np.log1p(-probability))


@pytest.mark.parametrize("name", DEMO_NAMES)
@pytest.mark.parametrize("output", ["probability", "log_odds"])
def test_base_value_plus_contributions_is_the_score(
    demo_service: ExplainerService, name: str, output: str
) -> None:
    for e in explain_rows(demo_service, name, 4, output):
        assert e.explained_score == pytest.approx(
            explained_score(demo_service, name, e), abs=TOLERANCE
        )
        assert e.quality["additivity_error"] < TOLERANCE


@pytest.mark.parametrize("name", DEMO_NAMES)
def test_attributions_cover_exactly_the_raw_features_sorted_by_size(
    demo_service: ExplainerService, name: str
) -> None:
    schema = demo_service.model(name).schema
    for e in explain_rows(demo_service, name, 3, "probability"):
        assert sorted(a.feature for a in e.attributions) == sorted(schema.feature_names)
        sizes = [abs(a.contribution) for a in e.attributions]
        assert sizes == sorted(sizes, reverse=True)
        assert {a.label for a in e.attributions} == {f.label for f in schema.features}


def test_churn_log_odds_equal_xgboost_pred_contribs_summed_to_raw_features(
    demo_service: ExplainerService,
) -> None:
    model = demo_service.model("churn")
    frame = customers("churn", 20)
    explanations = explain_rows(demo_service, "churn", 20, "log_odds")
    encoded = model.estimator[:-1].transform(frame[model.schema.feature_names])
    names = model.estimator[:-1].get_feature_names_out()
    contribs = model.final_estimator.get_booster().predict(
        xgboost.DMatrix(np.asarray(encoded, dtype=float)), pred_contribs=True
    )
    for i, e in enumerate(explanations):
        for a in e.attributions:
            columns = [
                c for c, n in enumerate(names) if n == a.feature or n.startswith(f"{a.feature}_")
            ]
            assert a.contribution == pytest.approx(contribs[i, columns].sum(), abs=TOLERANCE)


def test_multiclass_explains_the_predicted_class_or_the_one_asked_for(
    demo_service: ExplainerService,
) -> None:
    predicted = explain_rows(demo_service, "case_priority", 3, "probability")
    assert all(e.explained_class == e.prediction.class_ for e in predicted)
    urgent = explain_rows(demo_service, "case_priority", 3, "probability", class_name="urgent")
    assert all(e.explained_class == "urgent" for e in urgent)
    for e in urgent:
        assert e.explained_score == pytest.approx(
            explained_score(demo_service, "case_priority", e), abs=TOLERANCE
        )


def test_binary_models_explain_the_positive_class_even_when_it_is_not_column_one(
    demo_service: ExplainerService,
) -> None:
    model = demo_service.model("lead_score")
    assert model.classes.index("converted") == 0
    for e in explain_rows(demo_service, "lead_score", 3, "log_odds"):
        assert e.explained_class == "converted"
        assert e.explained_score == pytest.approx(
            explained_score(demo_service, "lead_score", e), abs=TOLERANCE
        )


def test_the_same_request_gives_the_same_explanation(demo_service: ExplainerService) -> None:
    first = explain_rows(demo_service, "churn", 2, "probability")
    again = explain_rows(demo_service, "churn", 2, "probability")
    assert [e.attributions for e in first] == [e.attributions for e in again]
    assert first[0].id != again[0].id
