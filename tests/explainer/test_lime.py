"""LIME: reproducible for the same request, with the surrogate's fit reported."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from explainer.methods import LimeExplainer, PreparedModel
from explainer.methods.base import AttributionBatch
from explainer.methods.lime_method import MAX_SAMPLES, NUM_SAMPLES, SETTLED_Z, Fit
from explainer.service import Decision, ExplainerService
from explainer.types import OutputSpace
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


# -- how many samples: adaptive by default, exact when given ---------------------------------

SEED = 7
#: what the rule may draw, the row included: NUM_SAMPLES + 1, doubling up to MAX_SAMPLES + 1
SCHEDULE = tuple(
    (NUM_SAMPLES << i) + 1
    for i in range(MAX_SAMPLES.bit_length())
    if NUM_SAMPLES << i <= MAX_SAMPLES
)


def _lead_rows(
    service: ExplainerService, n: int = 6
) -> tuple[PreparedModel, pd.DataFrame, np.ndarray]:
    model = service.model("lead_score")
    frame = customers("lead_score", n, seed=101)[model.schema.feature_names]
    k = model.class_index(model.schema.positive_class) if model.schema.positive_class else 1
    return model, frame, np.full(len(frame), k)


def _same(one: AttributionBatch, two: AttributionBatch) -> bool:
    return (
        np.array_equal(one.values, two.values)
        and np.array_equal(one.base_values, two.base_values)
        and one.quality == two.quality
    )


def samples_of(batch: AttributionBatch) -> list[int]:
    """The samples each row drew (the row included), from its own settings."""
    assert batch.row_meta is not None and "num_samples" not in batch.meta
    return [int(meta["num_samples"]) for meta in batch.row_meta]


def test_each_explanation_records_the_samples_its_own_row_drew(
    demo_service: ExplainerService,
) -> None:
    model, frame, _ = _lead_rows(demo_service)
    explanations = demo_service.explain_frame(
        model, frame, [None] * len(frame), method="lime", output="probability"
    )
    drawn = [e.meta["num_samples"] for e in explanations]
    assert len(set(drawn)) > 1  # rows that settled at different block counts
    for explanation, count in zip(explanations, drawn, strict=True):
        assert explanation.meta["num_samples_rule"].startswith("adaptive")
        assert count in SCHEDULE


def test_by_default_samples_double_until_the_top_drivers_are_settled(
    demo_service: ExplainerService,
) -> None:
    model, frame, classes = _lead_rows(demo_service)
    adaptive = LimeExplainer()
    codes = model.codec.encode(frame)
    fixed = {n: LimeExplainer(num_samples=n) for n in SCHEDULE}
    used = []
    for i in range(len(frame)):
        batch = adaptive.explain(model, frame.iloc[[i]], classes[[i]], "probability", seed=SEED)
        count = samples_of(batch)[0]
        assert count in SCHEDULE
        assert batch.meta["num_samples_rule"] == adaptive.rule != "fixed"
        used.append(count)
        # the first count of the schedule whose surrogate has its top-5 settled, or the cap
        for n in SCHEDULE:
            explainer = fixed[n]
            neighbourhood = explainer._neighbourhood(model)
            fit, drawn = explainer._one(
                model, neighbourhood, codes[i], int(classes[i]), "probability", SEED
            )
            assert drawn == n
            if n < count:
                assert not fit.settled()
            else:
                assert fit.settled() or n == SCHEDULE[-1]
                assert np.array_equal(fit.coef, batch.values[0])
                break
    # these rows include decisions settled on the first block and some that needed more
    assert min(used) == SCHEDULE[0] < max(used)


def test_the_same_request_gives_the_same_answer_and_replays_from_its_settings(
    demo_service: ExplainerService,
) -> None:
    model, frame, classes = _lead_rows(demo_service)
    for i in range(len(frame)):
        row, k = frame.iloc[[i]], classes[[i]]
        first = LimeExplainer().explain(model, row, k, "probability", seed=SEED)
        again = LimeExplainer().explain(model, row, k, "probability", seed=SEED)
        assert _same(first, again) and first.meta == again.meta
        # the reported count, passed back explicitly, draws the same samples: bit for bit
        [count] = samples_of(first)
        replay = LimeExplainer(num_samples=count).explain(model, row, k, "probability", seed=SEED)
        assert _same(first, replay)
        assert samples_of(replay) == [count] and replay.meta["num_samples_rule"] == "fixed"


def test_a_batch_reports_what_each_row_drew(demo_service: ExplainerService) -> None:
    model, frame, classes = _lead_rows(demo_service)
    explainer = LimeExplainer()
    batch = explainer.explain(model, frame, classes, "probability", seed=SEED)
    singles = [
        explainer.explain(model, frame.iloc[[i]], classes[[i]], "probability", seed=SEED)
        for i in range(len(frame))
    ]
    counts = [samples_of(s)[0] for s in singles]
    assert len(set(counts)) > 1
    assert samples_of(batch) == counts
    for i, single in enumerate(singles):
        assert np.array_equal(batch.values[i], single.values[0])
    uniform = explainer.explain(model, frame.iloc[[0, 0]], classes[:2], "probability", seed=SEED)
    assert samples_of(uniform) == [counts[0], counts[0]]


@pytest.mark.parametrize("num_samples", [2, 300, 4097, 5000, 8193])
def test_an_explicit_num_samples_is_honoured_exactly(
    demo_service: ExplainerService, monkeypatch: pytest.MonkeyPatch, num_samples: int
) -> None:
    model, frame, classes = _lead_rows(demo_service, 1)
    scored: list[int] = []
    score_codes = model.score_codes

    def counting(codes: np.ndarray, k: int, output: OutputSpace) -> np.ndarray:
        scored.append(len(codes))
        return score_codes(codes, k, output)

    monkeypatch.setattr(model, "score_codes", counting)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no balance warning from scipy for odd counts
        batch = LimeExplainer(num_samples=num_samples).explain(
            model, frame, classes, "probability", seed=SEED
        )
    assert sum(scored) == num_samples  # the row and num_samples - 1 Sobol samples
    assert samples_of(batch) == [num_samples]
    assert batch.meta["num_samples_rule"] == "fixed"
    assert np.isfinite(batch.values).all()


def test_fewer_than_two_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="num_samples"):
        LimeExplainer(num_samples=1)


def test_settled_means_the_top_drivers_lead_the_rest_by_z_standard_errors() -> None:
    coef = np.array([0.9, -0.8, 0.7, 0.6, 0.5, -0.4, 0.1])
    tight = Fit(coef, 0.0, 0.5, np.full(7, 0.01))
    assert tight.settled(top=5, z=SETTLED_Z)
    # the 5th (0.5) and 6th (|-0.4|) differ by 0.1: 0.1 / hypot(0.15, 0.15) < 0.5
    loose = Fit(coef, 0.0, 0.5, np.full(7, 0.15))
    assert not loose.settled(top=5, z=SETTLED_Z)
    assert loose.settled(top=5, z=0.4)
    # one noisy feature outside the top is enough to unsettle it
    noisy = Fit(coef, 0.0, 0.5, np.array([0.01] * 6 + [1.0]))
    assert not noisy.settled(top=5, z=SETTLED_Z)
    # few features: nothing to settle; exact ties without error: no sample can change them
    assert Fit(coef[:5], 0.0, 0.5, np.full(5, 1.0)).settled(top=5)
    assert Fit(np.array([1.0, 0.0, 0.0]), 0.0, 0.5, np.zeros(3)).settled(top=2)
