"""``crm-explain explain``: batch explanations of a csv/parquet/jsonl file."""

from __future__ import annotations

import click

from explainer.batch._options import CHUNK_ROWS, BatchOptions, default_threads


@click.command("explain")
@click.argument("ref", metavar="NAME[@VERSION]")
@click.option(
    "--input",
    "input_",
    required=True,
    help="The rows to explain: a .csv, .parquet or .jsonl file (a path or an fsspec URL).",
)
@click.option(
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help=".jsonl: one explanation object per row (the API's fields); .parquet/.csv: one row "
    "per input row with the id, score, class, base_value and one contribution column per "
    "feature.",
)
@click.option("--method", type=click.Choice(["shap", "lime"]), default="shap", show_default=True)
@click.option(
    "--output-space",
    type=click.Choice(["probability", "log_odds"]),
    default="probability",
    show_default=True,
    help="log_odds is XGBoost's native space (exact path-dependent TreeSHAP, fastest).",
)
@click.option(
    "--id-column",
    default=None,
    help="The column carried through as the explanation's customer_id "
    "[default: customer_id, when the input has it].",
)
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True)
@click.option(
    "--scheduler",
    default=None,
    help="The Dask scheduler's address (tcp://host:8786), with --engine dask; each worker "
    "loads the model from CRM_EXPLAIN_STORE_URL itself.",
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Explain the valid rows and list the invalid ones in OUTPUT_STEM.rejected.jsonl "
    "(default: stop at the first invalid row, naming it, and write nothing).",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(1),
    default=CHUNK_ROWS,
    show_default=True,
    help="Rows read, explained and written at a time.",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=None,
    help="Local engine: chunks explained at once [default: the CPUs available].",
)
@click.option(
    "--treeshap",
    type=click.Choice(["xgboost", "fast"]),
    default="xgboost",
    show_default=True,
    help="XGBoost log-odds: XGBoost's own pred_contribs (the API's values, bit for bit), or "
    "exact TreeSHAP from per-leaf tables (about 6x faster; it differs from XGBoost's float32 "
    "output by XGBoost's own rounding, ~1e-6).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
def explain(
    ref: str,
    input_: str,
    output: str,
    method: str,
    output_space: str,
    id_column: str | None,
    engine: str,
    scheduler: str | None,
    skip_invalid: bool,
    chunk_rows: int,
    threads: int | None,
    treeshap: str,
    no_progress: bool,
) -> None:
    """Explain every row of --input with NAME[@VERSION] into --output, in chunks.

    Columns that are not the model's features are ignored, except the id column, which is
    carried through. Rows are validated against the model's schema first.

    Batch explanations are NOT archived: they are offline data-science runs, not decisions
    served to a CRM (use the API for those).
    """
    from explainer.batch._engine import run_batch
    from explainer.cli import _settings, friendly_errors
    from model_store import open_store

    def run() -> None:
        settings = _settings()
        options = BatchOptions(
            ref=ref,
            input=input_,
            output=output,
            method=method,  # type: ignore[arg-type]
            output_space=output_space,  # type: ignore[arg-type]
            id_column=id_column,
            engine=engine,  # type: ignore[arg-type]
            scheduler=scheduler,
            chunk_rows=chunk_rows,
            threads=threads or default_threads(),
            skip_invalid=skip_invalid,
            treeshap=treeshap,  # type: ignore[arg-type]
            progress=not no_progress,
        )
        store = open_store(settings.store_url)
        run_batch(options, store, store_url=settings.store_url, echo=_echo_err)

    friendly_errors(run)()


def _echo_err(line: str) -> None:
    click.echo(line, err=True)
