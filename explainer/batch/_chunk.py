"""One chunk of a batch run: validate its rows, explain the valid ones, format the output.

The same function runs in the local engine and on Dask workers, so both give the same bytes.
Each row's result is independent of how the input was cut into chunks:

* exact SHAP algorithms draw no random numbers, so a chunk is explained in one call and each
  row is labelled with the seed a one-row API request for it would get;
* seeded methods (LIME, shap's permutation fallback) explain each row on its own, with exactly
  that seed, so a row's answer is the API's answer for that row.

Explanation ids are derived from the row's content and position (reproducible, unique within
an output): batch explanations are not archived, so nothing refers to them elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from explainer.batch._options import TABLE_COLUMNS, RejectedRow
from explainer.exceptions import IntegrityError, ValidationError
from explainer.methods import LimeExplainer, PreparedModel, ShapExplainer, plan_for
from explainer.methods._model import ContribAlgorithm
from explainer.service import ExplainerService
from explainer.types import Explanation, Method, OutputSpace
from explainer.validation import validate_features
from model_store.types import FeatureSchema

OutputKind = Literal["jsonl", "table"]


@dataclass(frozen=True)
class ChunkSpec:
    """What every chunk of one run shares (small: it travels to Dask workers)."""

    name: str
    version: int
    sha256: str
    method: Method
    output_space: OutputSpace
    id_column: str | None
    output_kind: OutputKind


@dataclass(frozen=True)
class ChunkResult:
    index: int
    rows_read: int
    #: jsonl: one line per explained row; table: one row per explained row
    lines: list[str] | None
    table: pd.DataFrame | None
    rejects: list[RejectedRow]

    @property
    def rows_explained(self) -> int:
        if self.lines is not None:
            return len(self.lines)
        return 0 if self.table is None else len(self.table)


def batch_service(store: Any, *, treeshap: ContribAlgorithm, threads: int) -> ExplainerService:
    """A service for batch runs: no archive, and SHAP with the batch's TreeSHAP settings."""
    explainers = {
        "shap": ShapExplainer(contributions=treeshap, threads=threads),
        "lime": LimeExplainer(),
    }
    return ExplainerService(store, explainers=explainers)  # type: ignore[arg-type]


def prepare(
    model: PreparedModel, method: Method, output: OutputSpace, treeshap: ContribAlgorithm
) -> None:
    """Build the model's lazily built parts once, before chunks run on several threads."""
    _ = model.column_groups, model.fast_encoder, model.codec
    plan = plan_for(model, output) if method == "shap" else None
    if (plan == "xgb_pred_contribs" and treeshap == "fast") or plan == "tree_interventional":
        _ = model.fast_treeshap


def process_chunk(
    service: ExplainerService,
    model: PreparedModel,
    spec: ChunkSpec,
    index: int,
    first_row: int,
    raw: pd.DataFrame,
) -> ChunkResult:
    """Validate, explain and format ``raw`` (input rows ``first_row``, ``first_row + 1``...)."""
    frame, ids, numbers, rejects = validate_chunk(model.schema, raw, spec.id_column, first_row)
    explanations = explain_rows(service, model, spec, frame, ids, numbers)
    if spec.output_kind == "jsonl":
        lines = [json.dumps(e.to_dict(), ensure_ascii=False) for e in explanations]
        return ChunkResult(index, len(raw), lines, None, rejects)
    table = to_table(model.schema, explanations, spec.id_column)
    return ChunkResult(index, len(raw), None, table, rejects)


# -- validation ---------------------------------------------------------------------------
def validate_chunk(
    schema: FeatureSchema, raw: pd.DataFrame, id_column: str | None, first_row: int
) -> tuple[pd.DataFrame, list[str | None], list[int], list[RejectedRow]]:
    """The valid rows as the model takes them (as the API builds them), their ids and input
    row numbers, and the rejected rows with every problem named.

    Columns are checked with numpy first; only rows that fail that check go through the
    schema's own validator (``validate_features``), which decides and words every rejection.
    """
    n = len(raw)
    ok = np.ones(n, dtype=bool)
    columns: dict[str, np.ndarray] = {}
    for spec in schema.features:
        column = raw[spec.name]
        if spec.is_categorical:
            values = column.to_numpy(dtype=object, copy=True)
            good = np.array(column.isin(list(spec.categories or ())), dtype=bool)
            good &= np.fromiter((type(v) is str for v in values), dtype=bool, count=n)
        elif column.dtype.kind in "iuf":
            numbers = column.to_numpy(dtype=float, na_value=np.nan)
            with np.errstate(invalid="ignore"):
                good = np.isfinite(numbers)
                if spec.min is not None:
                    good &= numbers >= spec.min
                if spec.max is not None:
                    good &= numbers <= spec.max
            # Python ints stay ints and floats floats, as in the frame the API builds
            values = np.array(column.tolist(), dtype=object) if n else np.empty(0, object)
        else:
            values = np.full(n, None, dtype=object)
            good = np.zeros(n, dtype=bool)
        columns[spec.name] = values
        ok &= good
    ids = _ids(raw, id_column)
    rejects: list[RejectedRow] = []
    for i in np.flatnonzero(~ok):
        features = {name: _native(raw[name].iat[i]) for name in schema.feature_names}
        try:
            row = validate_features(schema, features, "")
        except ValidationError as exc:
            errors = tuple((e.field, e.message) for e in exc.errors)
            rejects.append(RejectedRow(first_row + int(i), ids[i], errors))
            continue
        ok[i] = True
        for name, value in row.items():
            columns[name][i] = value
    keep = np.flatnonzero(ok)
    # One object block of Python floats and strings: the values the API's frame holds, and
    # the cheapest frame for explain_frame's per-row access.
    matrix = np.empty((len(keep), len(columns)), dtype=object)
    for j, values in enumerate(columns.values()):
        matrix[:, j] = values[keep].tolist()
    frame = pd.DataFrame(matrix, columns=schema.feature_names, dtype=object)
    return frame, [ids[i] for i in keep], [first_row + int(i) for i in keep], rejects


def _ids(raw: pd.DataFrame, id_column: str | None) -> list[str | None]:
    if id_column is None or id_column not in raw.columns:
        return [None] * len(raw)
    return [None if _missing(v) else str(_native(v)) for v in raw[id_column].tolist()]


def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


# -- explanation ----------------------------------------------------------------------------
def explain_rows(
    service: ExplainerService,
    model: PreparedModel,
    spec: ChunkSpec,
    frame: pd.DataFrame,
    ids: Sequence[str | None],
    numbers: Sequence[int],
) -> list[Explanation]:
    if len(frame) == 0:
        return []
    seeded = spec.method == "lime" or plan_for(model, spec.output_space) == "model_agnostic"
    if seeded:
        explanations = []
        for i in range(len(frame)):
            explanations += service.explain_frame(
                model,
                frame.iloc[[i]].reset_index(drop=True),
                [ids[i]],
                method=spec.method,
                output=spec.output_space,
            )
    else:
        # each row scored as a one-row request is, whatever its chunk (a linear model's BLAS
        # sums can change their last bit with the number of rows)
        with model.encoding_once(frame, [1] * len(frame)):
            explanations = service.explain_frame(
                model, frame, list(ids), method=spec.method, output=spec.output_space
            )
    rows = frame.astype(object).to_numpy().tolist()
    out = []
    for i, e in enumerate(explanations):
        k = model.class_index(e.explained_class)
        payload = json.dumps(
            [model.record.sha256, spec.method, spec.output_space, [k], [rows[i]]], default=str
        )
        digest = hashlib.sha256(payload.encode()).digest()
        seed = int.from_bytes(digest[:4], "big")
        meta = e.meta if seeded else {**e.meta, "seed": seed}
        ident = hashlib.sha256(digest + f"|row {numbers[i]}".encode()).hexdigest()[:32]
        out.append(e.replace(id=ident, meta=meta))
    return out


def to_table(
    schema: FeatureSchema, explanations: Sequence[Explanation], id_column: str | None
) -> pd.DataFrame:
    """One row per explanation: the id, score, explained class, base value and one
    contribution column per raw feature (schema order)."""
    names = schema.feature_names
    position = {name: j for j, name in enumerate(names)}
    values = np.zeros((len(explanations), len(names)))
    for i, e in enumerate(explanations):
        for a in e.attributions:
            values[i, position[a.feature]] = a.contribution
    data: dict[str, Any] = {}
    if id_column is not None:
        data[id_column] = pd.array([e.customer_id for e in explanations], dtype="string")
    data["score"] = np.array([e.prediction.score for e in explanations], dtype=float)
    data["class"] = pd.array([e.explained_class for e in explanations], dtype="string")
    data["base_value"] = np.array([e.base_value for e in explanations], dtype=float)
    for j, name in enumerate(names):
        data[name] = values[:, j]
    return pd.DataFrame(data, columns=list(data))


def check_columns(schema: FeatureSchema, id_column: str | None) -> None:
    """A table output names its columns after the features: they must not clash."""
    taken = set(TABLE_COLUMNS) | ({id_column} if id_column else set())
    clash = [name for name in schema.feature_names if name in taken]
    if clash:
        raise ValidationError.for_field(
            "--output",
            f"cannot hold feature {clash[0]!r} as a column beside {sorted(taken)}; "
            "write .jsonl instead",
        )


# -- on a Dask worker ------------------------------------------------------------------------
_SERVICES: dict[tuple[str, str, int], ExplainerService] = {}
_SERVICES_LOCK = threading.Lock()


def worker_service(store_url: str, treeshap: ContribAlgorithm, threads: int) -> ExplainerService:
    """The worker's own service on the store at ``store_url`` (one per worker process), which
    loads each model itself, checking its SHA-256 as every store load does."""
    from model_store import open_store

    key = (store_url, treeshap, threads)
    with _SERVICES_LOCK:
        if key not in _SERVICES:
            _SERVICES[key] = batch_service(
                open_store(store_url), treeshap=treeshap, threads=threads
            )
        return _SERVICES[key]


def remote_chunk(
    store_url: str,
    treeshap: ContribAlgorithm,
    spec: ChunkSpec,
    index: int,
    first_row: int,
    raw: pd.DataFrame,
) -> ChunkResult:
    """Run on a Dask worker: load the model from the store and process one chunk."""
    service = worker_service(store_url, treeshap, 1)
    model = service.model(spec.name, spec.version)
    if model.record.sha256 != spec.sha256:
        raise IntegrityError(
            f"{spec.name}@{spec.version} on this worker has SHA-256 {model.record.sha256}, "
            f"not {spec.sha256} as the client resolved it"
        )
    prepare(model, spec.method, spec.output_space, treeshap)
    return process_chunk(service, model, spec, index, first_row, raw)
