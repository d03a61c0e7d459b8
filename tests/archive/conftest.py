"""Archive fixtures: every archive test runs on SQLite (a file in tmp_path) and on PostgreSQL
(a fresh schema per test at CRM_EXPLAIN_TEST_POSTGRES_URL, dropped afterwards)."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from explainer.archive import Archive, ArchiveEntry, Secrets, open_archive

POSTGRES_URL = os.environ.get(
    "CRM_EXPLAIN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@dataclass(frozen=True)
class Backend:
    name: str  # "sqlite" | "postgresql"
    url: str  # the archive's URL (PostgreSQL: search_path set to this test's schema)
    path: Path | None  # the SQLite file

    def engine(self) -> Engine:
        """A plain engine on the same database, for tests that reach past the archive."""
        return create_engine(self.url)


@functools.cache
def _postgres_admin() -> Engine | str:
    """An engine on the test server, or why it cannot be reached."""
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        engine.dispose()
        where = make_url(POSTGRES_URL).render_as_string(hide_password=True)
        return f"PostgreSQL at {where} is unreachable ({str(exc.orig).strip()})"
    return engine


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def fresh_backend(kind: str, folder: Path) -> Iterator[Backend]:
    """An empty database: a SQLite file in ``folder``, or a new PostgreSQL schema."""
    if kind == "sqlite":
        path = folder / "archive.db"
        yield Backend("sqlite", f"sqlite:///{path}", path)
        return
    admin = _postgres_admin()
    if isinstance(admin, str):
        pytest.skip(admin)
    schema = f"archive_test_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield Backend("postgresql", url.render_as_string(hide_password=False), None)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with fresh_backend(request.param, tmp_path) as fresh:
        yield fresh


@pytest.fixture(scope="module", params=BACKENDS)
def module_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """One database per test module, for modules whose tests only read."""
    with fresh_backend(request.param, tmp_path_factory.mktemp("archive")) as fresh:
        yield fresh


@pytest.fixture
def secrets() -> Secrets:
    return Secrets.generate()


class FakeClock:
    """Starts at 2024-01-01 UTC and moves one second per reading."""

    def __init__(self) -> None:
        self.now = datetime(2024, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def archive(backend: Backend, secrets: Secrets, clock: FakeClock) -> Iterator[Archive]:
    with open_archive(backend.url, secrets, clock=clock) as opened:
        yield opened


def explanation_entry(
    customer_id: str | None = "C-1001",
    *,
    model: str = "churn",
    version: int = 1,
    inputs: dict[str, Any] | None = None,
    score: float = 0.82,
    entry_id: str | None = None,
) -> ArchiveEntry:
    """An entry shaped like the service's: the API's explanation plus the inputs."""
    explanation_id = entry_id or uuid.uuid4().hex
    features = inputs if inputs is not None else {"tenure": 3, "contract": "Month-to-month"}
    payload = {
        "id": explanation_id,
        "customer_id": customer_id,
        "prediction": {"score": score, "class": "Yes", "band": "high"},
        "base_value": 0.27,
        "method": "shap",
        "output": "probability",
        "attributions": [
            {"feature": name, "label": name.title(), "value": value, "contribution": 0.1}
            for name, value in features.items()
        ],
        "rationale": "Churn risk is high (82%), mainly because of the contract.",
        "quality": {"additivity_error": 1e-12},
        "archived": True,
        "inputs": features,
    }
    return ArchiveEntry(
        id=explanation_id,
        customer_id=customer_id,
        model_name=model,
        model_version=version,
        model_sha256=f"{model}-{version}".encode().hex().ljust(64, "0"),
        settings={"method": "shap", "output": "probability", "seed": 0, "top_k": 5},
        request_id=f"req-{explanation_id[:8]}",
        payload=payload,
    )


@pytest.fixture
def db(backend: Backend) -> Iterator[Engine]:
    """A plain engine on the archive's database, to look at or tamper with rows directly."""
    engine = backend.engine()
    yield engine
    engine.dispose()


@contextmanager
def writes_rejected(
    backend: Backend, db: Engine, *, table: str = "archive_records", reason: str = "disk full"
) -> Iterator[None]:
    """The database refuses new rows of ``table`` (like a full disk or a revoked grant), with
    ``reason`` in its error."""
    message = f"{reason} (simulated)"
    with db.begin() as conn:
        if backend.name == "sqlite":
            conn.execute(
                text(
                    f"CREATE TRIGGER reject BEFORE INSERT ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION reject() RETURNS trigger LANGUAGE plpgsql AS "
                    f"$$ BEGIN RAISE EXCEPTION '{message}'; END $$"
                )
            )
            conn.execute(
                text(
                    f"CREATE TRIGGER reject BEFORE INSERT ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION reject()"
                )
            )
    try:
        yield
    finally:
        with db.begin() as conn:
            conn.execute(
                text("DROP TRIGGER reject" + ("" if backend.name == "sqlite" else f" ON {table}"))
            )
            if backend.name != "sqlite":
                conn.execute(text("DROP FUNCTION reject()"))
