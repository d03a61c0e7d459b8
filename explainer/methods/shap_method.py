"""SHAP attributions, exact where the algorithm allows it.

Which algorithm explains a model (``plan_for``):

=================  ==============  ===============================================================
model family       output          algorithm
=================  ==============  ===============================================================
XGBoost, binary    log_odds        path-dependent TreeSHAP: XGBoost's own ``pred_contribs``
XGBoost, binary    probability     interventional TreeSHAP against the background sample
sklearn forests    probability     interventional TreeSHAP (their raw output is a probability)
sklearn boosting   log_odds        path-dependent TreeSHAP (raw output is the log-odds)
sklearn boosting   probability     interventional TreeSHAP, model_output="probability"
linear, binary     log_odds        interventional linear SHAP (exact for a linear margin)
anything else      either          exact Shapley values over the raw features (every
                                   coalition, as shap's ExactExplainer computes them, <= 10
                                   features) or shap's antithetic permutations
=================  ==============  ===============================================================

Attributions over encoded columns are summed back to the raw feature each column came from.
In every case ``base_value + sum(contributions)`` equals the explained score.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd

from explainer.methods._model import (
    GPU_MIN_ROWS,
    ContribAlgorithm,
    FastInterventional,
    PreparedModel,
    cuda_available,
)
from explainer.methods.base import AttributionBatch, additivity_errors
from explainer.types import OutputSpace

Algorithm = Literal[
    "xgb_pred_contribs", "tree_interventional", "tree_path_dependent", "linear", "model_agnostic"
]

#: (values, base values, per-row quality extras) as one algorithm returns them.
_Raw = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]

#: Background rows the interventional algorithms integrate over.
INTERVENTIONAL_ROWS = 100
#: Background rows for the model-agnostic fallback (it calls the model 2^M times per row).
AGNOSTIC_ROWS = 40
#: Up to this many raw features, the fallback enumerates every coalition (exact Shapley).
EXACT_MAX_FEATURES = 10


def plan_for(model: PreparedModel, output: OutputSpace) -> Algorithm:
    binary = len(model.classes) == 2
    if not model.decomposable:
        return "model_agnostic"
    family = model.family
    if family == "xgboost" and binary:
        return "xgb_pred_contribs" if output == "log_odds" else "tree_interventional"
    if family == "sklearn_forest" and output == "probability":
        return "tree_interventional"
    if family == "sklearn_boosting" and binary:
        return "tree_path_dependent" if output == "log_odds" else "tree_interventional"
    if family == "linear" and binary and output == "log_odds":
        return "linear"
    return "model_agnostic"


class ShapExplainer:
    """SHAP attributions. ``contributions`` picks how XGBoost's path-dependent TreeSHAP is
    computed: ``"xgboost"`` (its own ``pred_contribs``, the API's default) or ``"fast"``
    (the same values from per-leaf tables, several times faster; used by batch runs), on
    ``threads`` threads. ``interventional="fast"`` computes XGBoost's probability-space
    interventional TreeSHAP with :class:`FastInterventional` (the values of shap's
    TreeExplainer, checked against it when built) instead of shap's tree walk."""

    name = "shap"

    def __init__(
        self,
        *,
        contributions: ContribAlgorithm = "xgboost",
        interventional: Literal["shap", "fast"] = "fast",
        threads: int = 1,
    ) -> None:
        self.contributions: ContribAlgorithm = contributions
        self.interventional = interventional
        self.threads = threads
        self._cache: dict[tuple[str, int, str, str], Any] = {}
        self._lock = threading.Lock()

    def explain(
        self,
        model: PreparedModel,
        frame: pd.DataFrame,
        class_indices: np.ndarray,
        output: OutputSpace,
        *,
        seed: int,
    ) -> AttributionBatch:
        algorithm = plan_for(model, output)
        values = np.zeros((len(frame), len(model.schema.features)))
        base = np.zeros(len(frame))
        extras: dict[str, np.ndarray] = {}
        for k in np.unique(class_indices):
            rows = np.flatnonzero(class_indices == k)
            part = frame if len(rows) == len(frame) else frame.iloc[rows]
            result = self._run(algorithm, model, part, int(k), output, seed)
            values[rows], base[rows] = result[0], result[1]
            for name, per_row in result[2].items():
                extras.setdefault(name, np.zeros(len(frame)))[rows] = per_row
        scores = model.score_in(frame, class_indices, output)
        errors = additivity_errors(values, base, scores)
        quality: list[dict[str, float | None]] = []
        for i, e in enumerate(errors):
            row: dict[str, float | None] = {"additivity_error": float(e)}
            row.update({n: float(v[i]) for n, v in extras.items()})
            quality.append(row)
        meta: dict[str, Any] = {
            "algorithm": algorithm,
            "background_rows": _background_rows(algorithm, model),
        }
        if algorithm == "xgb_pred_contribs":
            meta["treeshap"] = self._treeshap(model, len(frame))
        elif algorithm == "tree_interventional":
            key = (model.record.name, model.record.version, model.record.sha256)
            fast = self._cache.get((*key, "tree-interventional-fast"))
            meta["treeshap"] = "fast-interventional" if fast is not None else "shap"
        return AttributionBatch(
            values=values, base_values=base, scores=scores, quality=quality, meta=meta
        )

    def row_independent(self, model: PreparedModel, output: OutputSpace) -> bool:
        """Every exact algorithm explains each row on its own; the fallback samples
        coalitions with the request's seed."""
        return plan_for(model, output) != "model_agnostic"

    def _run(
        self,
        algorithm: Algorithm,
        model: PreparedModel,
        frame: pd.DataFrame,
        k: int,
        output: OutputSpace,
        seed: int,
    ) -> _Raw:
        """Raw values (n, M), base values (n,) and per-row extras explaining class ``k``."""
        if algorithm == "model_agnostic":
            return self._agnostic(model, frame, k, output, seed)
        if algorithm == "xgb_pred_contribs":
            values, base, extras = self._pred_contribs(model, frame)
        elif algorithm == "linear":
            values, base, extras = self._linear(model, frame)
        else:
            perturbation = "interventional" if algorithm == "tree_interventional" else algorithm
            values, base, extras = self._tree(model, frame, perturbation)
        if values.ndim == 3:  # one output per class
            return values[:, :, k], base[:, k], extras
        if k == 1:
            return values, base, extras
        # a single output explains the positive class; the negative one is its mirror image
        return -values, (1.0 - base) if output == "probability" else -base, extras

    # -- algorithms: (values, base) for the positive class, or with a trailing class axis ----
    def _treeshap(self, model: PreparedModel, rows: int) -> str:
        """Which implementation computed ``xgb_pred_contribs`` (recorded in the meta)."""
        if cuda_available() and rows >= GPU_MIN_ROWS:
            return "xgboost-cuda"
        if self.contributions == "fast" and model.fast_treeshap is not None:
            return "fast-tables"
        return "xgboost"

    def _pred_contribs(self, model: PreparedModel, frame: pd.DataFrame) -> _Raw:
        encoded = model.transform(frame)
        contribs = model.xgb_contributions(
            encoded, algorithm=self.contributions, threads=self.threads
        )
        values = model.sum_to_raw(contribs[:, :-1])
        # XGBoost sums contributions in float32: its bias column misses the margin by up to
        # ~1e-5. The contributions stay exactly XGBoost's; the base value takes the residual.
        base = model.xgb_margins(encoded) - values.sum(axis=1)
        return values, base, {"float32_residual": np.abs(base - contribs[:, -1])}

    def _tree(self, model: PreparedModel, frame: pd.DataFrame, perturbation: str) -> _Raw:
        explainer = self._cached(
            model, f"tree-{perturbation}", lambda: _tree_explainer(model, perturbation)
        )
        fast = None
        if perturbation == "interventional" and self.interventional == "fast":
            fast = self._cached(
                model, "tree-interventional-fast", lambda: _fast_interventional(model, explainer)
            )
        if fast is not None:
            encoded = fast.values(model.transform(frame))
        else:
            encoded = np.asarray(
                explainer.shap_values(model.transform(frame), check_additivity=False),
                dtype=float,
            )
        expected = np.atleast_1d(np.asarray(explainer.expected_value, dtype=float))
        if encoded.ndim == 3:
            raw = np.stack([model.sum_to_raw(encoded[:, :, c]) for c in range(encoded.shape[2])], 2)
            return raw, np.tile(expected, (len(frame), 1)), {}
        return model.sum_to_raw(encoded), np.full(len(frame), expected[0]), {}

    def _linear(self, model: PreparedModel, frame: pd.DataFrame) -> _Raw:
        explainer = self._cached(model, "linear", lambda: _linear_explainer(model))
        encoded = np.asarray(explainer.shap_values(model.transform(frame)), dtype=float)
        base = float(np.atleast_1d(explainer.expected_value)[0])
        return model.sum_to_raw(encoded), np.full(len(frame), base), {}

    def _agnostic(
        self, model: PreparedModel, frame: pd.DataFrame, k: int, output: OutputSpace, seed: int
    ) -> _Raw:
        import shap

        codec = model.codec
        background = codec.encode(model.background.iloc[:AGNOSTIC_ROWS])

        def score(codes: np.ndarray) -> np.ndarray:
            return model.score_codes(codes, k, output)

        rows = codec.encode(frame)
        if len(codec.names) <= EXACT_MAX_FEATURES:
            return (*exact_shapley(score, rows, background), {})
        masker = shap.maskers.Independent(background, max_samples=AGNOSTIC_ROWS)
        permutation = shap.explainers.PermutationExplainer(score, masker, seed=seed)
        result = permutation(rows, max_evals=20 * len(codec.names) + 1, silent=True)
        values = np.asarray(result.values, dtype=float)
        return values, np.asarray(result.base_values, dtype=float), {}

    def _cached(self, model: PreparedModel, kind: str, build: Callable[[], Any]) -> Any:
        key = (model.record.name, model.record.version, model.record.sha256, kind)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]


def exact_shapley(
    score: Callable[[np.ndarray], np.ndarray], rows: np.ndarray, background: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (interventional) Shapley values of ``score`` at each row against ``background``:
    every coalition S of features is scored with the row's values on S and each background
    row's elsewhere, v(S) is their mean, and phi_i = sum_S |S|!(M-|S|-1)!/M! (v(S+i) - v(S)).
    The values of shap's ExactExplainer with an Independent masker, without its per-process
    JIT compilation; all 2^M * len(background) rows of one explained row go through the model
    in one call. Returns (values (n, M), base values (n,)), base = v(empty set)."""
    n, m = rows.shape
    coalitions = (np.arange(1 << m)[:, None] >> np.arange(m)[None, :]) & 1  # (2^M, M)
    sizes = coalitions.sum(axis=1)
    weight = np.array(
        [math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) for s in range(m)]
    )
    values = np.zeros((n, m))
    base = np.zeros(n)
    inside = coalitions.astype(bool)[:, None, :]
    for r in range(n):
        mixed = np.where(inside, rows[r][None, None, :], background[None, :, :])
        v = score(mixed.reshape(-1, m)).reshape(len(coalitions), len(background)).mean(axis=1)
        base[r] = v[0]
        for i in range(m):
            without = coalitions[:, i] == 0
            gain = v[np.flatnonzero(without) + (1 << i)] - v[without]
            values[r, i] = float(np.sum(weight[sizes[without]] * gain))
    return values, base


def import_shap_without_plots() -> None:
    """Import shap without its plotting modules, for a process that draws no shap plot (the
    server). Whenever matplotlib is installed, shap imports ``matplotlib.pyplot`` for its plots,
    about half of shap's import time; with matplotlib unavailable while shap is imported, shap
    falls back to stubs that raise on use (its own fallback). matplotlib stays importable
    afterwards (``explainer.plots`` draws with it). A no-op once shap is imported."""
    import sys

    if "shap" in sys.modules:
        return
    blocked = "matplotlib" not in sys.modules
    if blocked:
        sys.modules["matplotlib"] = None  # type: ignore[assignment]  # ImportError on import
    try:
        import shap  # noqa: F401
    finally:
        if blocked and sys.modules.get("matplotlib", ...) is None:
            del sys.modules["matplotlib"]


def _tree_explainer(model: PreparedModel, perturbation: str) -> Any:
    import shap

    final = model.final_estimator
    if perturbation == "tree_path_dependent":
        return shap.TreeExplainer(final, feature_perturbation="tree_path_dependent")
    background = model.transform(model.background.iloc[:INTERVENTIONAL_ROWS])
    output = "raw" if model.family == "sklearn_forest" else "probability"
    return shap.TreeExplainer(
        final, data=background, feature_perturbation="interventional", model_output=output
    )


#: The fast interventional algorithm is used only if it matches shap's on these rows this well.
FAST_CHECK_ROWS = 4
FAST_CHECK_TOLERANCE = 1e-7


def _fast_interventional(model: PreparedModel, explainer: Any) -> FastInterventional | None:
    """Exact interventional TreeSHAP for an XGBoost binary model in probability space, or
    ``None`` where it does not apply (then shap's own algorithm runs)."""
    tables = model.fast_treeshap
    ensemble = explainer.model
    if (
        tables is None
        or len(model.classes) != 2
        or ensemble.model_output != "probability"
        or ensemble.num_outputs != 1
        or ensemble.tree_limit not in (None, len(tables.arrays[0]) - 1)
    ):
        return None
    background = np.asarray(explainer.data, dtype=float)
    base_offset = float(np.ravel(ensemble.base_offset)[0])
    fast = FastInterventional.build(tables, background, base_offset)
    rows = background[:FAST_CHECK_ROWS]
    expected = np.asarray(explainer.shap_values(rows, check_additivity=False), dtype=float)
    if expected.shape != (len(rows), tables.n_columns):
        return None
    if not np.all(np.abs(fast.values(rows) - expected) <= FAST_CHECK_TOLERANCE):
        return None
    return fast


def _linear_explainer(model: PreparedModel) -> Any:
    import shap

    background = model.transform(model.background.iloc[:INTERVENTIONAL_ROWS])
    return shap.LinearExplainer(model.final_estimator, shap.maskers.Independent(background))


def _background_rows(algorithm: Algorithm, model: PreparedModel) -> int | None:
    if algorithm in ("tree_interventional", "linear"):
        return min(INTERVENTIONAL_ROWS, len(model.background))
    if algorithm == "model_agnostic":
        return min(AGNOSTIC_ROWS, len(model.background))
    return None
