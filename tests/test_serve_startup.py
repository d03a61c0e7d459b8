"""How `crm-explain serve` prepares the master before gunicorn forks its workers: the models
are loaded and primed there, shap is imported without its plots, and the heap is frozen so that
the workers' garbage collections leave the pages they share with the master alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from model_store import FileSystemStore
from model_store.demo import DemoModel
from tests.conftest import register_demo

# gunicorn's run() replaced by a report of the master's state at the moment it would fork
CHILD = """
import gc, json, sys
import gunicorn.app.base

def report(self):
    print(json.dumps({
        "frozen_objects": gc.get_freeze_count(),
        "shap": "shap" in sys.modules,
        "pyplot": "matplotlib.pyplot" in sys.modules,
    }))

gunicorn.app.base.BaseApplication.run = report
from explainer.config import Settings
from explainer.server import run_server

run_server(Settings.from_env(archive_enabled=False), host="127.0.0.1", port=0, workers=1,
           echo=lambda line: None)
"""


def test_the_master_is_primed_and_frozen_before_the_fork(
    tmp_path: Path, demo_models: dict[str, DemoModel]
) -> None:
    register_demo(FileSystemStore(str(tmp_path / "models")), demo_models)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_EXPLAIN_")}
    env |= {"CRM_EXPLAIN_HOME": str(tmp_path), "CRM_EXPLAIN_API_KEYS": "crm:a-crm-key"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300
    )
    assert child.returncode == 0, child.stderr
    state = json.loads(child.stdout.strip().splitlines()[-1])
    assert state["shap"], "priming imports shap before the fork"
    assert not state["pyplot"], "shap was imported with its plots"
    assert state["frozen_objects"] > 100_000, "the loaded heap was not frozen"
