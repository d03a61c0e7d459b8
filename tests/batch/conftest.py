"""Batch fixtures: the demo models in a folder store (Dask workers open it by its URL)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from explainer.batch import BatchOptions, BatchSummary, run_batch
from model_store import FileSystemStore
from model_store.demo import DemoModel
from tests.conftest import customers, register_demo

#: Input columns that are not churn features: they must be ignored (the id is carried).
EXTRAS = ["gender", "age_band", "churn"]


@pytest.fixture(scope="session")
def folder_store(
    demo_models: dict[str, DemoModel], tmp_path_factory: pytest.TempPathFactory
) -> FileSystemStore:
    store = FileSystemStore(str(tmp_path_factory.mktemp("batch-store") / "models"))
    register_demo(store, demo_models)
    return store


@pytest.fixture(scope="session")
def churn_rows() -> pd.DataFrame:
    """40 churn customers with their id, the churn features and non-feature columns."""
    frame = customers("churn", 40, seed=31)
    assert set(EXTRAS) <= set(frame.columns)
    return frame


def write_input(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


def read_output(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={"customer_id": str, "class": str})
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_json(path, lines=True, dtype=False)


def run(store: FileSystemStore, source: Path, target: Path, **options: object) -> BatchSummary:
    settings = {"progress": False, "threads": 1} | options
    return run_batch(BatchOptions("churn", str(source), str(target), **settings), store)  # type: ignore[arg-type]
