"""Fail closed: kill the server with SIGKILL under concurrent load, again and again. Every
explanation whose response reached a client is in the archive, and the archive verifies."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from explainer.archive import Secrets, open_archive
from model_store.demo import demo_frame
from tests._server import Server, start_server
from tests.archive.conftest import BACKENDS, fresh_backend

CLIENTS = 6
ROUNDS = 3
LOAD_SECONDS = 2.0
KEY = "crash-test-crm-key"


def churn_rows(n: int) -> list[dict[str, object]]:
    frame = demo_frame("churn", n, seed=11)
    features = frame.drop(columns=["customer_id", "gender", "age_band", "churn"])
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in features.to_dict("records")
    ]


def load_then_kill(server: Server, rows: list[dict[str, object]], round_: int) -> list[str]:
    """CLIENTS threads explain as fast as they can; SIGKILL lands in the middle of it."""
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {KEY}"
        i = 0
        while not stop.is_set():
            body = {
                "instances": [
                    {
                        "customer_id": f"R{round_}-T{number}-{i}",
                        "features": rows[(number * 97 + i) % len(rows)],
                    }
                ],
                "output": "log_odds",
            }
            i += 1
            try:
                response = session.post(
                    f"{server.url}/v1/models/churn/explain", json=body, timeout=10
                )
            except requests.RequestException:
                continue  # the server is gone: this request got no answer
            if response.status_code == 200:
                with lock:
                    answered.extend(e["id"] for e in response.json()["explanations"])
        session.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(LOAD_SECONDS)
    server.stop(signal.SIGKILL)
    time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    return answered


@pytest.mark.slow
@pytest.mark.parametrize("kind", BACKENDS)
def test_sigkill_under_load_loses_no_answered_explanation(kind: str, tmp_path: Path) -> None:
    rows = churn_rows(50)
    home = tmp_path / "home"
    with fresh_backend(kind, tmp_path) as backend:
        env = {"CRM_EXPLAIN_API_KEYS": f"crm:{KEY}", "CRM_EXPLAIN_ARCHIVE_URL": backend.url}
        answered: list[str] = []
        for round_ in range(ROUNDS):
            server = start_server(home, env=env)
            server.wait_ready()
            in_round = load_then_kill(server, rows, round_)
            assert len(in_round) >= 5, "too little load to mean anything"
            answered += in_round
        archive = open_archive(backend.url, Secrets.load_or_create(home))
        try:
            for explanation_id in answered:
                assert archive.get(explanation_id)["kind"] == "explanation"
            report = archive.verify()
            assert report.ok, report.first_bad
            assert report.records >= len(answered)
        finally:
            archive.close()
