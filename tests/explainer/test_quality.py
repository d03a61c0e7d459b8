"""Quality signals on every explanation, and the review queue they feed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flask.testing import FlaskClient

from explainer.api import create_app
from explainer.config import Settings
from explainer.exceptions import ValidationError
from explainer.keys import KeyRing
from explainer.methods import AttributionBatch, PreparedModel, ShapExplainer
from explainer.quality import (
    DEFAULT_REVIEW_BOUNDS,
    ReviewBounds,
    assess,
    jaccard,
    threshold_distance,
    top_features,
)
from explainer.service import Decision, ExplainerService
from explainer.types import OutputSpace
from tests.conftest import KEYS, auth, customers, features_of

# -- the pure signals ---------------------------------------------------------------------------


class TestTopFeaturesAndAgreement:
    def test_the_largest_magnitudes_win_and_zeros_never_count(self) -> None:
        names = ["a", "b", "c", "d", "e"]
        assert top_features(names, [0.1, -0.9, 0.5, 0.0, -0.2], 3) == {"b", "c", "e"}
        assert top_features(names, [0.0, 0.0, 0.3, 0.0, 0.0], 3) == {"c"}
        assert top_features(names, [0.0] * 5, 3) == frozenset()

    def test_jaccard_by_hand(self) -> None:
        abc, abd, xyz = frozenset("abc"), frozenset("abd"), frozenset("xyz")
        assert jaccard(abc, abc) == 1.0
        assert jaccard(abc, abd) == 2 / 4  # one swap at rank 3
        assert jaccard(abc, xyz) == 0.0
        assert jaccard(frozenset(), frozenset()) == 1.0


class TestThresholdDistance:
    def test_binary_is_the_distance_of_the_positive_class_from_the_threshold(self) -> None:
        assert threshold_distance([0.3, 0.7], ("No", "Yes"), "Yes", 0.5) == pytest.approx(0.2)
        # the positive class may be the first column (lead_score's "converted")
        assert threshold_distance([0.51, 0.49], ("converted", "not"), "converted", 0.5) == (
            pytest.approx(0.01)
        )

    def test_multiclass_is_the_margin_between_the_two_likeliest_classes(self) -> None:
        assert threshold_distance([0.1, 0.45, 0.4, 0.05], "abcd", None, 0.5) == pytest.approx(0.05)


class TestAssess:
    def flags(self, **kw: Any) -> tuple[str, ...]:
        base: dict[str, Any] = {
            "method": "lime",
            "quality": {"r2": 0.9},
            "agreement": 1.0,
            "distance": 0.4,
            "threshold": 0.5,
        }
        return assess(**{**base, **kw}).crossed

    def test_each_bound_is_strict(self) -> None:
        bounds = DEFAULT_REVIEW_BOUNDS
        assert self.flags(agreement=bounds.min_agreement) == ()
        assert self.flags(agreement=0.49) == ("shap_lime_agreement",)
        assert self.flags(quality={"r2": bounds.min_r2}) == ()
        assert self.flags(quality={"r2": 0.29}) == ("r2",)
        assert self.flags(distance=bounds.min_threshold_distance) == ()
        assert self.flags(distance=0.019) == ("threshold_distance",)
        shap = {"method": "shap", "agreement": None}
        assert self.flags(**shap, quality={"additivity_error": 1e-6}) == ()
        assert self.flags(**shap, quality={"additivity_error": 2e-6}) == ("additivity_error",)
        assert self.flags(**shap, quality={"additivity_error": float("nan")}) == (
            "additivity_error",
        )

    def test_a_shap_explanation_is_not_judged_by_a_comparison_surrogates_fit(self) -> None:
        verdict = assess(
            method="shap",
            quality={"additivity_error": 0.0},
            agreement=1.0,
            distance=0.4,
            threshold=0.5,
            lime_r2=0.01,
        )
        assert verdict.needs_review is None
        assert verdict.signals["lime_r2"] == 0.01

    def test_reasons_are_sentences_in_signal_order(self) -> None:
        verdict = assess(
            method="lime", quality={"r2": 0.1}, agreement=0.2, distance=0.01, threshold=0.5
        )
        assert verdict.needs_review is not None
        assert verdict.needs_review["signals"] == [
            "shap_lime_agreement",
            "r2",
            "threshold_distance",
        ]
        first, second, third = verdict.needs_review["reasons"]
        assert "disagree" in first and "0.20" in first
        assert "fits the model poorly" in second
        assert "threshold 0.5" in third
        multiclass = assess(
            method="lime", quality={"r2": 0.9}, agreement=1.0, distance=0.01, threshold=None
        )
        assert multiclass.reasons and "two most likely classes" in multiclass.reasons[0]

    @pytest.mark.parametrize(
        "bad",
        [
            {"min_agreement": 1.5},
            {"min_r2": -0.1},
            {"max_additivity_error": -1.0},
            {"min_threshold_distance": float("nan")},
            {"top_k": 0},
            {"top_k": True},
        ],
    )
    def test_bounds_are_checked(self, bad: dict[str, Any]) -> None:
        with pytest.raises(ValidationError) as caught:
            ReviewBounds(**bad)
        assert caught.value.errors[0].field == f"review_bounds.{next(iter(bad))}"


# -- the service: signals on every explanation, and the review queue ------------------------------


class ScriptedLime:
    """A LIME stand-in: SHAP's own values (so the two agree), or with SHAP's top three drivers
    silenced (so they cannot), and a chosen surrogate fit. Counts its calls."""

    name = "lime"

    def __init__(self, *, agree: bool, r2: float) -> None:
        self.agree, self.r2, self.calls = agree, r2, 0
        self._shap = ShapExplainer()

    def row_independent(self, model: PreparedModel, output: OutputSpace) -> bool:
        return False

    def explain(
        self,
        model: PreparedModel,
        frame: pd.DataFrame,
        class_indices: np.ndarray,
        output: OutputSpace,
        *,
        seed: int,
    ) -> AttributionBatch:
        self.calls += 1
        batch = self._shap.explain(model, frame, class_indices, output, seed=seed)
        values = batch.values.copy()
        if not self.agree:
            for row in values:
                row[np.argsort(-np.abs(row))[:3]] = 0.0
        return AttributionBatch(
            values=values,
            base_values=batch.base_values,
            scores=batch.scores,
            quality=[{"r2": self.r2} for _ in range(len(frame))],
            meta={"algorithm": "scripted"},
        )


def scripted_service(
    archive_service: ExplainerService, lime: ScriptedLime, **kw: Any
) -> ExplainerService:
    service = ExplainerService(
        archive_service.store,
        archive=archive_service.archive,
        explainers={"shap": ShapExplainer(), "lime": lime},
        **kw,
    )
    service._models = archive_service._models  # the demo models, already loaded
    return service


def churn_decisions(service: ExplainerService, n: int = 2) -> list[Decision]:
    names = service.model("churn").schema.feature_names
    frame = customers("churn", n)
    return [Decision(features_of(frame, names, i), f"C-{i}") for i in range(n)]


def open_cases(service: ExplainerService) -> list[dict[str, Any]]:
    return service.oversight.reviews("open")


class TestTheReviewQueue:
    def test_disagreement_reaches_the_review_queue(self, archive_service: ExplainerService) -> None:
        service = scripted_service(archive_service, ScriptedLime(agree=False, r2=0.9))
        explanations = service.explain("churn", churn_decisions(service), method="lime")
        cases = {c["explanation_id"]: c for c in open_cases(service)}
        for e in explanations:
            assert e.quality["shap_lime_agreement"] == 0.0
            assert e.needs_review is not None
            assert e.needs_review["signals"] == ["shap_lime_agreement"]
            case = cases[e.id]
            assert case["case_id"] == e.review_case_id
            assert case["opened_by"] == "system" and "disagree" in case["reason"]

    def test_a_poorly_fitting_surrogate_reaches_the_review_queue(
        self, archive_service: ExplainerService
    ) -> None:
        service = scripted_service(archive_service, ScriptedLime(agree=True, r2=0.05))
        [e] = service.explain("churn", churn_decisions(service, 1), method="lime")
        assert e.needs_review is not None and e.needs_review["signals"] == ["r2"]
        [case] = open_cases(service)
        assert case["explanation_id"] == e.id and "fits the model poorly" in case["reason"]

    def test_agreeing_well_fitting_explanations_do_not(
        self, archive_service: ExplainerService
    ) -> None:
        service = scripted_service(archive_service, ScriptedLime(agree=True, r2=0.9))
        explanations = service.explain("churn", churn_decisions(service), method="lime")
        for e in explanations:
            assert e.quality["shap_lime_agreement"] == 1.0
            assert e.needs_review is None and e.review_case_id is None
            assert e.archived
        assert open_cases(service) == []

    def test_the_archived_record_says_why_it_needs_review(
        self, archive_service: ExplainerService
    ) -> None:
        service = scripted_service(archive_service, ScriptedLime(agree=False, r2=0.05))
        [e] = service.explain("churn", churn_decisions(service, 1), method="lime")
        stored = service.oversight.record(e.id)["payload"]
        assert stored["needs_review"] == dict(e.needs_review or {})
        assert stored["quality"]["shap_lime_agreement"] == 0.0

    def test_a_decision_at_the_threshold_reaches_the_queue_with_a_custom_bound(
        self, archive_service: ExplainerService
    ) -> None:
        lime = ScriptedLime(agree=True, r2=0.9)
        service = scripted_service(
            archive_service, lime, review_bounds=ReviewBounds(min_threshold_distance=1.0)
        )
        [e] = service.explain("churn", churn_decisions(service, 1))
        assert e.needs_review is not None and e.needs_review["signals"] == ["threshold_distance"]
        assert e.quality["threshold_distance"] == pytest.approx(abs(e.prediction.score - 0.5))
        assert [c["explanation_id"] for c in open_cases(service)] == [e.id]

    def test_without_an_archive_the_flag_stays_but_no_case_is_opened(
        self, demo_service: ExplainerService
    ) -> None:
        service = ExplainerService(
            demo_service.store,
            explainers={"shap": ShapExplainer(), "lime": ScriptedLime(agree=False, r2=0.9)},
        )
        service._models = demo_service._models
        [e] = service.explain("churn", churn_decisions(service, 1), method="lime")
        assert e.needs_review is not None and e.review_case_id is None and not e.archived


class TestWhenLimeIsComputedForShapRequests:
    def test_only_when_asked(self, archive_service: ExplainerService) -> None:
        lime = ScriptedLime(agree=False, r2=0.9)
        service = scripted_service(archive_service, lime)
        [plain] = service.explain("churn", churn_decisions(service, 1))
        assert lime.calls == 0
        assert plain.quality["shap_lime_agreement"] is None and plain.needs_review is None
        assert plain.meta["compared_with"] is None
        [checked] = service.explain("churn", churn_decisions(service, 1), review_checks=True)
        assert lime.calls == 1
        assert checked.quality["shap_lime_agreement"] == 0.0
        assert checked.quality["lime_r2"] == 0.9
        assert checked.meta["compared_with"] == "lime"
        assert checked.needs_review is not None

    def test_or_when_the_service_is_set_to(self, archive_service: ExplainerService) -> None:
        lime = ScriptedLime(agree=True, r2=0.9)
        service = scripted_service(archive_service, lime, review_checks=True)
        [e] = service.explain("churn", churn_decisions(service, 1))
        assert lime.calls == 1 and e.quality["shap_lime_agreement"] == 1.0
        service.explain("churn", churn_decisions(service, 1), review_checks=False)
        assert lime.calls == 1

    def test_shap_explanations_carry_their_additivity_and_distance(
        self, demo_service: ExplainerService
    ) -> None:
        [e] = demo_service.explain("churn", churn_decisions(demo_service, 1))
        assert e.quality["additivity_error"] is not None
        assert e.quality["additivity_error"] <= DEFAULT_REVIEW_BOUNDS.max_additivity_error
        assert e.quality["threshold_distance"] == pytest.approx(abs(e.prediction.score - 0.5))


def test_real_lime_and_shap_cases_reach_the_queue_exactly_when_a_bound_is_crossed(
    archive_service: ExplainerService,
) -> None:
    """The demo random forest, explained with the real LIME: whatever the signals say, a case is
    open for an explanation exactly when one of them crosses its default bound."""
    names = archive_service.model("case_priority").schema.feature_names
    frame = customers("case_priority", 4)
    decisions = [Decision(features_of(frame, names, i)) for i in range(4)]
    explanations = archive_service.explain("case_priority", decisions, method="lime")
    flagged = set()
    bounds = DEFAULT_REVIEW_BOUNDS
    for e in explanations:
        q = e.quality
        crossed = (
            q["shap_lime_agreement"] < bounds.min_agreement  # type: ignore[operator]
            or q["r2"] < bounds.min_r2  # type: ignore[operator]
            or q["threshold_distance"] < bounds.min_threshold_distance  # type: ignore[operator]
        )
        assert (e.needs_review is not None) is crossed
        if crossed:
            flagged.add(e.id)
    assert {c["explanation_id"] for c in open_cases(archive_service)} == flagged


# -- through the API ---------------------------------------------------------------------------


@pytest.fixture
def scripted_client(settings: Settings, archive_service: ExplainerService) -> Iterator[FlaskClient]:
    service = scripted_service(archive_service, ScriptedLime(agree=False, r2=0.05))
    app = create_app(settings, service=service, keys=KeyRing.from_plain(KEYS))
    with app.test_client() as client:
        yield client


def test_the_api_response_names_the_review_case(scripted_client: FlaskClient) -> None:
    names = [
        f["name"]
        for f in scripted_client.get("/v1/models/churn", headers=auth("crm")).get_json()["schema"][
            "features"
        ]
    ]
    body = {
        "instances": [
            {"customer_id": "C-7", "features": features_of(customers("churn", 1), names, 0)}
        ],
        "method": "lime",
    }
    response = scripted_client.post("/v1/models/churn/explain", json=body, headers=auth("crm"))
    assert response.status_code == 200, response.get_json()
    [e] = response.get_json()["explanations"]
    assert e["needs_review"]["signals"] == ["shap_lime_agreement", "r2"]
    assert len(e["needs_review"]["reasons"]) == 2
    cases = scripted_client.get("/v1/reviews?status=open", headers=auth("auditor")).get_json()
    [case] = cases["cases"]
    assert case["case_id"] == e["review_case_id"] and case["opened_by"] == "system"
    # the customer may still contest it: their reason reaches the reviewer as a case of its own
    contest = scripted_client.post(
        f"/v1/explanations/{e['id']}/contest", json={"reason": "I disagree"}, headers=auth("crm")
    )
    assert contest.status_code == 201
    cases = scripted_client.get("/v1/reviews?status=open", headers=auth("auditor")).get_json()
    assert {c["opened_by"] for c in cases["cases"]} == {"system", "customer"}


def test_review_checks_is_a_request_field(scripted_client: FlaskClient) -> None:
    names = [
        f["name"]
        for f in scripted_client.get("/v1/models/churn", headers=auth("crm")).get_json()["schema"][
            "features"
        ]
    ]
    instance = {"features": features_of(customers("churn", 1), names, 0)}
    plain = scripted_client.post(
        "/v1/models/churn/explain", headers=auth("crm"), json={"instances": [instance]}
    ).get_json()["explanations"][0]
    assert plain["needs_review"] is None and "review_case_id" not in plain
    checked = scripted_client.post(
        "/v1/models/churn/explain",
        headers=auth("crm"),
        json={"instances": [instance], "review_checks": True},
    ).get_json()["explanations"][0]
    assert checked["quality"]["shap_lime_agreement"] == 0.0
    assert checked["needs_review"]["signals"] == ["shap_lime_agreement"]
    bad = scripted_client.post(
        "/v1/models/churn/explain",
        headers=auth("crm"),
        json={"instances": [instance], "review_checks": "yes"},
    )
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["field"] == "review_checks"
