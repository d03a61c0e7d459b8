"""A registered model taken apart for explaining.

``PreparedModel`` splits a scikit-learn Pipeline into its encoders and its final estimator,
learns which encoded columns come from which RAW feature (by perturbing one raw feature at a
time and watching which columns move), and offers the model's score in either output space.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd

from explainer.types import OutputSpace
from model_store.base import LoadedModel
from model_store.types import FeatureSchema, ModelRecord

Family = Literal["xgboost", "sklearn_forest", "sklearn_boosting", "linear", "other"]

#: Probabilities are clipped this far from 0 and 1 before taking log-odds.
LOGIT_EPS = 1e-12
#: Rows of the background used to learn the encoded->raw column map.
MAPPING_ROWS = 64


class RawCodec:
    """Raw CRM rows <-> a float matrix (categories as their index in the schema), which is
    what model-agnostic explainers (LIME, shap's Exact/Permutation) perturb."""

    def __init__(self, schema: FeatureSchema) -> None:
        self.schema = schema
        self.names = schema.feature_names
        self._categories = {
            f.name: list(f.categories or ()) for f in schema.features if f.is_categorical
        }

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        columns = []
        for name in self.names:
            if name in self._categories:
                codes = pd.Categorical(frame[name].astype(str), categories=self._categories[name])
                columns.append(np.asarray(codes.codes, dtype=float))
            else:
                columns.append(frame[name].to_numpy(dtype=float))
        return np.column_stack(columns)

    def decode(self, matrix: np.ndarray) -> pd.DataFrame:
        data: dict[str, Any] = {}
        for j, name in enumerate(self.names):
            if name in self._categories:
                codes = np.clip(
                    np.rint(matrix[:, j]).astype(int), 0, len(self._categories[name]) - 1
                )
                data[name] = np.asarray(self._categories[name], dtype=object)[codes]
            else:
                data[name] = matrix[:, j]
        return pd.DataFrame(data, columns=self.names)

    @property
    def categorical_indices(self) -> list[int]:
        return [j for j, name in enumerate(self.names) if name in self._categories]


@dataclass
class PreparedModel:
    record: ModelRecord
    estimator: Any
    background: pd.DataFrame

    @classmethod
    def from_loaded(cls, loaded: LoadedModel) -> PreparedModel:
        return cls(record=loaded.record, estimator=loaded.estimator, background=loaded.background)

    @property
    def schema(self) -> FeatureSchema:
        return self.record.schema

    @property
    def classes(self) -> tuple[str, ...]:
        return self.schema.classes

    @cached_property
    def codec(self) -> RawCodec:
        return RawCodec(self.schema)

    # -- structure --------------------------------------------------------------------
    @cached_property
    def final_estimator(self) -> Any:
        steps = getattr(self.estimator, "steps", None)
        return steps[-1][1] if steps else self.estimator

    @cached_property
    def _encoder(self) -> Any | None:
        steps = getattr(self.estimator, "steps", None)
        if not steps or len(steps) == 1:
            return None
        return self.estimator[:-1]

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw rows -> the matrix the final estimator takes."""
        if self._encoder is None:
            return np.asarray(frame[self.schema.feature_names], dtype=float)
        encoded = self._encoder.transform(frame[self.schema.feature_names])
        if hasattr(encoded, "toarray"):
            encoded = encoded.toarray()
        return np.asarray(encoded, dtype=float)

    @cached_property
    def family(self) -> Family:
        final = self.final_estimator
        module = type(final).__module__
        name = type(final).__name__
        if module.startswith("xgboost"):
            return "xgboost"
        if name in {"RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier"}:
            return "sklearn_forest"
        if name == "GradientBoostingClassifier":
            return "sklearn_boosting"
        if name == "LogisticRegression":
            return "linear"
        return "other"

    @cached_property
    def column_groups(self) -> np.ndarray | None:
        """For each encoded column, the index of the raw feature it comes from; ``None`` when
        some column mixes several raw features (attributions then come from raw features)."""
        if self.family == "other":
            return None
        sample = self.background.iloc[:MAPPING_ROWS].reset_index(drop=True)
        base = self.transform(sample)
        owners = np.full(base.shape[1], -1)
        for j, spec in enumerate(self.schema.features):
            for variant in _variants(sample, spec.name, spec.categories):
                moved = np.any(~np.isclose(self.transform(variant), base), axis=0)
                if np.any(moved & (owners != -1) & (owners != j)):
                    return None
                owners[moved] = j
        if np.any(owners == -1):
            return None
        return owners

    @property
    def native_output(self) -> OutputSpace:
        """The space the model computes in, where its exact SHAP algorithm is fastest."""
        if self.family == "sklearn_forest":
            return "probability"
        if self.family in ("xgboost", "linear", "sklearn_boosting") and len(self.classes) == 2:
            return "log_odds"
        return "probability"

    @property
    def decomposable(self) -> bool:
        return self.column_groups is not None

    def sum_to_raw(self, encoded_values: np.ndarray) -> np.ndarray:
        """(n, n_encoded) contributions -> (n, n_raw) by summing each raw feature's columns."""
        groups = self.column_groups
        assert groups is not None
        out = np.zeros((encoded_values.shape[0], len(self.schema.features)))
        np.add.at(out.T, groups, encoded_values.T)
        return out

    # -- scores -----------------------------------------------------------------------
    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if self.family == "xgboost":
            # from XGBoost's margin in float64, so that log-odds and probability agree exactly
            margins = self.xgb_margins(self.transform(frame))
            return _softmax_or_sigmoid(margins)
        return np.asarray(
            self.estimator.predict_proba(frame[self.schema.feature_names]), dtype=float
        )

    def score(self, frame: pd.DataFrame, class_index: int, output: OutputSpace) -> np.ndarray:
        return to_output(self.predict_proba(frame)[:, class_index], output)

    def score_in(
        self, frame: pd.DataFrame, class_indices: np.ndarray, output: OutputSpace
    ) -> np.ndarray:
        """Each row's score for its own class, in ``output`` space."""
        if self.family == "xgboost" and output == "log_odds" and len(self.classes) == 2:
            margin = self.xgb_margins(self.transform(frame))
            return np.where(class_indices == 1, margin, -margin)
        proba = self.predict_proba(frame)
        return to_output(proba[np.arange(len(frame)), class_indices], output)

    def class_index(self, class_name: str) -> int:
        return self.classes.index(class_name)

    # -- XGBoost, called directly on its booster with one thread -------------------------
    @cached_property
    def xgb_booster(self) -> Any:
        booster = self.final_estimator.get_booster()
        booster.set_param({"nthread": 1})
        return booster

    def xgb_margins(self, encoded: np.ndarray) -> np.ndarray:
        import xgboost

        matrix = xgboost.DMatrix(encoded, nthread=1)
        return np.asarray(self.xgb_booster.predict(matrix, output_margin=True), dtype=float)

    def xgb_contributions(self, encoded: np.ndarray) -> np.ndarray:
        import xgboost

        matrix = xgboost.DMatrix(encoded, nthread=1)
        return np.asarray(self.xgb_booster.predict(matrix, pred_contribs=True), dtype=float)


def to_output(probability: np.ndarray, output: OutputSpace) -> np.ndarray:
    if output == "probability":
        return probability
    clipped = np.clip(probability, LOGIT_EPS, 1 - LOGIT_EPS)
    return np.log(clipped) - np.log1p(-clipped)


def _softmax_or_sigmoid(margins: np.ndarray) -> np.ndarray:
    if margins.ndim == 1:
        positive = 1.0 / (1.0 + np.exp(-margins))
        return np.column_stack([1.0 - positive, positive])
    shifted = np.exp(margins - margins.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _variants(
    sample: pd.DataFrame, name: str, categories: tuple[str, ...] | None
) -> list[pd.DataFrame]:
    """Copies of ``sample`` with one raw feature changed: every category, or numeric + 1."""
    if categories:
        variants = []
        for category in categories:
            changed = sample.copy()
            changed[name] = category
            variants.append(changed)
        return variants
    changed = sample.copy()
    changed[name] = changed[name].astype(float) + 1.0
    return [changed]
