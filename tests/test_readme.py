"""The README's promises on a fresh home: one command serves, and its example gets its answer."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fenced_after(marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\s*```\w*\n(.*?)```", README, re.S)
    assert match, marker
    return match.group(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """`crm-explain serve` as the README's first command runs it, on an empty home."""
    home = tmp_path_factory.mktemp("home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_EXPLAIN_")}
    env["CRM_EXPLAIN_HOME"] = str(home)
    command = [sys.executable, "-m", "explainer.cli", "serve", "--port", str(port), "--workers", "2"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    output: list[str] = []
    try:
        keys = read_keys(process, output)
        wait_ready(url, process, output)
        yield url, keys
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
        if process.stdout is not None:
            process.stdout.close()


def read_keys(process: subprocess.Popen[str], output: list[str]) -> dict[str, str]:
    keys: dict[str, str] = {}
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    while len(keys) < 4 and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        match = re.match(r"\s+(crm|analyst|auditor|admin)\s+(ce_\S+)", line)
        if match:
            keys[match.group(1)] = match.group(2)
    assert len(keys) == 4, "".join(output)
    return keys


def wait_ready(url: str, process: subprocess.Popen[str], output: list[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, "".join(output)
        try:
            if requests.get(f"{url}/readyz", timeout=10).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.3)
    raise AssertionError("the server did not become ready:\n" + "".join(output))


@pytest.mark.slow
def test_the_readme_example_gets_the_answer_shown(server: tuple[str, dict[str, str]]) -> None:
    url, keys = server
    words = shlex.split(fenced_after("example-request").replace("\\\n", " "))
    body = json.loads(words[words.index("-d") + 1])
    response = requests.post(f"{url}/v1/models/churn/explain", json=body,
                             headers={"Authorization": f"Bearer {keys['crm']}"}, timeout=30)
    assert response.status_code == 200, response.text
    [got] = response.json()["explanations"]
    shown = json.loads(fenced_after("example-answer").replace('"…"', "null").replace("…", ""))
    [expected] = shown["explanations"]
    assert got["rationale"] == expected["rationale"]
    assert got["prediction"]["class"] == expected["prediction"]["class"]
    assert got["prediction"]["score"] == pytest.approx(expected["prediction"]["score"], abs=1e-4)
    assert got["base_value"] == pytest.approx(expected["base_value"], abs=1e-4)
    for shown_attribution, served in zip(expected["attributions"][:3], got["attributions"][:3]):
        assert served["feature"] == shown_attribution["feature"]
        assert served["value"] == shown_attribution["value"]
        assert served["contribution"] == pytest.approx(shown_attribution["contribution"], abs=1e-4)
    assert got["archived"] is True
    assert got["model"]["sha256"].startswith(shown["model"]["sha256"].rstrip("…"))


@pytest.mark.slow
def test_the_first_start_archives_what_it_serves(server: tuple[str, dict[str, str]]) -> None:
    url, keys = server
    report = requests.get(f"{url}/v1/audit/verify",
                          headers={"Authorization": f"Bearer {keys['auditor']}"}, timeout=30).json()
    assert report["ok"] and report["records"] >= 1
