"""LIME attributions: a local linear surrogate fitted around each decision.

The surrogate is fitted over the RAW features (categories declared as categorical, numeric
features discretised into quartiles of the background sample), on the score in the
requested output space. Each request brings its own seed, so the same request always gives
the same answer. ``quality.r2`` is the surrogate's weighted fit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from explainer.methods._model import PreparedModel
from explainer.methods.base import AttributionBatch
from explainer.types import OutputSpace

#: Perturbed samples drawn around each decision (lime's own default).
NUM_SAMPLES = 5000


class LimeExplainer:
    name = "lime"

    def __init__(self, *, num_samples: int = NUM_SAMPLES) -> None:
        self.num_samples = num_samples

    def explain(
        self,
        model: PreparedModel,
        frame: pd.DataFrame,
        class_indices: np.ndarray,
        output: OutputSpace,
        *,
        seed: int,
    ) -> AttributionBatch:
        n_features = len(model.schema.features)
        values = np.zeros((len(frame), n_features))
        base = np.zeros(len(frame))
        quality: list[dict[str, float | None]] = []
        codes = model.codec.encode(frame)
        for i in range(len(frame)):
            weights, intercept, r2 = self._one(model, codes[i], int(class_indices[i]), output, seed)
            values[i], base[i] = weights, intercept
            quality.append({"r2": r2})
        scores = model.score_in(frame, class_indices, output)
        for i, row_quality in enumerate(quality):
            row_quality["surrogate_error"] = float(abs(base[i] + values[i].sum() - scores[i]))
        meta = {
            "algorithm": "lime_tabular",
            "num_samples": self.num_samples,
            "discretizer": "quartile",
            "background_rows": len(model.background),
        }
        return AttributionBatch(
            values=values, base_values=base, scores=scores, quality=quality, meta=meta
        )

    def _one(
        self, model: PreparedModel, row: np.ndarray, k: int, output: OutputSpace, seed: int
    ) -> tuple[np.ndarray, float, float]:
        from lime.lime_tabular import LimeTabularExplainer

        codec = model.codec
        explainer = LimeTabularExplainer(
            codec.encode(model.background),
            mode="regression",
            feature_names=codec.names,
            categorical_features=codec.categorical_indices,
            categorical_names={
                j: list(model.schema.features[j].categories or ())
                for j in codec.categorical_indices
            },
            discretize_continuous=True,
            random_state=seed,
        )

        def score(codes: np.ndarray) -> np.ndarray:
            return model.score(codec.decode(codes), k, output)

        n_features = len(codec.names)
        result = explainer.explain_instance(
            row, score, num_features=n_features, num_samples=self.num_samples
        )
        weights = np.zeros(n_features)
        for j, weight in result.local_exp[1]:
            weights[j] = weight
        return weights, float(result.intercept[1]), float(result.score)
