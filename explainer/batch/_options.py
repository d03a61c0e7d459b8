"""What a batch run is asked to do, and what it reports back."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from explainer.methods._model import ContribAlgorithm
from explainer.types import Method, OutputSpace

Engine = Literal["local", "dask"]

#: Rows read, explained and written at a time (one parquet row group per chunk).
CHUNK_ROWS = 5000
#: The id column carried through when the input has it and ``--id-column`` is not given.
DEFAULT_ID_COLUMN = "customer_id"
#: Columns of a csv/parquet output besides one per feature (a feature may not be named so).
TABLE_COLUMNS = ("score", "class", "base_value")


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


@dataclass(frozen=True)
class BatchOptions:
    """One batch run: explain every row of ``input`` with ``NAME[@VERSION]`` into ``output``.

    ``id_column=None`` carries ``customer_id`` through when the input has it. ``treeshap``
    picks how XGBoost's log-odds TreeSHAP is computed: ``"xgboost"`` (its own
    ``pred_contribs``, bit for bit the API's values) or ``"fast"`` (exact TreeSHAP from
    per-leaf tables, about 6x faster; it differs from XGBoost's float32 output by XGBoost's
    rounding, at most a few float32 ulps: 1.4e-6 measured on contributions of size 4-5).
    """

    ref: str
    input: str
    output: str
    method: Method = "shap"
    output_space: OutputSpace = "probability"
    id_column: str | None = None
    engine: Engine = "local"
    scheduler: str | None = None
    chunk_rows: int = CHUNK_ROWS
    threads: int = field(default_factory=default_threads)
    skip_invalid: bool = False
    treeshap: ContribAlgorithm = "xgboost"
    progress: bool = True


@dataclass(frozen=True)
class RejectedRow:
    """An input row that failed validation: its 1-based number, its id, and what is wrong."""

    row: int
    id: str | None
    errors: tuple[tuple[str, str], ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "row": self.row,
            "id": self.id,
            "errors": [{"field": f, "message": m} for f, m in self.errors],
        }

    def sentence(self) -> str:
        who = f" ({self.id})" if self.id is not None else ""
        field_name, message = self.errors[0]
        more = f" (and {len(self.errors) - 1} more problems)" if len(self.errors) > 1 else ""
        return f"row {self.row}{who} is invalid: {field_name} {message}{more}"


@dataclass(frozen=True)
class BatchSummary:
    """What a finished run did."""

    model: str
    rows_read: int
    rows_explained: int
    rows_rejected: int
    output: str
    rejects: str | None
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows_explained / self.seconds if self.seconds > 0 else 0.0
