"""The Dask engine: a scheduler and workers on loopback, each worker loading the model from the
store itself; its output is byte for byte the local engine's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from explainer.exceptions import ValidationError
from model_store import FileSystemStore
from tests.batch.conftest import run, write_input

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address=None,
    )
    try:
        yield str(cluster.scheduler_address)
    finally:
        cluster.close()


@pytest.mark.parametrize("target_format", [".jsonl", ".parquet"])
def test_the_dask_engine_writes_exactly_what_the_local_engine_writes(
    folder_store: FileSystemStore,
    churn_rows: pd.DataFrame,
    tmp_path: Path,
    scheduler: str,
    target_format: str,
) -> None:
    source = write_input(churn_rows, tmp_path / "in.csv")
    local, remote = tmp_path / f"local{target_format}", tmp_path / f"dask{target_format}"
    run(folder_store, source, local, chunk_rows=9, output_space="log_odds")
    summary = run(
        folder_store,
        source,
        remote,
        chunk_rows=9,
        output_space="log_odds",
        engine="dask",
        scheduler=scheduler,
    )
    assert summary.rows_explained == len(churn_rows)
    if target_format == ".parquet":
        pd.testing.assert_frame_equal(pd.read_parquet(local), pd.read_parquet(remote))
    else:
        assert local.read_bytes() == remote.read_bytes()


def test_workers_refuse_a_model_whose_checksum_changed(
    folder_store: FileSystemStore, churn_rows: pd.DataFrame, tmp_path: Path, scheduler: str
) -> None:
    from explainer.batch._chunk import ChunkSpec, remote_chunk
    from explainer.exceptions import IntegrityError

    record = folder_store.get("churn")
    spec = ChunkSpec("churn", record.version, "0" * 64, "shap", "log_odds", None, "jsonl")
    with pytest.raises(IntegrityError, match="not 0000"):
        remote_chunk(folder_store.url, "fast", spec, 0, 1, churn_rows.iloc[:2])


def test_dask_without_a_scheduler_is_one_clear_error(
    folder_store: FileSystemStore, churn_rows: pd.DataFrame, tmp_path: Path
) -> None:
    source = write_input(churn_rows.iloc[:3], tmp_path / "in.csv")
    with pytest.raises(ValidationError, match="--scheduler"):
        run(folder_store, source, tmp_path / "out.jsonl", engine="dask")
