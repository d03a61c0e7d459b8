"""`crm-explain serve` keeps its state under its home: nothing in the user's home or runtime
folder, where a second instance on the same host would find it and take it over."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_store import FileSystemStore
from model_store.demo import DemoModel
from tests._server import start_server
from tests.conftest import register_demo


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.slow
def test_a_running_server_writes_nothing_outside_its_home(
    tmp_path: Path, demo_models: dict[str, DemoModel]
) -> None:
    home, user_home, runtime = tmp_path / "crm", tmp_path / "user", tmp_path / "runtime"
    user_home.mkdir()
    runtime.mkdir()
    register_demo(FileSystemStore(str(home / "models")), demo_models)
    server = start_server(
        home,
        env={
            "CRM_EXPLAIN_API_KEYS": "crm:a-crm-key",
            "HOME": str(user_home),
            "XDG_RUNTIME_DIR": str(runtime),
        },
    )
    try:
        server.wait_ready()
        assert files_under(user_home) == []
        assert files_under(runtime) == []  # no gunicorn control socket either
    finally:
        server.stop()
