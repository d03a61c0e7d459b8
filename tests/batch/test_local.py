"""The local engine: every input and output format, ids carried through, non-features ignored,
invalid rows named or skipped, chunking invisible in the output, the API's values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from explainer.batch._chunk import batch_service
from explainer.exceptions import ValidationError
from explainer.service import Decision, ExplainerService, request_seed
from explainer.validation import validate_instances
from model_store import FileSystemStore
from tests.batch.conftest import EXTRAS, read_output, run, write_input
from tests.conftest import features_of

FORMATS = [".csv", ".parquet", ".jsonl"]


@pytest.mark.parametrize("source_format", FORMATS)
@pytest.mark.parametrize("target_format", FORMATS)
def test_every_format_in_and_out_carries_the_id_and_ignores_other_columns(
    folder_store: FileSystemStore,
    churn_rows: pd.DataFrame,
    tmp_path: Path,
    source_format: str,
    target_format: str,
) -> None:
    source = write_input(churn_rows, tmp_path / f"in{source_format}")
    target = tmp_path / f"out{target_format}"
    summary = run(folder_store, source, target, output_space="log_odds", chunk_rows=16)
    assert (summary.rows_read, summary.rows_explained, summary.rows_rejected) == (40, 40, 0)
    out = read_output(target)
    assert len(out) == len(churn_rows)
    assert list(out["customer_id"]) == list(churn_rows["customer_id"])
    features = folder_store.get("churn").schema.feature_names
    if target_format == ".jsonl":
        assert [e["archived"] for e in out.to_dict("records")] == [False] * 40
        first = out.iloc[0]
        assert sorted(a["feature"] for a in first["attributions"]) == sorted(features)
        assert not set(EXTRAS) & {a["feature"] for a in first["attributions"]}
    else:
        assert list(out.columns) == ["customer_id", "score", "class", "base_value", *features]
        assert set(out["class"]) == {"Yes"}
        sums = out["base_value"] + out[features].sum(axis=1)
        margins = np.log(out["score"]) - np.log1p(-out["score"])  # class Yes: log-odds
        np.testing.assert_allclose(sums, margins, atol=1e-6)


@pytest.mark.parametrize("output_space", ["probability", "log_odds"])
def test_rows_are_explained_exactly_as_the_api_explains_them(
    folder_store: FileSystemStore, churn_rows: pd.DataFrame, tmp_path: Path, output_space: str
) -> None:
    source = write_input(churn_rows.iloc[:6], tmp_path / "in.parquet")
    target = tmp_path / "out.jsonl"
    run(folder_store, source, target, output_space=output_space, treeshap="xgboost")
    batch = [json.loads(line) for line in target.read_text().splitlines()]
    service = ExplainerService(folder_store)
    names = folder_store.get("churn").schema.feature_names
    api = service.explain(
        "churn",
        [Decision(features_of(churn_rows, names, i), churn_rows.customer_id[i]) for i in range(6)],
        output=output_space,  # type: ignore[arg-type]
        archive=False,
    )
    for got, want in zip(batch, api, strict=True):
        assert got["attributions"] == [a.to_dict() for a in want.attributions]
        assert got["base_value"] == want.base_value
        assert got["prediction"] == want.prediction.to_dict()
        assert got["rationale"] == want.rationale
        assert got["customer_id"] == want.customer_id


@pytest.mark.parametrize("chunk_rows", [20, 7])
def test_a_linear_models_rows_get_what_a_one_row_request_gets_whatever_the_chunk(
    folder_store: FileSystemStore, tmp_path: Path, chunk_rows: int
) -> None:
    """A linear model's scores are BLAS dot products, whose last bit can depend on how many
    rows are multiplied together: a chunk's rows are scored one by one, as requests are."""
    from explainer.batch import BatchOptions, run_batch
    from tests.conftest import customers

    leads = customers("lead_score", 20, seed=12)
    source = write_input(leads, tmp_path / "in.parquet")
    target = tmp_path / "out.jsonl"
    options = BatchOptions(
        "lead_score",
        str(source),
        str(target),
        output_space="log_odds",
        chunk_rows=chunk_rows,
        progress=False,
    )
    run_batch(options, folder_store)
    batch = [json.loads(line) for line in target.read_text().splitlines()]
    service = ExplainerService(folder_store)
    names = folder_store.get("lead_score").schema.feature_names
    for i, got in enumerate(batch):
        decision = Decision(features_of(leads, names, i), leads.customer_id[i])
        [want] = service.explain("lead_score", [decision], output="log_odds", archive=False)
        assert got["prediction"] == want.prediction.to_dict()
        assert got["quality"]["additivity_error"] == want.quality["additivity_error"]
        assert got["attributions"] == [a.to_dict() for a in want.attributions]
        assert got["rationale"] == want.rationale


def test_each_row_carries_the_seed_a_one_row_request_for_it_gets(
    folder_store: FileSystemStore, churn_rows: pd.DataFrame, tmp_path: Path
) -> None:
    source = write_input(churn_rows.iloc[:5], tmp_path / "in.csv")
    target = tmp_path / "out.jsonl"
    run(folder_store, source, target)
    service = batch_service(folder_store, treeshap="xgboost", threads=1)
    model = service.model("churn")
    names = model.schema.feature_names
    for i, line in enumerate(target.read_text().splitlines()):
        # the frame the API builds for a one-row request
        rows = validate_instances(model.schema, [features_of(churn_rows, names, i)])
        frame = pd.DataFrame(rows, columns=names)
        seed = request_seed(model.record, frame, "shap", "probability", np.array([1]))
        assert json.loads(line)["meta"]["seed"] == seed


def test_the_fast_tables_give_xgboosts_values_to_its_float32_rounding(
    folder_store: FileSystemStore, churn_rows: pd.DataFrame, tmp_path: Path
) -> None:
    source = write_input(churn_rows, tmp_path / "in.parquet")
    native, fast = tmp_path / "native.parquet", tmp_path / "fast.parquet"
    run(folder_store, source, native, output_space="log_odds")
    run(folder_store, source, fast, output_space="log_odds", treeshap="fast", threads=2)
    a, b = pd.read_parquet(native), pd.read_parquet(fast)
    features = folder_store.get("churn").schema.feature_names
    assert np.abs(a[features].to_numpy() - b[features].to_numpy()).max() < 2e-6
    pd.testing.assert_frame_equal(a.drop(columns=features), b.drop(columns=features), atol=2e-6)


@pytest.mark.parametrize("target_format", FORMATS)
def test_chunked_output_equals_unchunked(
    folder_store: FileSystemStore, churn_rows: pd.DataFrame, tmp_path: Path, target_format: str
) -> None:
    source = write_input(churn_rows, tmp_path / "in.jsonl")
    one, many = tmp_path / f"one{target_format}", tmp_path / f"many{target_format}"
    run(folder_store, source, one, chunk_rows=1000)
    run(folder_store, source, many, chunk_rows=7, threads=2)
    if target_format == ".parquet":
        pd.testing.assert_frame_equal(pd.read_parquet(one), pd.read_parquet(many))
    else:
        assert one.read_bytes() == many.read_bytes()


def test_lime_rows_do_not_depend_on_the_chunks_either(
    folder_store: FileSystemStore, tmp_path: Path
) -> None:
    from tests.conftest import customers

    source = write_input(customers("lead_score", 3, seed=5), tmp_path / "in.csv")
    one, many = tmp_path / "one.jsonl", tmp_path / "many.jsonl"
    options = {"method": "lime", "progress": False}
    from explainer.batch import BatchOptions, run_batch

    run_batch(
        BatchOptions("lead_score", str(source), str(one), chunk_rows=3, **options), folder_store
    )  # type: ignore[arg-type]
    run_batch(
        BatchOptions("lead_score", str(source), str(many), chunk_rows=1, **options), folder_store
    )  # type: ignore[arg-type]
    assert one.read_bytes() == many.read_bytes()
    assert all(
        json.loads(line)["quality"]["r2"] is not None for line in one.read_text().splitlines()
    )


def broken(frame: pd.DataFrame) -> pd.DataFrame:
    bad = frame.copy()
    bad["tenure"] = bad["tenure"].astype(float)
    bad.loc[3, "tenure"] = -5.0  # below the schema's minimum
    bad.loc[9, "contract"] = "Lifetime"  # not a category
    return bad


def test_an_invalid_row_stops_the_run_naming_the_row_and_field_and_writes_nothing(
    folder_store: FileSystemStore, churn_rows: pd.DataFrame, tmp_path: Path
) -> None:
    source = write_input(broken(churn_rows), tmp_path / "in.csv")
    target = tmp_path / "out.parquet"
    with pytest.raises(ValidationError) as raised:
        run(folder_store, source, target, chunk_rows=8)
    message = raised.value.message
    assert message.startswith(f"row 4 ({churn_rows.customer_id[3]}) is invalid: tenure ")
    assert "--skip-invalid" in message
    assert not target.exists() and not list(tmp_path.glob("out*"))


def test_skip_invalid_explains_the_rest_and_lists_the_rejected_rows(
    folder_store: FileSystemStore, churn_rows: pd.DataFrame, tmp_path: Path
) -> None:
    source = write_input(broken(churn_rows), tmp_path / "in.parquet")
    target = tmp_path / "out.csv"
    summary = run(folder_store, source, target, chunk_rows=8, skip_invalid=True)
    assert (summary.rows_explained, summary.rows_rejected) == (38, 2)
    out = read_output(target)
    assert len(out) == 38 and churn_rows.customer_id[3] not in set(out["customer_id"])
    rejected = [
        json.loads(line) for line in (tmp_path / "out.rejected.jsonl").read_text().splitlines()
    ]
    assert [(r["row"], r["id"], r["errors"][0]["field"]) for r in rejected] == [
        (4, churn_rows.customer_id[3], "tenure"),
        (10, churn_rows.customer_id[9], "contract"),
    ]


def test_missing_values_and_wrong_types_are_rejected_like_the_api_rejects_them(
    folder_store: FileSystemStore, churn_rows: pd.DataFrame, tmp_path: Path
) -> None:
    bad = churn_rows.iloc[:4].copy()
    bad["nps_score"] = bad["nps_score"].astype(object)
    bad.loc[1, "nps_score"] = "seven"
    bad.loc[2, "monthly_charges"] = np.nan
    source = write_input(bad, tmp_path / "in.jsonl")
    summary = run(folder_store, source, tmp_path / "out.jsonl", skip_invalid=True)
    assert summary.rows_explained == 2
    rejected = [json.loads(x) for x in (tmp_path / "out.rejected.jsonl").read_text().splitlines()]
    assert [(r["row"], r["errors"][0]["field"]) for r in rejected] == [
        (2, "nps_score"),
        (3, "monthly_charges"),
    ]


def test_a_missing_feature_column_or_id_column_is_one_clear_error(
    folder_store: FileSystemStore, churn_rows: pd.DataFrame, tmp_path: Path
) -> None:
    source = write_input(churn_rows.drop(columns=["tenure"]), tmp_path / "in.csv")
    with pytest.raises(ValidationError, match=r"lacks the feature columns \['tenure'\]"):
        run(folder_store, source, tmp_path / "out.csv")
    source = write_input(churn_rows, tmp_path / "in2.csv")
    with pytest.raises(ValidationError, match="'account' is not a column of the input"):
        run(folder_store, source, tmp_path / "out.csv", id_column="account")
    with pytest.raises(ValidationError, match="must end in one of"):
        run(folder_store, source, tmp_path / "out.xlsx")


def test_without_an_id_column_the_rows_have_no_customer_id(
    folder_store: FileSystemStore, churn_rows: pd.DataFrame, tmp_path: Path
) -> None:
    source = write_input(churn_rows.drop(columns=["customer_id"]), tmp_path / "in.parquet")
    run(folder_store, source, tmp_path / "out.jsonl")
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == 40 and all(json.loads(x)["customer_id"] is None for x in lines)
