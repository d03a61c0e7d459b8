"""`crm-explain audit`: export a signed bundle, verify it offline, verify the live archive,
prune with a checkpoint."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from explainer.cli import main
from explainer.config import Settings
from explainer.service import Decision, ExplainerService
from model_store import FileSystemStore
from model_store.demo import DemoModel
from tests.conftest import customers, features_of, register_demo


@pytest.fixture
def home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_models: dict[str, DemoModel]
) -> Path:
    """A home whose archive holds three explanations."""
    home = tmp_path / "home"
    monkeypatch.setenv("CRM_EXPLAIN_HOME", str(home))
    register_demo(FileSystemStore(str(home / "models")), demo_models)
    service = ExplainerService.from_settings(Settings.from_env())
    names = service.model("lead_score").schema.feature_names
    frame = customers("lead_score", 3)
    decisions = [Decision(features_of(frame, names, i), f"C-{i}") for i in range(3)]
    service.explain("lead_score", decisions, output="log_odds")
    service.close()
    return home


def rewrite_line(bundle: Path, out: Path, index: int, old: str, new: str) -> None:
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "explanations.jsonl":
                lines = data.decode().splitlines(keepends=True)
                assert old in lines[index]
                lines[index] = lines[index].replace(old, new, 1)
                data = "".join(lines).encode()
            target.writestr(item, data)


def test_an_exported_bundle_verifies_offline_and_a_tampered_one_names_its_record(
    home: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    bundle = tmp_path / "audit.zip"
    exported = runner.invoke(
        main, ["audit", "export", "--out", str(bundle), "--model", "lead_score"]
    )
    assert exported.exit_code == 0, exported.output
    assert "wrote 3 records" in exported.output
    intact = runner.invoke(main, ["audit", "verify", str(bundle)])
    assert intact.exit_code == 0 and "intact: 3 records" in intact.output
    tampered = tmp_path / "tampered.zip"
    rewrite_line(bundle, tampered, 1, '"lead_score"', '"lead_scorX"')
    failed = runner.invoke(main, ["audit", "verify", str(tampered)])
    assert failed.exit_code != 0
    assert "verification failed" in failed.stderr and "seq 2" in failed.stderr
    assert "Traceback" not in failed.output


def test_the_live_archive_verifies_and_prune_keeps_it_verifiable(home: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["audit", "verify", "--archive"]).exit_code == 0
    no_period = runner.invoke(main, ["audit", "prune"])
    assert no_period.exit_code != 0 and "CRM_EXPLAIN_RETENTION_DAYS" in no_period.stderr
    pruned = runner.invoke(main, ["audit", "prune", "--before", "2999-01-01"])
    assert pruned.exit_code == 0 and "pruned 3 records" in pruned.output
    after = runner.invoke(main, ["audit", "verify", "--archive"])
    assert after.exit_code == 0, after.output + after.stderr


def test_verify_needs_a_bundle_or_the_archive_but_not_both(home: Path) -> None:
    result = CliRunner().invoke(main, ["audit", "verify"])
    assert result.exit_code != 0 and "either a bundle file or --archive" in result.stderr
