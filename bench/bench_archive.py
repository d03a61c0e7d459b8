"""What archiving costs: explanations/s over HTTP with 8 concurrent clients, without an
archive, with the SQLite archive and with the PostgreSQL archive, side by side in one run.

    .venv/bin/python bench/bench_archive.py [--seconds 20] [--clients 8] [--workers 2]

Each configuration runs a real gunicorn server (``explainer.server.run_server``) on loopback;
the same requests go to each. Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from datetime import date
from pathlib import Path

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests._server import free_port

POSTGRES = os.environ.get(
    "CRM_EXPLAIN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
KEY = "bench-crm-key"
SERVER = textwrap.dedent(
    """
    import sys
    from explainer.config import Settings
    from explainer.server import run_server
    archive = sys.argv[2] != "none"
    settings = Settings.from_env(archive_enabled=archive)
    run_server(settings, host="127.0.0.1", port=int(sys.argv[1]), workers=int(sys.argv[3]),
               echo=lambda line: None)
    """
)


def rows(n: int) -> list[dict[str, object]]:
    from model_store.demo import demo_frame

    frame = demo_frame("churn", n, seed=5).drop(
        columns=["customer_id", "gender", "age_band", "churn"]
    )
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]


def postgres_schema() -> tuple[str, str]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with create_engine(POSTGRES).begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES).update_query_dict({"options": f"-csearch_path={schema}"})
    return schema, url.render_as_string(hide_password=False)


def drop_schema(schema: str) -> None:
    with create_engine(POSTGRES).begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def run_config(
    home: Path,
    archive: str,
    url: str | None,
    args: argparse.Namespace,
    payloads: list[dict[str, object]],
    output: str,
) -> tuple[float, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_EXPLAIN_")}
    env |= {"CRM_EXPLAIN_HOME": str(home), "CRM_EXPLAIN_API_KEYS": f"crm:{KEY}"}
    if url:
        env["CRM_EXPLAIN_ARCHIVE_URL"] = url
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), archive, str(args.workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
        hammer(base, payloads, output, args.clients, 2.0)  # warm-up
        done, errors = hammer(base, payloads, output, args.clients, args.seconds)
        return done / args.seconds, errors
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_ready(base: str) -> None:
    for _ in range(300):
        try:
            if requests.get(f"{base}/readyz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not start")


def hammer(
    base: str, payloads: list[dict[str, object]], output: str, clients: int, seconds: float
) -> tuple[int, int]:
    counts = [0] * clients
    errors = [0] * clients
    deadline = time.monotonic() + seconds

    def client(n: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {KEY}"
        i = n
        while time.monotonic() < deadline:
            body = {
                "instances": [
                    {"customer_id": f"B-{n}-{i}", "features": payloads[i % len(payloads)]}
                ],
                "output": output,
            }
            response = session.post(f"{base}/v1/models/churn/explain", json=body, timeout=30)
            if response.status_code == 200:
                counts[n] += 1
            else:
                errors[n] += 1
            i += clients
        session.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts), sum(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    payloads = rows(200)
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        subprocess.run(
            [sys.executable, "-m", "explainer.cli", "demo", "seed"],
            check=True,
            env=os.environ | {"CRM_EXPLAIN_HOME": str(home)},
            stdout=subprocess.DEVNULL,
        )
        print(
            f"# Archive cost — {date.today()} — {platform.node()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}"
        )
        print(
            f"{args.clients} clients, {args.workers} gunicorn workers, "
            f"{args.seconds:.0f} s per cell, churn model, one instance per request\n"
        )
        print(
            "| output | no archive (expl/s) | SQLite (expl/s) | SQLite cost "
            "| PostgreSQL (expl/s) | PostgreSQL cost | errors |"
        )
        print("|---|---|---|---|---|---|---|")
        for output in ("probability", "log_odds"):
            base, e0 = run_config(home, "none", None, args, payloads, output)
            sqlite_url = f"sqlite:///{home / f'bench-{output}.db'}"
            lite, e1 = run_config(home, "sqlite", sqlite_url, args, payloads, output)
            schema, pg_url = postgres_schema()
            try:
                pg, e2 = run_config(home, "postgresql", pg_url, args, payloads, output)
            finally:
                drop_schema(schema)
            print(
                f"| {output} | {base:.1f} | {lite:.1f} | {1 - lite / base:+.1%} | {pg:.1f} | "
                f"{1 - pg / base:+.1%} | {e0 + e1 + e2} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
