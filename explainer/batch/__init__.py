"""Batch explanations: a csv/parquet/jsonl file in, explanations out, in chunks, on this
machine (``engine="local"``) or on a Dask cluster (``engine="dask"``). Not archived.

    from explainer.batch import BatchOptions, run_batch
    run_batch(BatchOptions("churn", "customers.parquet", "why.parquet"), store)
"""

from explainer.batch._command import explain
from explainer.batch._engine import run_batch
from explainer.batch._options import BatchOptions, BatchSummary, RejectedRow

__all__ = ["BatchOptions", "BatchSummary", "RejectedRow", "explain", "run_batch"]
