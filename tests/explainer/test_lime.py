"""LIME: reproducible for the same request, with the surrogate's fit reported."""

from __future__ import annotations

import pytest

from explainer.service import Decision, ExplainerService
from tests.conftest import DEMO_NAMES, customers, features_of


@pytest.mark.parametrize("name", DEMO_NAMES)
def test_identical_requests_get_identical_lime_answers_with_r2(
    demo_service: ExplainerService, name: str
) -> None:
    model = demo_service.model(name)
    frame = customers(name, 2)
    decisions = [Decision(features_of(frame, model.schema.feature_names, i)) for i in range(2)]
    first = demo_service.explain(name, decisions, method="lime")
    again = demo_service.explain(name, decisions, method="lime")
    assert [e.attributions for e in first] == [e.attributions for e in again]
    assert [e.base_value for e in first] == [e.base_value for e in again]
    for e in first:
        assert e.method == "lime"
        assert 0.0 <= e.quality["r2"] <= 1.0  # type: ignore[operator]
        assert sorted(a.feature for a in e.attributions) == sorted(model.schema.feature_names)
        assert e.meta["seed"] == again[0].meta["seed"] or len(decisions) > 1


def test_a_different_request_draws_a_different_neighbourhood(
    demo_service: ExplainerService,
) -> None:
    model = demo_service.model("lead_score")
    frame = customers("lead_score", 2)
    one = demo_service.explain(
        "lead_score", [Decision(features_of(frame, model.schema.feature_names, 0))], method="lime"
    )
    two = demo_service.explain(
        "lead_score", [Decision(features_of(frame, model.schema.feature_names, 1))], method="lime"
    )
    assert one[0].meta["seed"] != two[0].meta["seed"]
