"""Settings read from the environment (``explainer.config``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from explainer.cli import main
from explainer.config import BATCH_WAIT_MS, Settings


def test_the_batch_wait_defaults_to_ten_milliseconds() -> None:
    assert Settings.from_env({"CRM_EXPLAIN_HOME": "/srv/crm"}).batch_wait_ms == BATCH_WAIT_MS == 10


@pytest.mark.parametrize(("raw", "expected"), [("0", 0.0), ("2.5", 2.5), (" 25 ", 25.0)])
def test_the_batch_wait_is_read_in_milliseconds(raw: str, expected: float) -> None:
    environ = {"CRM_EXPLAIN_HOME": "/srv/crm", "CRM_EXPLAIN_BATCH_WAIT_MS": raw}

    assert Settings.from_env(environ).batch_wait_ms == expected


@pytest.mark.parametrize("raw", ["-1", "ten", "nan", "1001"])
def test_a_batch_wait_that_is_not_0_to_1000_ms_is_refused_by_name(raw: str) -> None:
    environ = {"CRM_EXPLAIN_HOME": "/srv/crm", "CRM_EXPLAIN_BATCH_WAIT_MS": raw}

    with pytest.raises(ValueError, match="CRM_EXPLAIN_BATCH_WAIT_MS"):
        Settings.from_env(environ)


def test_the_cli_names_a_malformed_variable_without_a_traceback(tmp_path: Path) -> None:
    environ = {"CRM_EXPLAIN_HOME": str(tmp_path), "CRM_EXPLAIN_BATCH_WAIT_MS": "soon"}

    result = CliRunner().invoke(main, ["serve", "--port", "0"], env=environ)

    assert result.exit_code == 2
    assert "CRM_EXPLAIN_BATCH_WAIT_MS must be a number of milliseconds" in result.stderr
    assert "Traceback" not in result.output + result.stderr
