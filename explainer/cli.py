"""The ``crm-explain`` command line. Errors are one sentence on stderr and a non-zero exit."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from explainer.config import Settings
from explainer.exceptions import ExplainerError, ValidationError
from explainer.server import DEFAULT_THREADS
from model_store.errors import StoreError

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(command: F) -> F:
    """Known errors become one clear sentence and their exit code, never a traceback."""

    @functools.wraps(command)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (ExplainerError, StoreError) as exc:
            click.echo(f"crm-explain: {exc.message}", err=True)
            sys.exit(getattr(exc, "exit_code", 1))
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            click.echo(f"crm-explain: {exc.strerror}: {exc.filename}", err=True)
            sys.exit(2)

    return cast(F, wrapped)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as exc:  # a malformed CRM_EXPLAIN_* variable, named in the message
        raise ValidationError(str(exc)) from None


def _store() -> Any:
    from model_store import open_store

    return open_store(_settings().store_url)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="crm-explain")
def main() -> None:
    """Explanations for the scoring models inside CRM systems."""


# -- serve -------------------------------------------------------------------------------
@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--threads",
    default=DEFAULT_THREADS,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Threads per worker; requests in flight together share archive commits.",
)
@friendly_errors
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Run the API under gunicorn (seeding the demo models into an empty store first)."""
    from explainer.server import run_server

    run_server(_settings(), host=host, port=port, workers=workers, threads=threads, echo=click.echo)


# -- demo --------------------------------------------------------------------------------
@main.group()
def demo() -> None:
    """The built-in demo models."""


@demo.command("seed")
@friendly_errors
def demo_seed() -> None:
    """(Re)build churn, case_priority and lead_score from synthetic CRM data."""
    from model_store.demo import seed_demo

    for record in seed_demo(_store()):
        click.echo(f"registered and promoted {record.ref} (sha256 {record.sha256[:12]}…)")


# -- models ------------------------------------------------------------------------------
@main.group()
def models() -> None:
    """The model registry."""


@models.command("list")
@friendly_errors
def models_list() -> None:
    """Every model with its serving version."""
    store = _store()
    for name in store.names():
        record = store.get(name)
        click.echo(
            f"{record.ref:<24} {record.stage:<11} {record.schema.task:<10} {record.sha256[:12]}"
        )


@models.command("show")
@click.argument("name")
@friendly_errors
def models_show(name: str) -> None:
    """A model's card: schema, versions, owner, intended use, metrics."""
    from explainer.service import ExplainerService

    _print_json(ExplainerService(_store()).card(name))


@models.command("register")
@click.argument("name")
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--schema", "schema_file", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--background",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A sample of the model's inputs (csv, parquet or jsonl); required.",
)
@click.option("--card", "card_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@friendly_errors
def models_register(
    name: str,
    artifact: Path,
    schema_file: Path | None,
    background: Path | None,
    card_file: Path | None,
) -> None:
    """Register ARTIFACT (a joblib file) as the next version of NAME."""
    from explainer.exceptions import ValidationError
    from explainer.io import read_table
    from model_store.types import FeatureSchema

    if background is None:
        raise ValidationError.for_field("--background", "is required: a sample of the inputs")
    schema = FeatureSchema.from_dict(_read_json(schema_file)) if schema_file else None
    card = _read_json(card_file) if card_file else None
    record = _store().register(
        name, artifact.read_bytes(), background=read_table(background), schema=schema, card=card
    )
    click.echo(f"registered {record.ref} (sha256 {record.sha256})")


@models.command("promote")
@click.argument("name")
@click.argument("version", type=int)
@friendly_errors
def models_promote(name: str, version: int) -> None:
    """Make VERSION the production version of NAME."""
    record = _store().promote(name, version)
    click.echo(f"{record.ref} is now in production")


# -- importance --------------------------------------------------------------------------
@main.command()
@click.argument("ref")
@click.option("--compare", "others", multiple=True, help="Another NAME@VERSION to set beside it.")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--method", type=click.Choice(["shap", "lime"]), default="shap", show_default=True)
@click.option(
    "--plot", type=click.Path(dir_okay=False, path_type=Path), help="FILE.svg or FILE.png"
)
@friendly_errors
def importance(
    ref: str, others: tuple[str, ...], data: Path | None, method: str, plot: Path | None
) -> None:
    """Global importance (mean |attribution| per raw feature) of NAME[@VERSION]."""
    from explainer.io import read_table
    from explainer.plots import importance_plot
    from explainer.service import ExplainerService, parse_ref

    service = ExplainerService(_store())
    frame = read_table(data) if data else None
    if others:
        if frame is not None:
            click.echo(
                "crm-explain: --data is ignored with --compare (background samples are used)",
                err=True,
            )
        result = service.compare([ref, *others], method=method)  # type: ignore[arg-type]
    else:
        name, version = parse_ref(ref)
        result = service.importance(name, version, method=method, data=frame)  # type: ignore[arg-type]
    if plot:
        importance_plot(result, plot)
        click.echo(f"plot written to {plot}", err=True)
    _print_json(result)


# -- audit -------------------------------------------------------------------------------
@main.group()
def audit() -> None:
    """The tamper-evident explanation archive."""


def _oversight() -> Any:
    from explainer.service import ExplainerService

    return ExplainerService.from_settings(_settings()).oversight


@audit.command("export")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", default=None, help="Only this model's explanations.")
@click.option("--since", default=None, help="ISO 8601 time, inclusive.")
@click.option("--until", default=None, help="ISO 8601 time, exclusive.")
@friendly_errors
def audit_export(out: Path, model: str | None, since: str | None, until: str | None) -> None:
    """Write a signed audit bundle (zip) that `audit verify` checks offline."""
    from explainer.validation import parse_datetime

    with out.open("wb") as handle:
        manifest = _oversight().export(
            handle,
            model=model,
            since=parse_datetime(since, "--since"),
            until=parse_datetime(until, "--until"),
        )
    click.echo(f"wrote {manifest['count']} records to {out}")


@audit.command("verify")
@click.argument(
    "bundle", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--archive", "live", is_flag=True, help="Verify the live archive instead of a bundle."
)
@friendly_errors
def audit_verify(bundle: Path | None, live: bool) -> None:
    """Check a bundle offline (no server, no database) or, with --archive, the live archive.

    Exits 0 when intact; otherwise non-zero, naming the first record that fails."""
    from explainer.exceptions import ValidationError

    if bool(bundle) == live:
        raise ValidationError.for_field("BUNDLE", "give either a bundle file or --archive")
    if live:
        report = _oversight().verify()
    else:
        from explainer.archive import verify_bundle

        assert bundle is not None
        report = verify_bundle(bundle).to_dict()
    if report["ok"]:
        click.echo(f"intact: {report['records']} records, head {report['head']}")
        return
    bad = report["first_bad"] or {}
    where = f"record seq {bad.get('seq')} (id {bad.get('id')})" if bad.get("seq") else "the bundle"
    click.echo(f"crm-explain: verification failed at {where}: {bad.get('reason')}", err=True)
    sys.exit(9)


@audit.command("prune")
@click.option(
    "--before",
    default=None,
    help="Delete records created before this ISO time "
    "(default: now minus CRM_EXPLAIN_RETENTION_DAYS).",
)
@friendly_errors
def audit_prune(before: str | None) -> None:
    """Apply the retention period; a checkpoint keeps the rest of the chain verifiable."""
    from datetime import UTC, datetime, timedelta

    from explainer.exceptions import ValidationError
    from explainer.validation import parse_datetime

    cutoff = parse_datetime(before, "--before")
    if cutoff is None:
        days = _settings().retention_days
        if days is None:
            raise ValidationError.for_field(
                "--before", "is needed: no retention period is set (CRM_EXPLAIN_RETENTION_DAYS)"
            )
        cutoff = datetime.now(UTC) - timedelta(days=days)
    click.echo(f"pruned {_oversight().prune(cutoff)} records")


# -- fairness and transparency ------------------------------------------------------------
@main.command()
@click.argument("ref", metavar="NAME[@VERSION]")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Decisions to audit (csv, parquet or jsonl): the model's features and the columns below.",
)
@click.option(
    "--protected",
    "protected",
    multiple=True,
    required=True,
    help="A protected attribute's column (repeat for several).",
)
@click.option("--label", default=None, help="The true outcome's column: 0/1 or class names.")
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Selected when the score is at or above it [default: the card's, else 0.5].",
)
@click.option(
    "--positive-class",
    "positive_classes",
    multiple=True,
    help="Multiclass: a class whose probability counts towards selection (repeat).",
)
@friendly_errors
def fairness(
    ref: str,
    data: Path,
    protected: tuple[str, ...],
    label: str | None,
    threshold: float | None,
    positive_classes: tuple[str, ...],
) -> None:
    """Audit NAME's decisions on --data for every --protected attribute; prints the JSON."""
    from explainer.io import read_table
    from explainer.service import ExplainerService, parse_ref

    name, version = parse_ref(ref)
    result = ExplainerService(_store()).fairness_frame(
        name,
        read_table(data),
        protected=list(protected),
        label=label,
        threshold=threshold,
        version=version,
        positive_classes=list(positive_classes) or None,
    )
    _print_json(result)


@main.command("report")
@click.argument("ref", metavar="NAME[@VERSION]")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="FILE.html (one self-contained page) or FILE.json; without it the JSON is printed.",
)
@friendly_errors
def report_command(ref: str, out: Path | None) -> None:
    """The transparency report of NAME[@VERSION] (default: the production version)."""
    from explainer.exceptions import ValidationError
    from explainer.service import ExplainerService, parse_ref

    suffix = out.suffix.lower() if out else ".json"
    if suffix not in (".html", ".htm", ".json"):
        raise ValidationError.for_field("--out", f"must end in .html or .json, not {suffix!r}")
    name, version = parse_ref(ref)
    service = ExplainerService.from_settings(_settings())
    try:
        data = service.report(name, version)
    finally:
        service.close()
    if out is None:
        _print_json(data)
        return
    if suffix == ".json":
        out.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    else:
        from explainer.report import render_html

        out.write_text(render_html(data), encoding="utf-8")
    click.echo(f"wrote the transparency report of {name}@{data['model']['version']} to {out}")


# -- keys --------------------------------------------------------------------------------
@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--role", required=True, type=click.Choice(["crm", "analyst", "auditor", "admin"]))
@friendly_errors
def keys_create(role: str) -> None:
    """Create a key for ROLE; it is printed once and stored only as a hash."""
    from explainer.keys import KeyRing

    stored, plain = KeyRing.load(_settings().home).create(role)
    click.echo(plain)
    click.echo(f"created key {stored.id} with role {stored.role}", err=True)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        from explainer.exceptions import ValidationError

        raise ValidationError.for_field(
            str(path), f"is not valid JSON ({exc.msg}, line {exc.lineno})"
        ) from None


# The batch command lives with its engines; imported last, once `main` exists.
from explainer.batch import explain as batch_explain  # noqa: E402

main.add_command(batch_explain)

if __name__ == "__main__":
    main()
