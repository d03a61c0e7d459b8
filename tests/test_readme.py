"""The README's promises on a fresh home: one command serves, and its example gets its answer."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests._server import start_server

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def fenced_after(marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\s*```\w*\n(.*?)```", README, re.S)
    assert match, marker
    return match.group(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """`crm-explain serve` as the README's first command runs it, on an empty home."""
    server = start_server(tmp_path_factory.mktemp("home"))
    try:
        keys = server.read_printed_keys()
        server.wait_ready()
        yield server.url, keys
    finally:
        server.stop()


@pytest.mark.slow
def test_the_readme_example_gets_the_answer_shown(server: tuple[str, dict[str, str]]) -> None:
    url, keys = server
    words = shlex.split(fenced_after("example-request").replace("\\\n", " "))
    body = json.loads(words[words.index("-d") + 1])
    response = requests.post(
        f"{url}/v1/models/churn/explain",
        json=body,
        headers={"Authorization": f"Bearer {keys['crm']}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    [got] = response.json()["explanations"]
    shown = json.loads(fenced_after("example-answer").replace('"…"', "null").replace("…", ""))
    [expected] = shown["explanations"]
    assert got["rationale"] == expected["rationale"]
    assert got["prediction"]["class"] == expected["prediction"]["class"]
    assert got["prediction"]["score"] == pytest.approx(expected["prediction"]["score"], abs=1e-4)
    assert got["base_value"] == pytest.approx(expected["base_value"], abs=1e-4)
    for shown_attribution, served in zip(
        expected["attributions"][:3], got["attributions"][:3], strict=True
    ):
        assert served["feature"] == shown_attribution["feature"]
        assert served["value"] == shown_attribution["value"]
        assert served["contribution"] == pytest.approx(shown_attribution["contribution"], abs=1e-4)
    assert got["archived"] is True
    assert got["model"]["sha256"].startswith(shown["model"]["sha256"].rstrip("…"))


@pytest.mark.slow
def test_the_first_start_archives_what_it_serves(server: tuple[str, dict[str, str]]) -> None:
    url, keys = server
    report = requests.get(
        f"{url}/v1/audit/verify", headers={"Authorization": f"Bearer {keys['auditor']}"}, timeout=30
    ).json()
    assert report["ok"] and report["records"] >= 1
