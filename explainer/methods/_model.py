"""A registered model taken apart for explaining.

``PreparedModel`` splits a scikit-learn Pipeline into its encoders and its final estimator,
learns which encoded columns come from which RAW feature (by perturbing one raw feature at a
time and watching which columns move), and offers the model's score in either output space.

Speed without approximation:

* a ColumnTransformer of one-hot encoders, standard scalers and passthrough columns is replayed
  with numpy (``FastEncoder``); it is used only after it reproduced scikit-learn's output bit for
  bit on the background sample, and any row it cannot encode goes through scikit-learn;
* one request encodes and scores its rows once (``PreparedModel.encoding_once``): the
  prediction, the attributions, the score and the quality checks share the read-only matrix
  and probabilities; a frame holding several requests is scored request by request where the
  model's arithmetic depends on how many rows come together (a linear model's BLAS sums);
* XGBoost margins come from ``inplace_predict`` (no DMatrix; bit-identical), remembered for the
  last few inputs so one request never scores the same rows twice;
* ``xgb_contributions(..., algorithm="fast")`` is exact path-dependent TreeSHAP computed from
  per-leaf tables (:class:`FastTreeShap`) instead of XGBoost's recursion; per tree it is exact in
  float64 and the trees are summed in float32 in XGBoost's order, so it agrees with XGBoost's own
  ``pred_contribs`` to its float32 rounding (about 1e-6). ``algorithm="xgboost"`` (the default)
  is XGBoost's own ``pred_contribs``, on the GPU where one is visible and the batch is large.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from explainer.types import OutputSpace
from model_store.base import LoadedModel
from model_store.types import FeatureSchema, ModelRecord

Family = Literal["xgboost", "sklearn_forest", "sklearn_boosting", "linear", "other"]
#: How path-dependent TreeSHAP of an XGBoost model is computed (see the module docstring).
ContribAlgorithm = Literal["xgboost", "fast"]

#: Probabilities are clipped this far from 0 and 1 before taking log-odds.
LOGIT_EPS = 1e-12
#: Rows of the background used to learn the encoded->raw column map.
MAPPING_ROWS = 64
#: Up to this many rows, categories are looked up one by one (cheaper than pandas for one row).
SMALL_FRAME = 32
#: XGBoost margins remembered per model (one request scores its rows up to three times).
MARGIN_CACHE = 8
#: On a GPU, XGBoost's pred_contribs is used from this many rows on (below, the CPU is faster).
GPU_MIN_ROWS = 1024


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
class _Encoding:
    """The frame ``PreparedModel.encoding_once`` remembers, and what was read from it."""

    model: PreparedModel
    frame: pd.DataFrame
    #: How many rows each request in the frame has, in order.
    request_rows: tuple[int, ...]
    encoded: np.ndarray | None = None
    objects: np.ndarray | None = None
    proba: np.ndarray | None = None


_ENCODING: ContextVar[_Encoding | None] = ContextVar("crm_explain_encoding", default=None)


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

    @cached_property
    def fast_encoder(self) -> FastEncoder | None:
        """The encoder replayed with numpy, or ``None`` where it cannot be (used as is then)."""
        if self._encoder is None:
            return None
        return FastEncoder.compile(self._encoder, self.background.iloc[:MAPPING_ROWS], self.schema)

    @contextmanager
    def encoding_once(
        self, frame: pd.DataFrame, request_rows: Sequence[int] | None = None
    ) -> Iterator[None]:
        """Within the block, ``transform``, ``predict_proba`` and ``object_rows`` of this very
        frame object are computed once and shared (read-only) by the prediction, the
        attributions, the seed and the score. ``request_rows`` says how many rows each request
        in the frame has: each request's rows are scored as they would be alone. By default
        the frame is one request's, or split as an enclosing block for it says. The caller
        promises not to change the frame inside the block."""
        rows = tuple(request_rows) if request_rows is not None else (len(frame),)
        if sum(rows) != len(frame):
            raise ValueError(f"requests of {list(rows)} rows do not split {len(frame)} rows")
        current = _ENCODING.get()
        if current is not None and current.model is self and current.frame is frame:
            if request_rows is not None and current.request_rows != rows:
                raise ValueError("an enclosing block splits this frame into other requests")
            yield  # an enclosing block already remembers this frame
            return
        token = _ENCODING.set(_Encoding(self, frame, rows))
        try:
            yield
        finally:
            _ENCODING.reset(token)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw rows -> the matrix the final estimator takes."""
        remembered = _ENCODING.get()
        if remembered is None or remembered.model is not self or remembered.frame is not frame:
            return self._transform(frame)
        if remembered.encoded is None:
            encoded = self._transform(frame)
            encoded.setflags(write=False)
            remembered.encoded = encoded
        return remembered.encoded

    def _transform(self, frame: pd.DataFrame) -> np.ndarray:
        if self._encoder is None:
            return np.asarray(frame[self.schema.feature_names], dtype=float)
        fast = self.fast_encoder
        if fast is not None:
            encoded = fast.transform(frame)
            if encoded is not None:
                return encoded
        return self._sklearn_transform(frame)

    def _sklearn_transform(self, frame: pd.DataFrame) -> np.ndarray:
        assert self._encoder is not None
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
        owners_of: list[int] = []
        frames = [sample]
        for j, spec in enumerate(self.schema.features):
            for variant in _variants(sample, spec.name, spec.categories):
                owners_of.append(j)
                frames.append(variant)
        # one transform over every variant (encoders work row by row), split back per variant
        encoded = self.transform(pd.concat(frames, ignore_index=True))
        parts = encoded.reshape(len(frames), len(sample), encoded.shape[1])
        base = parts[0]
        owners = np.full(base.shape[1], -1)
        for j, changed in zip(owners_of, parts[1:], strict=True):
            moved = np.any(~np.isclose(changed, base), axis=0)
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
        """(n, n_encoded) contributions -> (n, n_raw) by summing each raw feature's columns
        (column by column, in the encoded order)."""
        groups = self.column_groups
        assert groups is not None
        out = np.zeros((encoded_values.shape[0], len(self.schema.features)))
        for column, owner in enumerate(groups):
            out[:, owner] += encoded_values[:, column]
        return out

    # -- scores -----------------------------------------------------------------------
    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Class probabilities (n, classes); within ``encoding_once`` of this frame, computed
        once, request by request, and read-only."""
        remembered = _ENCODING.get()
        if remembered is None or remembered.model is not self or remembered.frame is not frame:
            return self._predict_proba(frame)
        if remembered.proba is None:
            # a view: an estimator may hand back an array of its own, not ours to freeze
            proba = self._predict_proba_by_request(frame, remembered.request_rows).view()
            proba.setflags(write=False)
            remembered.proba = proba
        return remembered.proba

    @property
    def scores_row_by_row(self) -> bool:
        """Whether a row's score takes the same operations whatever rows are scored with it:
        a tree ensemble sums its trees' leaves row by row, while a linear model's dot products
        go through BLAS, whose order of summation (and so the last bit) depends on how many
        rows are multiplied together."""
        return self.family in ("xgboost", "sklearn_forest", "sklearn_boosting")

    def _predict_proba_by_request(
        self, frame: pd.DataFrame, request_rows: tuple[int, ...]
    ) -> np.ndarray:
        """Each request's probabilities, bit for bit what they would be if it came alone."""
        if len(request_rows) == 1 or self.scores_row_by_row:
            return self._predict_proba(frame)
        requests = row_slices(request_rows)
        if self._final_takes_encoded:
            # each request's rows copied out, so BLAS sees what it would see for them alone
            encoded = self.transform(frame)
            return np.concatenate([self._proba_of_encoded(encoded[s].copy()) for s in requests])
        return np.concatenate([self._predict_proba(frame.iloc[s]) for s in requests])

    def _predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if self.family == "xgboost":
            # from XGBoost's margin in float64, so that log-odds and probability agree exactly
            margins = self.xgb_margins(self.transform(frame))
            return _softmax_or_sigmoid(margins)
        if self._final_takes_encoded:  # what the Pipeline computes, on the shared encoding
            return self._proba_of_encoded(self.transform(frame))
        return np.asarray(
            self.estimator.predict_proba(frame[self.schema.feature_names]), dtype=float
        )

    def score(self, frame: pd.DataFrame, class_index: int, output: OutputSpace) -> np.ndarray:
        return to_output(self.predict_proba(frame)[:, class_index], output)

    def score_codes(self, codes: np.ndarray, class_index: int, output: OutputSpace) -> np.ndarray:
        """``score(codec.decode(codes), ...)``: the score of rows given as RawCodec codes (what
        LIME and the model-agnostic SHAP fallback perturb), straight into the encoder where it
        is replayed with numpy (no DataFrame is built)."""
        fast = self.fast_encoder
        if fast is not None and (self.family == "xgboost" or self._final_takes_encoded):
            encoded = fast.transform_codes(codes, self.schema)
            if encoded is not None:
                return to_output(self._proba_of_encoded(encoded)[:, class_index], output)
        return self.score(self.codec.decode(codes), class_index, output)

    @cached_property
    def _final_takes_encoded(self) -> bool:
        """Whether ``final_estimator.predict_proba(transform(frame))`` is exactly what the
        Pipeline computes: the replayed encoder gives the Pipeline's own float64 matrix and
        the final step was fitted on an array (no feature names to check)."""
        fast = self.fast_encoder
        return (
            fast is not None
            and fast.float64_output
            and not hasattr(self.final_estimator, "feature_names_in_")
            and hasattr(self.final_estimator, "predict_proba")
        )

    def _proba_of_encoded(self, encoded: np.ndarray) -> np.ndarray:
        if self.family == "xgboost":
            return _softmax_or_sigmoid(self.xgb_margins(encoded))
        return np.asarray(self.final_estimator.predict_proba(encoded), dtype=float)

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

    @cached_property
    def _margins(self) -> _ResultCache:
        return _ResultCache(MARGIN_CACHE)

    def xgb_margins(self, encoded: np.ndarray) -> np.ndarray:
        """XGBoost's margins (``inplace_predict``: the same bits as a DMatrix, without one)."""
        matrix = np.ascontiguousarray(encoded, dtype=float)
        return self._margins.get(
            matrix,
            lambda: np.asarray(
                self.xgb_booster.inplace_predict(matrix, predict_type="margin"), dtype=float
            ),
        )

    def xgb_contributions(
        self, encoded: np.ndarray, *, algorithm: ContribAlgorithm = "xgboost", threads: int = 1
    ) -> np.ndarray:
        """Path-dependent TreeSHAP over the encoded columns, with the bias as the last column:
        XGBoost's ``pred_contribs`` (on a visible GPU for large batches), or the same values
        from :class:`FastTreeShap` (``algorithm="fast"``; XGBoost's where it does not apply)."""
        matrix = np.ascontiguousarray(encoded, dtype=float)
        if algorithm == "fast" and not (cuda_available() and len(matrix) >= GPU_MIN_ROWS):
            fast = self.fast_treeshap
            if fast is not None:
                return fast.contributions(matrix, threads=threads)
        import xgboost

        booster = self.xgb_booster
        if cuda_available() and len(matrix) >= GPU_MIN_ROWS:
            booster = self._xgb_cuda_booster
        dmatrix = xgboost.DMatrix(matrix, nthread=threads)
        return np.asarray(booster.predict(dmatrix, pred_contribs=True), dtype=float)

    @cached_property
    def _xgb_cuda_booster(self) -> Any:
        booster = self.xgb_booster.copy()
        booster.set_param({"device": "cuda"})
        return booster

    @cached_property
    def fast_treeshap(self) -> FastTreeShap | None:
        """Per-leaf TreeSHAP tables of the XGBoost booster, or ``None`` where they do not apply
        (not a single-output tree booster, categorical splits, very deep trees...)."""
        if self.family != "xgboost":
            return None
        return FastTreeShap.from_booster(self.xgb_booster)


# -- the encoder, replayed with numpy ------------------------------------------------------
@dataclass(frozen=True)
class _Block:
    """Consecutive output columns of one ColumnTransformer step."""

    kind: Literal["onehot", "passthrough", "scale"]
    columns: tuple[str, ...]
    #: onehot: per input column, category -> index and the categories in order
    lookups: tuple[dict[Any, int], ...] = ()
    categories: tuple[list[Any], ...] = ()
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None

    @property
    def width(self) -> int:
        if self.kind == "onehot":
            return sum(len(c) for c in self.categories)
        return len(self.columns)


class FastEncoder:
    """A fitted ColumnTransformer of OneHotEncoder / StandardScaler / passthrough steps,
    computed with numpy exactly as scikit-learn computes it (checked before first use)."""

    def __init__(self, blocks: list[_Block]) -> None:
        self.blocks = blocks
        self.width = sum(b.width for b in blocks)
        #: scikit-learn's own output is a dense float64 array (what the final step receives)
        self.float64_output = False

    @classmethod
    def compile(
        cls, encoder: Any, sample: pd.DataFrame, schema: FeatureSchema
    ) -> FastEncoder | None:
        try:
            fast = cls._from(encoder)
        except _Unsupported:
            return None
        head = sample.iloc[:4]
        variants = [v for f in schema.features for v in _variants(head, f.name, f.categories)]
        # one scikit-learn call over every row (the encoders work row by row)
        frame = pd.concat([sample, *variants], ignore_index=True)[schema.feature_names]
        expected = encoder.transform(frame)
        fast.float64_output = isinstance(expected, np.ndarray) and expected.dtype == np.float64
        if hasattr(expected, "toarray"):
            expected = expected.toarray()
        got = fast.transform(frame)
        if got is None or not np.array_equal(got, np.asarray(expected, dtype=float)):
            return None
        small = fast.transform(frame.iloc[: len(head)])
        if small is None or not np.array_equal(
            small, np.asarray(expected, dtype=float)[: len(head)]
        ):
            return None
        return fast

    @classmethod
    def _from(cls, encoder: Any) -> FastEncoder:
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

        if isinstance(encoder, Pipeline):
            if len(encoder.steps) != 1:
                raise _Unsupported
            encoder = encoder.steps[0][1]
        if type(encoder) is not ColumnTransformer or encoder.sparse_output_:
            raise _Unsupported
        names = list(getattr(encoder, "feature_names_in_", []))
        blocks = []
        for _, step, spec in encoder.transformers_:
            columns = _column_names(spec, names)
            if step == "drop" or not columns:
                continue
            if step == "passthrough" or (
                type(step) is FunctionTransformer and step.func is None and step.validate is False
            ):
                blocks.append(_Block("passthrough", columns))
            elif type(step) is OneHotEncoder:
                blocks.append(_onehot_block(step, columns))
            elif type(step) is StandardScaler:
                mean = np.asarray(step.mean_, dtype=float) if step.with_mean else None
                scale = np.asarray(step.scale_, dtype=float) if step.with_std else None
                blocks.append(_Block("scale", columns, mean=mean, scale=scale))
            else:
                raise _Unsupported
        return cls(blocks)

    def transform(self, frame: pd.DataFrame) -> np.ndarray | None:
        """The encoded rows, or ``None`` when a value is not one the encoder knows."""
        if len(frame) <= SMALL_FRAME:
            return self._transform_small(frame)
        n = len(frame)
        out = np.zeros((n, self.width))
        start = 0
        rows = np.arange(n)
        for block in self.blocks:
            if block.kind == "onehot":
                for name, lookup, categories in zip(
                    block.columns, block.lookups, block.categories, strict=True
                ):
                    codes = _codes(frame[name], lookup, categories)
                    if codes is None:
                        return None
                    out[rows, start + codes] = 1.0
                    start += len(categories)
                continue
            values = frame[list(block.columns)].to_numpy(dtype=float, copy=True)
            if block.mean is not None:
                values -= block.mean
            if block.scale is not None:
                values /= block.scale
            out[:, start : start + len(block.columns)] = values
            start += len(block.columns)
        return out

    def _transform_small(self, frame: pd.DataFrame) -> np.ndarray | None:
        """A few rows (one per API request): plain Python over the values, no pandas indexing."""
        values = object_rows(frame)
        position = {name: j for j, name in enumerate(frame.columns)}
        out = np.zeros((len(values), self.width))
        start = 0
        for block in self.blocks:
            if block.kind == "onehot":
                for name, lookup in zip(block.columns, block.lookups, strict=True):
                    j = position[name]
                    for r in range(len(values)):
                        column = lookup.get(values[r, j], -1)
                        if column < 0:
                            return None
                        out[r, start + column] = 1.0
                    start += len(lookup)
                continue
            width = len(block.columns)
            numbers = np.array(values[:, [position[c] for c in block.columns]], dtype=float)
            if block.mean is not None:
                numbers -= block.mean
            if block.scale is not None:
                numbers /= block.scale
            out[:, start : start + width] = numbers
            start += width
        return out

    def transform_codes(self, codes: np.ndarray, schema: FeatureSchema) -> np.ndarray | None:
        """``transform(RawCodec(schema).decode(codes))`` without building the frame: category
        codes go straight to their one-hot columns. ``None`` when a category is unknown."""
        position = {name: j for j, name in enumerate(schema.feature_names)}
        n = len(codes)
        out = np.zeros((n, self.width))
        rows = np.arange(n)
        start = 0
        for block in self.blocks:
            if block.kind == "onehot":
                for name, lookup in zip(block.columns, block.lookups, strict=True):
                    spec = schema.feature(name)
                    categories = list(spec.categories or ())
                    if not categories:
                        return None
                    to_column = np.array([lookup.get(c, -1) for c in categories], dtype=np.int64)
                    j = position[name]
                    index = np.clip(np.rint(codes[:, j]).astype(int), 0, len(categories) - 1)
                    columns = to_column[index]
                    if len(columns) and columns.min() < 0:
                        return None
                    out[rows, start + columns] = 1.0
                    start += len(lookup)
                continue
            values = codes[:, [position[c] for c in block.columns]].astype(float, copy=True)
            if block.mean is not None:
                values -= block.mean
            if block.scale is not None:
                values /= block.scale
            out[:, start : start + len(block.columns)] = values
            start += len(block.columns)
        return out


class _Unsupported(Exception):
    """The encoder has a step FastEncoder does not replay."""


def _column_names(spec: Any, names: list[str]) -> tuple[str, ...]:
    if isinstance(spec, str):
        return (spec,)
    items = list(spec) if isinstance(spec, list | tuple | np.ndarray) else None
    if items is None:
        raise _Unsupported
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, int | np.integer) and not isinstance(item, bool) and names:
            out.append(names[int(item)])
        else:
            raise _Unsupported
    return tuple(out)


def _onehot_block(step: Any, columns: tuple[str, ...]) -> _Block:
    if step.drop_idx_ is not None or getattr(step, "_infrequent_enabled", False):
        raise _Unsupported
    if step.handle_unknown not in ("ignore", "error", "infrequent_if_exist"):
        raise _Unsupported
    categories = []
    for values in step.categories_:
        if values.dtype != object or any(not isinstance(v, str) for v in values):
            raise _Unsupported
        categories.append(list(values))
    lookups = tuple({c: i for i, c in enumerate(cats)} for cats in categories)
    return _Block("onehot", columns, lookups=lookups, categories=tuple(categories))


def _codes(column: pd.Series, lookup: dict[Any, int], categories: list[Any]) -> np.ndarray | None:
    if len(column) <= SMALL_FRAME:
        codes = np.array([lookup.get(v, -1) for v in column.tolist()], dtype=np.int64)
    else:
        if column.dtype.kind not in "OUT" and not isinstance(column.dtype, pd.StringDtype):
            return None
        codes = np.asarray(pd.Categorical(column, categories=categories).codes, dtype=np.int64)
    if len(codes) and codes.min() < 0:
        return None
    return codes


def object_rows(frame: pd.DataFrame) -> np.ndarray:
    """``frame.to_numpy(dtype=object)``: every cell as the Python object pandas gives back (an
    int stays an int beside floats), which the request's seed is computed from. Read once and
    shared (read-only) for the frame that an enclosing ``PreparedModel.encoding_once``
    remembers."""
    remembered = _ENCODING.get()
    if remembered is None or remembered.frame is not frame:
        return _object_rows(frame)
    if remembered.objects is None:
        objects = _object_rows(frame)
        objects.setflags(write=False)
        remembered.objects = objects
    return remembered.objects


def _object_rows(frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(frame.to_numpy(dtype=object))


# -- remembered results ----------------------------------------------------------------
class _ResultCache:
    """The results of a pure function of a float matrix for its last few inputs, keyed by a
    digest of the matrix's bytes (so a hit is the same input, never a look-alike)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[tuple[int, ...], bytes], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, matrix: np.ndarray, compute: Callable[[], np.ndarray]) -> np.ndarray:
        key = (matrix.shape, hashlib.blake2b(matrix.tobytes(), digest_size=20).digest())
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit.copy()
        value = compute()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value.copy()


# -- GPU ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """Whether XGBoost can run on a GPU here: built with CUDA and an NVIDIA device visible.
    Cheap (no CUDA context is created, so it is safe before gunicorn forks)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return False
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        return False
    try:
        import xgboost
    except ImportError:
        return False
    return bool(xgboost.build_info().get("USE_CUDA"))


# -- exact path-dependent TreeSHAP from per-leaf tables ---------------------------------------
#
# For one tree, leaf l with value v and the unique features U (|U| = d) split on along its path,
# r_k is the product of the cover fractions of the splits on feature k, and the row x "follows"
# feature k when it satisfies every split on k along the path (P is the set of those). The
# path-dependent game is E[f | x_S] = sum_l v * prod_{k in U} (x_k follows if k in S else r_k),
# whose Shapley values are, with H(Q) = v * sum_{S in Q} |S|!(d-|S|-1)!/d! * prod_{j in U-S} r_j,
#     phi_k += -H(P)                          for k not in P,
#     phi_k += (1 - r_k) / r_k * H(P - {k})   for k in P.
# H is tabulated for every subset of U once per model, so one row costs O(leaves * depth) per
# tree instead of the recursion's O(leaves * depth^2) (the idea of Fast TreeSHAP v2, Yang 2021).
#: Tables are built only up to this many unique features on one path, and this many entries.
MAX_PATH_FEATURES = 14
MAX_TABLE_ENTRIES = 1 << 24
#: Rows per block in the contribution kernel (a block's output stays in cache).
KERNEL_ROWS = 512


@dataclass(frozen=True)
class FastTreeShap:
    """Per-leaf tables of an XGBoost tree ensemble (single output, numeric splits)."""

    n_columns: int
    base_margin: float
    arrays: tuple[np.ndarray, ...]
    #: each leaf's value (float32, as float64), in the tables' leaf order
    leaf_value: np.ndarray

    @classmethod
    def from_booster(cls, booster: Any) -> FastTreeShap | None:
        try:
            model = json.loads(booster.save_raw("json"))["learner"]
            trees, n_columns, base_margin = _xgb_trees(model)
            arrays, leaf_value = _tables(trees)
        except (_Unsupported, KeyError, ValueError, TypeError):
            return None
        return cls(n_columns, base_margin, arrays, leaf_value)

    def leaf_patterns(
        self, encoded: np.ndarray, base_offset: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """For each row and leaf, which of the leaf's path features the row follows (bits), and
        each row's margin: ``base_offset`` plus its leaves' values, summed in float64."""
        x = np.ascontiguousarray(encoded, dtype=np.float32)
        patterns = np.zeros((len(x), len(self.leaf_value)), dtype=np.int64)
        margins = np.full(len(x), base_offset, dtype=float)
        _kernels().patterns(x, *self.arrays[:10], self.leaf_value, patterns, margins)
        return patterns, margins

    def contributions(self, encoded: np.ndarray, *, threads: int = 1) -> np.ndarray:
        """(n, n_columns + 1) like XGBoost's ``pred_contribs``, bias last, as float64."""
        x = np.ascontiguousarray(encoded, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_columns:
            raise ValueError(f"expected {self.n_columns} encoded columns, got {x.shape}")
        kernel = _kernels().contributions
        out = np.zeros((len(x), self.n_columns + 1), dtype=np.float32)
        blocks = [(s, min(s + KERNEL_ROWS, len(x))) for s in range(0, len(x), KERNEL_ROWS)]

        def run(block: tuple[int, int]) -> None:
            start, stop = block
            kernel(x[start:stop], out[start:stop], *self.arrays, np.float32(self.base_margin))

        if threads > 1 and len(blocks) > 1:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(run, blocks))
        else:
            for block in blocks:
                run(block)
        return out.astype(float)


def _xgb_trees(learner: dict[str, Any]) -> tuple[list[dict[str, Any]], int, float]:
    booster = learner["gradient_booster"]
    if booster.get("name") != "gbtree":
        raise _Unsupported
    params = learner["learner_model_param"]
    if int(params.get("num_class", "0")) > 1 or int(params.get("num_target", "1")) != 1:
        raise _Unsupported
    model = booster["model"]
    trees = model["trees"]
    if any(int(group) != 0 for group in model["tree_info"]):
        raise _Unsupported
    base_score = float(str(params["base_score"]).strip("[]").split(",")[0])
    objective = learner["objective"]["name"]
    if objective in ("binary:logistic", "reg:logistic"):
        base_margin = float(np.float32(-math.log(1.0 / base_score - 1.0)))
    elif objective == "binary:logitraw":
        base_margin = base_score
    else:
        raise _Unsupported
    for tree in trees:
        if any(int(t) != 0 for t in tree["split_type"]) or tree["categories_nodes"]:
            raise _Unsupported
        if int(tree["tree_param"].get("num_deleted", "0")) != 0:
            raise _Unsupported
        if int(tree["tree_param"].get("size_leaf_vector", "1")) > 1:
            raise _Unsupported
    return trees, int(params["num_feature"]), base_margin


def _tables(trees: list[dict[str, Any]]) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Nodes in breadth-first order per tree and per-leaf path tables, as flat arrays."""
    node_start, leaf_start = [0], [0]
    n_feat: list[int] = []
    n_cond: list[float] = []
    n_default_left: list[bool] = []
    n_left: list[int] = []
    n_right: list[int] = []
    n_slot: list[int] = []
    l_node: list[int] = []
    l_value: list[float] = []
    l_depth: list[int] = []
    l_table: list[int] = []
    l_first: list[int] = [0]
    lf_feature: list[int] = []
    lf_ratio: list[float] = []
    means: list[float] = []
    entries = 0
    for tree in trees:
        left, right = tree["left_children"], tree["right_children"]
        feat = tree["split_indices"]
        cond = np.asarray(tree["split_conditions"], dtype=np.float32)
        cover = np.asarray(tree["sum_hessian"], dtype=np.float32).astype(float)
        default_left = tree["default_left"]
        order = [0]
        for old in order:  # breadth first: the list grows while it is walked
            if left[old] != -1:
                order += (left[old], right[old])
        if len(order) != len(left):
            raise _Unsupported
        new = {old: i for i, old in enumerate(order)}
        means.append(_mean_value(left, right, cond, np.asarray(tree["sum_hessian"], np.float32)))
        unique: dict[int, tuple[int, ...]] = {0: ()}
        ratios: dict[int, tuple[float, ...]] = {0: ()}
        base = len(n_feat)
        n_feat += [0] * len(order)
        n_cond += [0.0] * len(order)
        n_default_left += [False] * len(order)
        n_left += [0] * len(order)
        n_right += [0] * len(order)
        n_slot += [0] * len(order)
        for i, old in enumerate(order):
            path, fractions = unique.pop(old), ratios.pop(old)
            if left[old] == -1:
                d = len(path)
                if d > MAX_PATH_FEATURES:
                    raise _Unsupported
                l_node.append(i)
                l_value.append(float(cond[old]))
                l_depth.append(d)
                l_table.append(entries)
                entries += 1 << d
                lf_feature.extend(path)
                lf_ratio.extend(fractions)
                l_first.append(len(lf_feature))
                continue
            f = int(feat[old])
            if f in path:
                slot = path.index(f)
            else:
                slot, path, fractions = len(path), (*path, f), (*fractions, 1.0)
            n_feat[base + i] = f
            n_cond[base + i] = float(cond[old])
            n_default_left[base + i] = bool(default_left[old])
            n_left[base + i] = new[left[old]]
            n_right[base + i] = new[right[old]]
            n_slot[base + i] = slot
            for child in (left[old], right[old]):
                if not cover[child] > 0.0 or not cover[old] > 0.0:
                    raise _Unsupported
                changed = list(fractions)
                changed[slot] *= cover[child] / cover[old]
                unique[child], ratios[child] = path, tuple(changed)
        node_start.append(len(n_feat))
        leaf_start.append(len(l_node))
        if entries > MAX_TABLE_ENTRIES:
            raise _Unsupported
    i64, f64 = np.int64, np.float64
    value = np.asarray(l_value, dtype=f64)
    depth = np.asarray(l_depth, dtype=i64)
    table = np.asarray(l_table, dtype=i64)
    first = np.asarray(l_first, dtype=i64)
    ratio = np.asarray(lf_ratio, dtype=f64)
    h = np.zeros(entries)
    c = np.zeros(len(lf_ratio))
    _kernels().tables(value, depth, table, first, ratio, h, c)
    return (
        np.asarray(node_start, dtype=i64),
        np.asarray(leaf_start, dtype=i64),
        np.asarray(n_feat, dtype=i64),
        np.asarray(n_cond, dtype=np.float32),
        np.asarray(n_default_left, dtype=np.bool_),
        np.asarray(n_left, dtype=i64),
        np.asarray(n_right, dtype=i64),
        np.asarray(n_slot, dtype=i64),
        np.asarray(l_node, dtype=i64),
        depth,
        table,
        first,
        np.asarray(lf_feature, dtype=i64),
        h,
        c,
        np.asarray(means, dtype=np.float32),
    ), value


def _mean_value(left: list[int], right: list[int], value: np.ndarray, hess: np.ndarray) -> float:
    """The tree's cover-weighted mean leaf value, in float32 as XGBoost computes its bias."""

    def mean(i: int) -> np.float32:
        if left[i] == -1:
            return np.float32(value[i])
        total = mean(left[i]) * hess[left[i]]
        total += mean(right[i]) * hess[right[i]]
        return np.float32(total / hess[i])

    return float(mean(0))


def _py_tables(
    value: np.ndarray,
    depth: np.ndarray,
    table: np.ndarray,
    first: np.ndarray,
    ratio: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
) -> None:  # pragma: no cover - compiled by numba
    fact = np.ones(2 * MAX_PATH_FEATURES + 2)
    for i in range(1, len(fact)):
        fact[i] = fact[i - 1] * i
    for leaf in range(len(depth)):
        d = depth[leaf]
        offset = table[leaf]
        k0 = first[leaf]
        for k in range(d):
            r = ratio[k0 + k]
            c[k0 + k] = (1.0 - r) / r
        for q in range(1 << d):
            total = 0.0
            s = q
            while True:  # every subset s of q
                size = 0
                product = 1.0
                for k in range(d):
                    if (s >> k) & 1:
                        size += 1
                    else:
                        product *= ratio[k0 + k]
                total += fact[size] * fact[d - size - 1] / fact[d] * product
                if s == 0:
                    break
                s = (s - 1) & q
            h[offset + q] = value[leaf] * total


def _py_contributions(
    x: np.ndarray,
    out: np.ndarray,
    node_start: np.ndarray,
    leaf_start: np.ndarray,
    n_feat: np.ndarray,
    n_cond: np.ndarray,
    n_default_left: np.ndarray,
    n_left: np.ndarray,
    n_right: np.ndarray,
    n_slot: np.ndarray,
    l_node: np.ndarray,
    l_depth: np.ndarray,
    l_table: np.ndarray,
    l_first: np.ndarray,
    lf_feature: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
    means: np.ndarray,
    base_margin: np.float32,
) -> None:  # pragma: no cover - compiled by numba
    n_rows, n_columns = x.shape
    phi = np.zeros(n_columns)
    follows = np.zeros(int(np.max(np.diff(node_start))) + 1, dtype=np.int64)
    for tree in range(len(node_start) - 1):
        first_node = node_start[tree]
        n_nodes = node_start[tree + 1] - first_node
        for row in range(n_rows):
            phi[:] = 0.0
            # which path features the row follows, propagated from the root down
            follows[0] = -1
            for i in range(n_nodes):
                g = first_node + i
                left = n_left[g]
                if left == 0:
                    continue  # a leaf (the root is nobody's child)
                value = x[row, n_feat[g]]
                goes_left = n_default_left[g] if np.isnan(value) else value < n_cond[g]
                kept = follows[i]
                lost = kept & ~(1 << n_slot[g])
                if goes_left:
                    follows[left] = kept
                    follows[n_right[g]] = lost
                else:
                    follows[left] = lost
                    follows[n_right[g]] = kept
            for leaf in range(leaf_start[tree], leaf_start[tree + 1]):
                d = l_depth[leaf]
                p = follows[l_node[leaf]] & ((1 << d) - 1)
                offset = l_table[leaf]
                k0 = l_first[leaf]
                h_p = h[offset + p]
                for k in range(d):
                    bit = 1 << k
                    if p & bit:
                        phi[lf_feature[k0 + k]] += c[k0 + k] * h[offset + (p ^ bit)]
                    else:
                        phi[lf_feature[k0 + k]] -= h_p
            # trees are summed in float32, in order, as XGBoost sums them
            for j in range(n_columns):
                out[row, j] = np.float32(out[row, j] + np.float32(phi[j]))
            out[row, n_columns] = np.float32(out[row, n_columns] + means[tree])
    for row in range(n_rows):
        out[row, n_columns] = np.float32(out[row, n_columns] + base_margin)


def _py_patterns(
    x: np.ndarray,
    node_start: np.ndarray,
    leaf_start: np.ndarray,
    n_feat: np.ndarray,
    n_cond: np.ndarray,
    n_default_left: np.ndarray,
    n_left: np.ndarray,
    n_right: np.ndarray,
    n_slot: np.ndarray,
    l_node: np.ndarray,
    l_depth: np.ndarray,
    leaf_value: np.ndarray,
    patterns: np.ndarray,
    margins: np.ndarray,
) -> None:  # pragma: no cover - compiled by numba
    follows = np.zeros(int(np.max(np.diff(node_start))) + 1, dtype=np.int64)
    for row in range(x.shape[0]):
        for tree in range(len(node_start) - 1):
            first_node = node_start[tree]
            follows[0] = -1
            for i in range(node_start[tree + 1] - first_node):
                g = first_node + i
                left = n_left[g]
                if left == 0:
                    continue
                value = x[row, n_feat[g]]
                goes_left = n_default_left[g] if np.isnan(value) else value < n_cond[g]
                kept = follows[i]
                lost = kept & ~(1 << n_slot[g])
                follows[left] = kept if goes_left else lost
                follows[n_right[g]] = lost if goes_left else kept
            for leaf in range(leaf_start[tree], leaf_start[tree + 1]):
                full = (1 << l_depth[leaf]) - 1
                p = follows[l_node[leaf]] & full
                patterns[row, leaf] = p
                if p == full:  # the row's own leaf
                    margins[row] += leaf_value[leaf]


def _py_groups(
    patterns: np.ndarray,
    group_start: np.ndarray,
    group_pattern: np.ndarray,
    group_first: np.ndarray,
    group_refs: np.ndarray,
) -> int:  # pragma: no cover - compiled by numba
    """Per leaf, the background rows grouped by their pattern (refs in ascending order)."""
    n_leaves = patterns.shape[1]
    groups = 0
    position = 0
    for leaf in range(n_leaves):
        group_start[leaf] = groups
        column = patterns[:, leaf]
        order = np.argsort(column, kind="mergesort")
        previous = -1
        for j in order:
            if column[j] != previous:
                group_pattern[groups] = column[j]
                group_first[groups] = position
                groups += 1
                previous = column[j]
            group_refs[position] = j
            position += 1
    group_start[n_leaves] = groups
    group_first[groups] = position
    return groups


def _py_interventional(
    patterns: np.ndarray,
    margins: np.ndarray,
    ref_margins: np.ndarray,
    l_depth: np.ndarray,
    l_first: np.ndarray,
    lf_feature: np.ndarray,
    leaf_value: np.ndarray,
    group_start: np.ndarray,
    group_pattern: np.ndarray,
    group_first: np.ndarray,
    group_refs: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled by numba
    n_refs = len(ref_margins)
    fact = np.ones(2 * MAX_PATH_FEATURES + 2)
    for i in range(1, len(fact)):
        fact[i] = fact[i - 1] * i
    scale = np.zeros(n_refs)
    for row in range(patterns.shape[0]):
        f_x = margins[row]
        for j in range(n_refs):
            f_r = ref_margins[j]
            if f_x == f_r:
                scale[j] = 1.0
            else:
                scale[j] = (1.0 / (1.0 + np.exp(-f_x)) - 1.0 / (1.0 + np.exp(-f_r))) / (f_x - f_r)
        for leaf in range(len(l_depth)):
            d = l_depth[leaf]
            full = (1 << d) - 1
            xp = patterns[row, leaf]
            k0 = l_first[leaf]
            for g in range(group_start[leaf], group_start[leaf + 1]):
                rp = group_pattern[g]
                if (xp | rp) != full:
                    continue  # some feature on the path is satisfied by neither
                only_x = xp & ~rp
                only_r = rp & ~xp
                if only_x == 0 and only_r == 0:
                    continue  # x and the reference both reach the leaf: no attribution
                a = 0
                b = 0
                for k in range(d):
                    a += (only_x >> k) & 1
                    b += (only_r >> k) & 1
                total = 0.0
                for i in range(group_first[g], group_first[g + 1]):
                    total += scale[group_refs[i]]
                value = leaf_value[leaf] * total
                gain = value * fact[a - 1] * fact[b] / fact[a + b] if a > 0 else 0.0
                loss = value * fact[a] * fact[b - 1] / fact[a + b] if b > 0 else 0.0
                for k in range(d):
                    bit = 1 << k
                    if only_x & bit:
                        out[row, lf_feature[k0 + k]] += gain
                    elif only_r & bit:
                        out[row, lf_feature[k0 + k]] -= loss
        for j in range(out.shape[1]):
            out[row, j] /= n_refs


@dataclass(frozen=True)
class _Kernels:
    tables: Callable[..., None]
    contributions: Callable[..., None]
    patterns: Callable[..., None]
    groups: Callable[..., int]
    interventional: Callable[..., None]


@functools.lru_cache(maxsize=1)
def _kernels() -> _Kernels:
    """The numba-compiled kernels (compiled on first use and cached on disk)."""
    import numba

    jit = numba.njit(cache=True, nogil=True, boundscheck=False)
    return _Kernels(
        tables=jit(_py_tables),
        contributions=jit(_py_contributions),
        patterns=jit(_py_patterns),
        groups=jit(_py_groups),
        interventional=jit(_py_interventional),
    )


@dataclass(frozen=True)
class FastInterventional:
    """Exact interventional TreeSHAP of an XGBoost binary model in probability space, against
    a background sample, as shap's TreeExplainer(model_output="probability") defines it: per
    (row, reference) pair the margin-space Shapley values rescaled by
    (sigmoid(f(x)) - sigmoid(f(r))) / (f(x) - f(r)), averaged over the references.

    Each leaf's references are grouped by which path features they satisfy, so a row costs one
    pass over its leaves' reachable groups instead of a tree walk per (tree, reference)."""

    tables: FastTreeShap
    base_offset: float
    ref_margins: np.ndarray
    groups: tuple[np.ndarray, ...]

    @classmethod
    def build(
        cls, tables: FastTreeShap, background: np.ndarray, base_offset: float
    ) -> FastInterventional:
        patterns, margins = tables.leaf_patterns(background, base_offset)
        n_refs, n_leaves = patterns.shape
        start = np.zeros(n_leaves + 1, dtype=np.int64)
        pattern = np.zeros(n_refs * n_leaves, dtype=np.int64)
        first = np.zeros(n_refs * n_leaves + 1, dtype=np.int64)
        refs = np.zeros(n_refs * n_leaves, dtype=np.int64)
        count = _kernels().groups(patterns, start, pattern, first, refs)
        groups = (start, pattern[:count].copy(), first[: count + 1].copy(), refs)
        return cls(tables, base_offset, margins, groups)

    def values(self, encoded: np.ndarray) -> np.ndarray:
        """(n, n_columns) probability-space attributions over the encoded columns."""
        patterns, margins = self.tables.leaf_patterns(encoded, self.base_offset)
        arrays = self.tables.arrays
        out = np.zeros((len(patterns), self.tables.n_columns))
        _kernels().interventional(
            patterns,
            margins,
            self.ref_margins,
            arrays[9],  # l_depth
            arrays[11],  # l_first
            arrays[12],  # lf_feature
            self.tables.leaf_value,
            *self.groups,
            out,
        )
        return out


def to_output(probability: np.ndarray, output: OutputSpace) -> np.ndarray:
    if output == "probability":
        return probability
    clipped = np.clip(probability, LOGIT_EPS, 1 - LOGIT_EPS)
    return np.asarray(np.log(clipped) - np.log1p(-clipped))


def row_slices(counts: Sequence[int]) -> list[slice]:
    """The slice of each of consecutive parts of ``counts`` rows (one per request)."""
    ends = itertools.accumulate(counts)
    return [slice(end - n, end) for end, n in zip(ends, counts, strict=True)]


def _softmax_or_sigmoid(margins: np.ndarray) -> np.ndarray:
    if margins.ndim == 1:
        positive = 1.0 / (1.0 + np.exp(-margins))
        return np.column_stack([1.0 - positive, positive])
    shifted = np.exp(margins - margins.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


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
