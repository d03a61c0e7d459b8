"""The exact fast paths batch runs use: the encoder replayed with numpy, TreeSHAP from per-leaf
tables, interventional TreeSHAP by reference groups; and the GPU detection's CPU fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost
from sklearn.base import clone

from explainer.methods import PreparedModel, _model
from explainer.service import ExplainerService
from explainer.validation import validate_instances
from tests.conftest import DEMO_NAMES, customers


@pytest.mark.parametrize("name", DEMO_NAMES)
def test_the_numpy_encoder_reproduces_scikit_learn_bit_for_bit(
    demo_service: ExplainerService, name: str
) -> None:
    model = demo_service.model(name)
    assert model.fast_encoder is not None
    frame = customers(name, 300, seed=12)[model.schema.feature_names]
    expected = model._sklearn_transform(frame)
    assert np.array_equal(model.transform(frame), expected)
    assert np.array_equal(model.transform(frame.iloc[[7]]), expected[[7]])
    codes = model.codec.encode(frame)
    assert np.array_equal(model.fast_encoder.transform_codes(codes, model.schema), expected)


@pytest.mark.parametrize("name", DEMO_NAMES)
@pytest.mark.parametrize("method", ["shap", "lime"])
def test_a_one_row_request_gets_the_seed_of_its_rows(
    demo_service: ExplainerService, name: str, method: str
) -> None:
    """The seed is defined on the rows as ``to_numpy(dtype=object)`` gives them back (an int
    stays an int), so that a request, a batch row and the quality check's second method agree
    on it, and a later version computes the seed an archived request got."""
    from explainer.service import Decision, _seed_of_rows

    model = demo_service.model(name)
    names = model.schema.feature_names
    row = customers(name, 1, seed=11)[names].iloc[0]
    features = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    (explanation,) = demo_service.explain(name, [Decision(features)], method=method)  # type: ignore[arg-type]
    frame = pd.DataFrame(validate_instances(model.schema, [features]), columns=names)
    classes = np.array([model.class_index(explanation.explained_class)])
    rows = frame.to_numpy(dtype=object)
    expected = _seed_of_rows(model.record, rows, method, explanation.output, classes)
    assert explanation.meta["seed"] == expected


def test_rows_are_read_as_python_objects_as_pandas_converts_them() -> None:
    frames = [
        pd.DataFrame({"plan": ["gold"], "tenure": [3], "charges": [float("nan")]}),
        pd.DataFrame({"tenure": [3], "charges": [1.5]}),  # an int beside a float stays an int
        pd.DataFrame({"flag": [True], "charges": [1.5]}),
        pd.DataFrame({"tenure": pd.array([3], dtype="Int64"), "charges": [float("nan")]}),
    ]
    for frame in frames:
        got, expected = _model.object_rows(frame), frame.to_numpy(dtype=object)
        assert [type(v) for v in got[0]] == [type(v) for v in expected[0]]
        assert [str(v) for v in got[0]] == [str(v) for v in expected[0]]


def test_an_unknown_category_falls_back_to_scikit_learn(demo_service: ExplainerService) -> None:
    model = demo_service.model("churn")
    frame = customers("churn", 3, seed=1)[model.schema.feature_names].copy()
    frame.loc[1, "contract"] = "Lifetime"  # the encoder ignores unknown categories: all zeros
    assert np.array_equal(model.transform(frame), model._sklearn_transform(frame))


def churn_encoded(service: ExplainerService, n: int) -> tuple[PreparedModel, np.ndarray]:
    model = service.model("churn")
    return model, model.transform(customers("churn", n, seed=21)[model.schema.feature_names])


def test_fast_treeshap_agrees_with_xgboost_pred_contribs(demo_service: ExplainerService) -> None:
    model, encoded = churn_encoded(demo_service, 400)
    fast = model.xgb_contributions(encoded, algorithm="fast", threads=2)
    native = model.final_estimator.get_booster().predict(
        xgboost.DMatrix(encoded), pred_contribs=True
    )
    # XGBoost sums its trees in float32: agreement is to its rounding, raw features included
    assert np.abs(fast[:, :-1] - native[:, :-1]).max() < 2e-6
    raw = model.sum_to_raw(fast[:, :-1]) - model.sum_to_raw(native[:, :-1].astype(float))
    assert np.abs(raw).max() < 2e-6
    assert np.abs(fast[:, -1] - native[:, -1]).max() < 2e-6
    margins = model.xgb_margins(encoded)
    assert np.abs(fast.sum(axis=1) - margins).max() < 1e-4


def test_fast_treeshap_is_exact_treeshap_in_double_precision(
    demo_service: ExplainerService,
) -> None:
    """Against shap's own C++ TreeSHAP in float64: both are within XGBoost's float32 noise."""
    import shap

    model, encoded = churn_encoded(demo_service, 100)
    explainer = shap.TreeExplainer(
        model.final_estimator, feature_perturbation="tree_path_dependent"
    )
    explainer.model.model_type = "internal"  # shap's C++ algorithm, not XGBoost's
    reference = explainer.shap_values(encoded, check_additivity=False)
    fast = model.xgb_contributions(encoded, algorithm="fast")
    assert np.abs(fast[:, :-1] - reference).max() < 5e-6


def test_fast_interventional_treeshap_equals_shaps(demo_service: ExplainerService) -> None:
    from explainer.methods.shap_method import _fast_interventional, _tree_explainer

    model, encoded = churn_encoded(demo_service, 30)
    explainer = _tree_explainer(model, "interventional")
    reference = explainer.shap_values(encoded, check_additivity=False)
    fast = _fast_interventional(model, explainer)
    assert fast is not None
    assert np.abs(fast.values(encoded) - reference).max() < 1e-7


def test_without_a_visible_gpu_the_cpu_computes_contributions(
    demo_service: ExplainerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    _model.cuda_available.cache_clear()
    try:
        assert _model.cuda_available() is False
        model, encoded = churn_encoded(demo_service, 3)
        out = model.xgb_contributions(encoded)
        assert out.shape == (3, encoded.shape[1] + 1)
    finally:
        _model.cuda_available.cache_clear()


class _GpuBooster:
    """Stands in for XGBoost's booster on a GPU: records what it was asked, answers with the
    CPU booster's values (no GPU is lent to these tests)."""

    def __init__(self, cpu: xgboost.Booster) -> None:
        self.cpu = cpu
        self.rows: list[int] = []

    def predict(self, matrix: xgboost.DMatrix, *, pred_contribs: bool) -> np.ndarray:
        self.rows.append(matrix.num_row())
        return np.asarray(self.cpu.predict(matrix, pred_contribs=pred_contribs))


def test_with_a_visible_gpu_large_batches_use_it_and_small_ones_stay_on_the_cpu(
    demo_service: ExplainerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, encoded = churn_encoded(demo_service, _model.GPU_MIN_ROWS)
    gpu = _GpuBooster(model.xgb_booster)
    monkeypatch.setattr(_model, "cuda_available", lambda: True)
    monkeypatch.setitem(model.__dict__, "_xgb_cuda_booster", gpu)

    large = model.xgb_contributions(encoded, algorithm="fast")  # GPU wins over the fast tables
    small = model.xgb_contributions(encoded[:3])

    assert gpu.rows == [_model.GPU_MIN_ROWS]
    cpu = model.xgb_booster.predict(xgboost.DMatrix(encoded), pred_contribs=True)
    assert np.array_equal(large, cpu) and np.array_equal(small, cpu[:3])


def test_exact_shapley_matches_the_permutation_definition() -> None:
    import itertools

    from explainer.methods.shap_method import exact_shapley

    rng = np.random.default_rng(3)
    rows, background = rng.normal(size=(2, 4)), rng.normal(size=(6, 4))

    def score(x: np.ndarray) -> np.ndarray:  # interactions, a threshold and a product
        return np.asarray(x[:, 0] * x[:, 1] + (x[:, 2] > 0.1) * 2 + np.sin(x[:, 3]) * x[:, 0])

    values, base = exact_shapley(score, rows, background)
    for r, row in enumerate(rows):
        expected = np.zeros(4)
        for order in itertools.permutations(range(4)):
            current = background.copy()
            before = score(current).mean()
            for i in order:
                current[:, i] = row[i]
                after = score(current).mean()
                expected[i] += (after - before) / 24
                before = after
        np.testing.assert_allclose(values[r], expected, atol=1e-12)
        assert base[r] == pytest.approx(score(background).mean())
        assert base[r] + values[r].sum() == pytest.approx(float(score(row[None])[0]))


@pytest.mark.parametrize("name", DEMO_NAMES)
def test_a_request_encodes_its_rows_once(
    demo_service: ExplainerService, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The prediction, the attributions, the score and the quality checks of one request share
    one encoding of its rows."""
    from explainer.service import Decision

    model = demo_service.model(name)
    encoded: list[int] = []
    original = PreparedModel._transform

    def counting(self: PreparedModel, frame: pd.DataFrame) -> np.ndarray:
        encoded.append(len(frame))
        return original(self, frame)

    read: list[int] = []
    original_read = _model._object_rows

    def counting_reads(frame: pd.DataFrame) -> np.ndarray:
        read.append(len(frame))
        return original_read(frame)

    row = customers(name, 1, seed=5)[model.schema.feature_names].iloc[0]
    features = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    monkeypatch.setattr(PreparedModel, "_transform", counting)
    monkeypatch.setattr(_model, "_object_rows", counting_reads)
    for output in ("log_odds", "probability"):
        demo_service.explain(name, [Decision(features)], output=output)  # type: ignore[arg-type]
        encoded.clear()  # the first request also built the explainer from the background
        read.clear()
        demo_service.explain(name, [Decision(features)], output=output)  # type: ignore[arg-type]
        assert encoded == [1], output
        assert read == [1], output  # its values are read out of pandas once too


def test_a_remembered_encoding_is_read_only_and_only_for_that_frame(
    demo_service: ExplainerService,
) -> None:
    model = demo_service.model("churn")
    frame = customers("churn", 3, seed=6)[model.schema.feature_names]
    other = frame.copy()
    with model.encoding_once(frame):
        first = model.transform(frame)
        assert model.transform(frame) is first
        assert not first.flags.writeable
        with pytest.raises(ValueError):
            first[0, 0] = 1.0
        assert model.transform(other) is not first  # a look-alike frame is encoded anew
        assert model.transform(other).flags.writeable
    assert model.transform(frame) is not first  # outside the block nothing is remembered
    assert np.array_equal(model.transform(frame), first)


def test_remembered_object_rows_are_read_only_and_only_for_that_frame(
    demo_service: ExplainerService,
) -> None:
    model = demo_service.model("churn")
    frame = customers("churn", 1, seed=6)[model.schema.feature_names]
    with model.encoding_once(frame):
        first = _model.object_rows(frame)
        assert _model.object_rows(frame) is first
        assert not first.flags.writeable
        assert _model.object_rows(frame.copy()) is not first
    assert _model.object_rows(frame) is not first
    assert np.array_equal(_model.object_rows(frame), frame.to_numpy(dtype=object))


#: Rows per request of a frame holding several requests.
REQUEST_ROWS = [1, 2, 1, 3, 1, 2]


def lead_model_with_data_frames_between_steps(model: PreparedModel) -> PreparedModel:
    """The lead model refitted with pandas output: its final step then knows feature names, so
    it is scored through the whole Pipeline instead of on the shared encoding."""
    train = customers("lead_score", 2000, seed=5)
    names = model.schema.feature_names
    estimator = clone(model.estimator).set_output(transform="pandas")
    estimator.fit(train[names], train["converted"])
    refitted = PreparedModel(record=model.record, estimator=estimator, background=model.background)
    assert not refitted._final_takes_encoded
    return refitted


@pytest.mark.parametrize("name", [*DEMO_NAMES, "lead_score, pandas between steps"])
def test_each_request_of_a_frame_is_scored_bit_for_bit_as_if_it_came_alone(
    demo_service: ExplainerService, name: str
) -> None:
    """A linear model's scores are BLAS dot products, whose last bit can depend on how many
    rows are multiplied together (on some CPUs' kernels, not on others); a frame of several
    requests is scored request by request."""
    model = demo_service.model(name.split(",")[0])
    if "pandas" in name:
        model = lead_model_with_data_frames_between_steps(model)
    frame = customers(model.record.name, sum(REQUEST_ROWS), seed=12)[model.schema.feature_names]
    ends = np.cumsum(REQUEST_ROWS)
    alone = np.concatenate(
        [
            model.predict_proba(frame.iloc[end - n : end].reset_index(drop=True))
            for end, n in zip(ends, REQUEST_ROWS, strict=True)
        ]
    )
    with model.encoding_once(frame, REQUEST_ROWS):
        scored = model.predict_proba(frame)
        assert model.predict_proba(frame) is scored and not scored.flags.writeable
    assert np.array_equal(scored, alone)


def test_the_requests_of_a_remembered_frame_add_up_to_it_and_an_inner_block_keeps_them(
    demo_service: ExplainerService,
) -> None:
    model = demo_service.model("lead_score")
    frame = customers("lead_score", 3, seed=6)[model.schema.feature_names]
    with pytest.raises(ValueError, match="do not split"), model.encoding_once(frame, [1, 1]):
        pass
    with (
        model.encoding_once(frame, [1, 2]),
        pytest.raises(ValueError, match="other requests"),
        model.encoding_once(frame, [2, 1]),
    ):
        pass
    with model.encoding_once(frame, [1, 2]):
        split = model.predict_proba(frame)
        with model.encoding_once(frame):  # no split of its own: the enclosing block's
            assert model.predict_proba(frame) is split


def test_a_frame_in_another_column_order_is_explained_alike(demo_service: ExplainerService) -> None:
    """Requests build their frame in schema order; a batch caller's frame may come in any."""
    model = demo_service.model("churn")
    frame = customers("churn", 3, seed=10)[model.schema.feature_names]
    ids = ["a", "b", "c"]
    ordered = demo_service.explain_frame(model, frame, ids)
    reversed_ = demo_service.explain_frame(model, frame[frame.columns[::-1]], ids)
    for mine, theirs in zip(ordered, reversed_, strict=True):
        assert [a.feature for a in mine.attributions] == [a.feature for a in theirs.attributions]
        assert [a.value for a in mine.attributions] == [a.value for a in theirs.attributions]
        np.testing.assert_allclose(
            [a.contribution for a in mine.attributions],
            [a.contribution for a in theirs.attributions],
            atol=1e-12,
        )


def test_the_remembered_encoding_ends_with_its_block_even_on_an_error(
    demo_service: ExplainerService,
) -> None:
    model = demo_service.model("churn")
    frame = customers("churn", 2, seed=8)[model.schema.feature_names]
    with pytest.raises(RuntimeError), model.encoding_once(frame):
        remembered = model.transform(frame)
        raise RuntimeError("the request failed")
    assert model.transform(frame) is not remembered


def test_another_thread_does_not_see_a_remembered_encoding(
    demo_service: ExplainerService,
) -> None:
    """Each request thread of a worker has its own memory of what it encoded."""
    import threading

    model = demo_service.model("churn")
    frame = customers("churn", 2, seed=9)[model.schema.feature_names]
    seen: list[np.ndarray] = []
    with model.encoding_once(frame):
        mine = model.transform(frame)
        other = threading.Thread(target=lambda: seen.append(model.transform(frame)))
        other.start()
        other.join()
    assert seen[0] is not mine
    assert np.array_equal(seen[0], mine)
