"""Checking a fairness audit's input, naming every offending field.

Every problem found is collected as a :class:`~explainer.exceptions.FieldError` whose
``field`` is the argument's name, or ``argument.column`` for a DataFrame column
(``protected.gender``, ``attributions.tenure``, ``features.tenure``); one
:class:`~explainer.exceptions.ValidationError` carries them all. Records are matched by
position: the i-th score, label, protected row, attribution row and feature row belong to
the same record, whatever the DataFrames' indexes say.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from explainer.exceptions import FieldError, ValidationError

__all__ = ["AuditInputs", "validate"]

NOT_A_1D_ARRAY = "must be a one-dimensional array with one value per record"
NO_RECORDS = "must hold at least one record"
NOT_NUMERIC = "must be numeric, got values of type {dtype}"
NOT_FINITE = "must be finite numbers; {count} value(s) are NaN or infinite (first at row {row})"
SCORE_OUT_OF_RANGE = (
    "must be probabilities between 0 and 1; {count} value(s) are outside (first at row {row}: "
    "{value!r})"
)
LABEL_NOT_BINARY = (
    "must be 0 or 1 (1 = the positive class); {count} value(s) are not (first at row {row}: "
    "{value!r})"
)
WRONG_LENGTH = "has {actual} rows but there are {expected} scores; every record needs one"
THRESHOLD_INVALID = "must be a number between 0 and 1, got {value!r}"
NOT_A_FRAME = "must be a pandas DataFrame, got {type}"
NO_PROTECTED = "must have at least one column, one per protected attribute"
BAD_COLUMN_NAMES = "column names must be unique strings, got {names!r}"
MISSING_GROUP = "{count} value(s) are missing (first at row {row}); every record needs a group"
MISSING_FEATURE = "has no column for this attributed feature; proxy detection needs its values"
INFINITE_FEATURE = "{count} value(s) are infinite (first at row {row})"
SUMMARY = "The fairness audit input is invalid: {first}{more}."


@dataclass(frozen=True)
class AuditInputs:
    """The audit's input, checked and in plain arrays (records in the given order)."""

    scores: NDArray[np.float64]
    labels: NDArray[np.int64] | None
    threshold: float
    protected: dict[str, NDArray[np.str_]]
    feature_names: tuple[str, ...]
    attributions: NDArray[np.float64]  # n_records x n_features
    features: pd.DataFrame | None  # the attributed features' raw values, index 0..n-1

    @property
    def n_records(self) -> int:
        return int(self.scores.shape[0])

    @property
    def selected(self) -> NDArray[np.int64]:
        """1 where the score is at or above the threshold, else 0."""
        return (self.scores >= self.threshold).astype(np.int64)


def _first(mask: NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(mask)[0])


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _check_scores(scores: object, errors: list[FieldError]) -> NDArray[np.float64] | None:
    array = np.asarray(scores)
    if array.ndim != 1:
        errors.append(FieldError("scores", NOT_A_1D_ARRAY))
        return None
    if array.shape[0] == 0:
        errors.append(FieldError("scores", NO_RECORDS))
        return None
    if array.dtype.kind not in "iuf":
        errors.append(FieldError("scores", NOT_NUMERIC.format(dtype=array.dtype)))
        return None
    values = array.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        errors.append(
            FieldError("scores", NOT_FINITE.format(count=int(bad.sum()), row=_first(bad)))
        )
        return None
    outside = (values < 0.0) | (values > 1.0)
    if outside.any():
        row = _first(outside)
        message = SCORE_OUT_OF_RANGE.format(
            count=int(outside.sum()), row=row, value=_scalar(array[row])
        )
        errors.append(FieldError("scores", message))
        return None
    return values


def _check_labels(labels: object, n: int | None, errors: list[FieldError]) -> NDArray[np.int64]:
    array = np.asarray(labels)
    if array.ndim != 1:
        errors.append(FieldError("labels", NOT_A_1D_ARRAY))
        return np.zeros(0, dtype=np.int64)
    if n is not None and array.shape[0] != n:
        errors.append(FieldError("labels", WRONG_LENGTH.format(actual=array.shape[0], expected=n)))
    if array.dtype.kind == "b":
        return array.astype(np.int64)
    if array.dtype.kind in "iuf":
        binary = (array == 0) | (array == 1)
    else:
        binary = np.array([_is_binary(value) for value in array], dtype=bool)
    if not binary.all():
        bad = ~binary
        row = _first(bad)
        message = LABEL_NOT_BINARY.format(count=int(bad.sum()), row=row, value=_scalar(array[row]))
        errors.append(FieldError("labels", message))
        return np.zeros(0, dtype=np.int64)
    return array.astype(np.int64)


def _is_binary(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and value in (0, 1)


def _check_threshold(threshold: object, errors: list[FieldError]) -> float:
    value = _scalar(threshold)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0.0 <= value <= 1.0
    ):
        errors.append(FieldError("threshold", THRESHOLD_INVALID.format(value=value)))
        return 0.0
    return float(value)


def _check_frame(
    name: str, frame: object, n: int | None, errors: list[FieldError]
) -> pd.DataFrame | None:
    if not isinstance(frame, pd.DataFrame):
        errors.append(FieldError(name, NOT_A_FRAME.format(type=type(frame).__name__)))
        return None
    names = list(frame.columns)
    if not all(isinstance(column, str) for column in names) or len(set(names)) != len(names):
        errors.append(FieldError(name, BAD_COLUMN_NAMES.format(names=names)))
        return None
    if n is not None and len(frame) != n:
        errors.append(FieldError(name, WRONG_LENGTH.format(actual=len(frame), expected=n)))
        return None
    return frame.reset_index(drop=True)


def _check_protected(frame: pd.DataFrame, errors: list[FieldError]) -> dict[str, NDArray[np.str_]]:
    if frame.shape[1] == 0:
        errors.append(FieldError("protected", NO_PROTECTED))
        return {}
    groups: dict[str, NDArray[np.str_]] = {}
    for column in frame.columns:
        series = frame[column]
        missing = series.isna().to_numpy(dtype=bool)
        if missing.any():
            message = MISSING_GROUP.format(count=int(missing.sum()), row=_first(missing))
            errors.append(FieldError(f"protected.{column}", message))
            continue
        groups[column] = np.asarray([str(value) for value in series.to_numpy()], dtype=np.str_)
    return groups


def _check_attributions(frame: pd.DataFrame, errors: list[FieldError]) -> NDArray[np.float64]:
    matrix = np.zeros((len(frame), frame.shape[1]), dtype=np.float64)
    for position, column in enumerate(frame.columns):
        series = frame[column]
        field = f"attributions.{column}"
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            errors.append(FieldError(field, NOT_NUMERIC.format(dtype=series.dtype)))
            continue
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            errors.append(
                FieldError(field, NOT_FINITE.format(count=int(bad.sum()), row=_first(bad)))
            )
            continue
        matrix[:, position] = values
    return matrix


def _check_features(
    frame: pd.DataFrame, feature_names: list[str], errors: list[FieldError]
) -> pd.DataFrame:
    for column in feature_names:
        field = f"features.{column}"
        if column not in frame.columns:
            errors.append(FieldError(field, MISSING_FEATURE))
            continue
        series = frame[column]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
            infinite = np.isinf(values)
            if infinite.any():
                message = INFINITE_FEATURE.format(count=int(infinite.sum()), row=_first(infinite))
                errors.append(FieldError(field, message))
    present = [column for column in feature_names if column in frame.columns]
    return frame[present]


def validate(
    *,
    scores: object,
    protected: object,
    attributions: object,
    labels: object,
    threshold: object,
    features: object,
) -> AuditInputs:
    """Check the audit's input; raise one ValidationError naming every bad field."""
    errors: list[FieldError] = []
    checked_scores = _check_scores(scores, errors)
    n = None if checked_scores is None else int(checked_scores.shape[0])
    checked_threshold = _check_threshold(threshold, errors)
    checked_labels = None if labels is None else _check_labels(labels, n, errors)

    protected_frame = _check_frame("protected", protected, n, errors)
    groups = {} if protected_frame is None else _check_protected(protected_frame, errors)

    attribution_frame = _check_frame("attributions", attributions, n, errors)
    feature_names: list[str] = [] if attribution_frame is None else list(attribution_frame.columns)
    matrix = (
        np.zeros((0, 0), dtype=np.float64)
        if attribution_frame is None
        else _check_attributions(attribution_frame, errors)
    )

    feature_frame: pd.DataFrame | None = None
    if features is not None:
        feature_frame = _check_frame("features", features, n, errors)
        if feature_frame is not None:
            feature_frame = _check_features(feature_frame, feature_names, errors)

    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        first = f"{errors[0].field}: {errors[0].message}"
        raise ValidationError(SUMMARY.format(first=first, more=more), errors)

    assert checked_scores is not None  # no errors, so every check returned its value
    return AuditInputs(
        scores=checked_scores,
        labels=checked_labels,
        threshold=checked_threshold,
        protected=groups,
        feature_names=tuple(feature_names),
        attributions=matrix,
        features=feature_frame,
    )
