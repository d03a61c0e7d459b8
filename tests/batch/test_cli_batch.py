"""``crm-explain explain`` on the command line: non-tty progress, one-sentence errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from explainer.cli import main
from model_store import FileSystemStore
from tests.batch.conftest import write_input


@pytest.fixture
def env(folder_store: FileSystemStore, tmp_path: Path) -> dict[str, str]:
    return {"CRM_EXPLAIN_HOME": str(tmp_path / "home"), "CRM_EXPLAIN_STORE_URL": folder_store.url}


def test_explain_writes_the_output_and_a_summary_with_a_progress_bar_off_a_tty(
    env: dict[str, str], churn_rows: pd.DataFrame, tmp_path: Path
) -> None:
    source = write_input(churn_rows, tmp_path / "in.parquet")
    target = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        main,
        [
            "explain",
            "churn",
            "--input",
            str(source),
            "--output",
            str(target),
            "--output-space",
            "log_odds",
            "--chunk-rows",
            "10",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # the bar and the summary go to stderr, never into the data
    assert "explained 40 of 40 rows with churn@1" in result.stderr
    lines = target.read_text().splitlines()
    assert len(lines) == 40 and all(json.loads(x)["output"] == "log_odds" for x in lines)


def test_an_invalid_row_is_one_sentence_and_a_nonzero_exit(
    env: dict[str, str], churn_rows: pd.DataFrame, tmp_path: Path
) -> None:
    bad = churn_rows.copy()
    bad.loc[5, "contract"] = "Forever"
    source = write_input(bad, tmp_path / "in.csv")
    result = CliRunner().invoke(
        main,
        [
            "explain",
            "churn",
            "--input",
            str(source),
            "--output",
            str(tmp_path / "o.csv"),
            "--no-progress",
        ],
        env=env,
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"crm-explain: row 6 ({bad.customer_id[5]}) is invalid: contract"
    )
    assert "Traceback" not in result.output + result.stderr
    assert not (tmp_path / "o.csv").exists()


def test_help_says_batch_explanations_are_not_archived() -> None:
    result = CliRunner().invoke(main, ["explain", "--help"])
    assert result.exit_code == 0
    assert "NOT archived" in result.output
