"""`crm-explain serve` keeps its state under its home: nothing in the user's home folder or
runtime folder, where a second instance on the same host would find it and take it over."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from model_store import FileSystemStore
from model_store.demo import DemoModel
from tests._server import start_server
from tests.conftest import customers, features_of, register_demo

KEY = "a-crm-key"


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.slow
@pytest.mark.parametrize("runtime_exists", [True, False], ids=["runtime-dir", "no-runtime-dir"])
def test_a_serving_server_writes_nothing_in_the_users_home_or_runtime_folder(
    tmp_path: Path, demo_models: dict[str, DemoModel], runtime_exists: bool
) -> None:
    home, user_home, runtime = tmp_path / "crm", tmp_path / "user", tmp_path / "runtime"
    user_home.mkdir()
    if runtime_exists:  # else tools fall back to the user's home (gunicorn: ~/.gunicorn)
        runtime.mkdir()
    register_demo(FileSystemStore(str(home / "models")), demo_models)
    row = features_of(customers("churn", 1), demo_models["churn"].schema.feature_names, 0)
    server = start_server(
        home,
        env={
            "CRM_EXPLAIN_API_KEYS": f"crm:{KEY}",
            "HOME": str(user_home),
            "XDG_RUNTIME_DIR": str(runtime),
        },
    )
    try:
        server.wait_ready()
        for method in ("shap", "lime"):
            body: dict[str, Any] = {"instances": [{"customer_id": "C-1", "features": row}]}
            response = requests.post(
                f"{server.url}/v1/models/churn/explain",
                json=body | {"method": method},
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=60,
            )
            assert response.status_code == 200, response.text
        assert files_under(user_home) == []
        if runtime_exists:
            assert files_under(runtime) == []  # no gunicorn control socket
        else:
            assert not runtime.exists()
    finally:
        server.stop()
