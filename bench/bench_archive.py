"""What archiving costs: explanations/s over HTTP with 8 concurrent clients, without an
archive, with the SQLite archive and with the PostgreSQL archive, side by side in one run;
and how that throughput compares with explaining in-process on one thread x the cores, by
the naive path a data scientist would write (the pipeline's transform + shap.TreeExplainer)
and by crm-explain's own explainer (``ExplainerService.explain``).

Every server batches concurrent explanations with the service's default fill wait
(``CRM_EXPLAIN_BATCH_WAIT_MS``); ``--without-batch-wait`` adds a server without an archive and
one with PostgreSQL's that run every batch at once, to show what the wait buys.

Each database also serves a floor archive (``bench/_floor.py``): the least a fail-closed
archive can do, each batch's JSON committed before it is answered and nothing more. Its cost
is what committing before answering costs on this machine, whatever the design; the
archive's cost beyond it is what the archive's design adds.

    .venv/bin/python bench/bench_archive.py [--seconds 20] [--clients 8] [--workers 2]
                                            [--threads 4] [--without-batch-wait]

Each configuration runs a real gunicorn server (``explainer.server.run_server``) on loopback;
the same requests go to each. The clients are threads of this process on kept-alive
connections with the request bodies encoded beforehand, so that they take as little as
possible of the CPU the server runs on. The in-process baselines run on this process's main
thread with the servers idle, in the same rotating rounds as the servers, so that a drift in
the machine's load moves the numerator and the denominator of each ratio alike. Prints
markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

# the repository's root: this process and the servers import bench._floor and tests from it
sys.path.insert(0, ROOT := str(Path(__file__).resolve().parents[1]))
from bench._common import naive_explainer, quantile
from bench._floor import FloorArchive
from tests._server import connections_per_worker, free_port, workers_of

POSTGRES = os.environ.get(
    "CRM_EXPLAIN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
KEY = "bench-crm-key"


@dataclass(frozen=True)
class Server:
    label: str  # how the tables name it
    archive: str  # none, sqlite, sqlite-floor, postgresql or postgresql-floor
    batch_wait_ms: float | None = None  # None: the service's default


#: The servers measured side by side.
SERVERS = {
    "none": Server("no archive", "none"),
    "sqlite": Server("SQLite", "sqlite"),
    "sqlite-floor": Server("SQLite floor", "sqlite-floor"),
    "postgresql": Server("PostgreSQL", "postgresql"),
    "postgresql-floor": Server("PostgreSQL floor", "postgresql-floor"),
}
#: With ``--without-batch-wait``: servers that run every batch of explanations at once.
WITHOUT_BATCH_WAIT = {
    "none-no-wait": Server("no archive, no batch wait", "none", 0.0),
    "postgresql-no-wait": Server("PostgreSQL, no batch wait", "postgresql", 0.0),
}
#: An in-process baseline: explains the ``i``-th payload.
Call = Callable[[int], object]
SERVER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[5])
    from explainer.config import Settings
    from explainer.server import run_server
    archive = sys.argv[2] != "none"
    if sys.argv[2].endswith("-floor"):
        import explainer.archive
        from bench._floor import FloorArchive
        explainer.archive.open_archive = lambda url, secrets: FloorArchive(url)
    settings = Settings.from_env(archive_enabled=archive)
    run_server(settings, host="127.0.0.1", port=int(sys.argv[1]), workers=int(sys.argv[3]),
               threads=int(sys.argv[4]), echo=lambda line: None)
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


def start_server(
    home: Path, server: Server, url: str | None, args: argparse.Namespace
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_EXPLAIN_")}
    env |= {"CRM_EXPLAIN_HOME": str(home), "CRM_EXPLAIN_API_KEYS": f"crm:{KEY}"}
    if url:
        env["CRM_EXPLAIN_ARCHIVE_URL"] = url
    if server.batch_wait_ms is not None:
        env["CRM_EXPLAIN_BATCH_WAIT_MS"] = str(server.batch_wait_ms)
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SERVER,
            str(port),
            server.archive,
            str(args.workers),
            str(args.threads),
            ROOT,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_ready(f"http://127.0.0.1:{port}")
    return process, port


@dataclass
class Measured:
    done: int = 0
    errors: int = 0
    server_cpu: float = 0.0  # seconds of CPU, the server's master and workers
    database_cpu: float = 0.0  # seconds of CPU, every PostgreSQL process of this machine
    splits: list[list[int]] = field(default_factory=list)  # clients per worker, each round
    latencies: list[float] = field(default_factory=list)  # seconds, each answered request

    def per_explanation_ms(self, seconds: float) -> float:
        return 1e3 * seconds / max(self.done, 1)

    def latency_ms(self, q: float) -> float:
        return 1e3 * quantile(self.latencies, q) if self.latencies else 0.0


@dataclass
class Result:
    """One output space: the single-thread in-process rates and the servers' measurements."""

    in_process: float  # crm-explain's own explainer (ExplainerService.explain), expl/s
    naive: float  # the naive path: pipeline transform + shap.TreeExplainer, expl/s
    measured: dict[str, Measured]


def measure_side_by_side(
    servers: dict[str, tuple[subprocess.Popen[bytes], int]],
    baselines: dict[str, Call],
    bodies: list[bytes],
    args: argparse.Namespace,
) -> tuple[dict[str, Measured], dict[str, float]]:
    """Explanations, errors and CPU per server, and the in-process baselines' rates (calls/s
    on this thread): ``args.rounds`` rounds, each giving every server its share of
    ``args.seconds`` and every baseline half a share, in turn (the order rotating), so drifts
    in the machine's load fall on all of them alike."""
    measured = {name: Measured() for name in servers}
    calls = dict.fromkeys(baselines, 0)
    elapsed = dict.fromkeys(baselines, 0.0)
    for server, port in servers.values():
        hammer(connect_evenly(server.pid, port, args.clients), bodies, 2.0)  # warm-up
    for call in baselines.values():
        timed_calls(call, 2.0)  # warm-up
    names = [*servers, *baselines]
    share = args.seconds / args.rounds
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if name in baselines:
                count, seconds = timed_calls(baselines[name], share / 2)
                calls[name] += count
                elapsed[name] += seconds
                continue
            server, port = servers[name]
            m = measured[name]
            connections = connect_evenly(server.pid, port, args.clients)
            m.splits.append(sorted(connections_per_worker(server.pid, port), reverse=True))
            cpu_before, db_before = process_tree_cpu(server.pid), postgres_cpu()
            count, failed = hammer(connections, bodies, share, m.latencies)
            m.server_cpu += process_tree_cpu(server.pid) - cpu_before
            m.database_cpu += postgres_cpu() - db_before
            m.done += count
            m.errors += failed
    return measured, {name: calls[name] / elapsed[name] for name in baselines}


def connect_evenly(master_pid: int, port: int, clients: int) -> list[http.client.HTTPConnection]:
    """``clients`` kept-alive connections, as evenly spread over the workers as they can be.
    The kernel hashes each new connection to a worker's socket, so 8 of them land 4/4 only a
    quarter of the time, and 8/0 now and then; a worker's Python runs on about one core, so
    the spread moves throughput by up to 40%. The clients reconnect until the spread is even,
    and every server is measured under the same spread."""
    for _ in range(1000):
        connections = [
            http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(clients)
        ]
        for connection in connections:  # answered: accepted by a worker, and kept
            connection.request("GET", "/healthz")
            connection.getresponse().read()
        split = connections_per_worker(master_pid, port)
        if max(split) - min(split) <= 1:
            return connections
        for connection in connections:
            connection.close()
    raise RuntimeError(f"the connections never spread evenly over the workers: {split}")


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process, from /proc (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of a gunicorn master and its workers."""
    try:
        workers = workers_of(pid)
    except OSError:
        workers = []
    return sum(_cpu_seconds(p) for p in [pid, *workers])


def postgres_cpu() -> float:
    """CPU seconds of every ``postgres`` process here (the database shares the machine)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as comm:
                if comm.read().strip() != "postgres":
                    continue
        except OSError:
            continue
        total += _cpu_seconds(int(entry))
    return total


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
    connections: list[http.client.HTTPConnection],
    bodies: list[bytes],
    seconds: float,
    latencies: list[float] | None = None,
) -> tuple[int, int]:
    """Each connection's client explains as fast as it can for ``seconds``; then it closes.
    The time each answered request took goes to ``latencies``."""
    clients = len(connections)
    counts = [0] * clients
    errors = [0] * clients
    took: list[list[float]] = [[] for _ in range(clients)]
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    def client(n: int) -> None:
        connection = connections[n]
        i = n
        while time.monotonic() < deadline:
            start = time.perf_counter()
            connection.request("POST", "/v1/models/churn/explain", bodies[i % len(bodies)], headers)
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                took[n].append(time.perf_counter() - start)
                counts[n] += 1
            else:
                errors[n] += 1
            if response.will_close:
                connection.close()
            i += clients
        connection.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if latencies is not None:
        latencies.extend(t for client_took in took for t in client_took)
    return sum(counts), sum(errors)


def in_process_explainer(home: Path, payloads: list[dict[str, object]], output: str) -> Call:
    """One call of ``ExplainerService.explain`` per explanation, without HTTP or archive."""
    from explainer.service import Decision, ExplainerService
    from model_store import open_store

    service = ExplainerService(open_store(str(home / "models")))
    service.warm_up()
    service.prime()

    def explain(i: int) -> None:
        decision = Decision(customer_id=f"B-{i}", features=payloads[i % len(payloads)])
        service.explain("churn", [decision], output=output, archive=False)  # type: ignore[arg-type]

    return explain


def naive_explainer_of_rows(home: Path, payloads: list[dict[str, object]]) -> Call:
    """The naive in-process path: the churn pipeline's transform +
    ``shap.TreeExplainer(model).shap_values`` on one row, the rows' frames ready."""
    import pandas as pd

    from explainer.service import ExplainerService
    from model_store import open_store

    model = ExplainerService(open_store(str(home / "models"))).model("churn")
    columns = model.schema.feature_names
    frames = [pd.DataFrame([payload])[columns] for payload in payloads]
    naive = naive_explainer(model.estimator)
    return lambda i: naive(frames[i % len(frames)])


def timed_calls(call: Call, seconds: float) -> tuple[int, float]:
    """How many calls of ``call(i)`` this thread made in about ``seconds``, and the time."""
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call(count)
        count += 1
    return count, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30, help="per server and output")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--without-batch-wait",
        action="store_true",
        help="also run servers that explain every batch at once (no archive; PostgreSQL)",
    )
    args = parser.parse_args()
    chosen = SERVERS | (WITHOUT_BATCH_WAIT if args.without_batch_wait else {})
    payloads = rows(200)
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        subprocess.run(
            [sys.executable, "-m", "explainer.cli", "demo", "seed"],
            check=True,
            env=os.environ | {"CRM_EXPLAIN_HOME": str(home)},
            stdout=subprocess.DEVNULL,
        )
        schema, pg_url = postgres_schema()
        sqlite_floor_url = f"sqlite:///{home / 'floor.db'}"
        FloorArchive.create_table(sqlite_floor_url)
        FloorArchive.create_table(pg_url)
        urls = {  # by archive: the servers of one archive share it, as replicas do
            "none": None,
            "sqlite": f"sqlite:///{home / 'bench.db'}",
            "sqlite-floor": sqlite_floor_url,
            "postgresql": pg_url,
            "postgresql-floor": pg_url,
        }
        servers = {
            name: start_server(home, server, urls[server.archive], args)
            for name, server in chosen.items()
        }
        try:
            results: dict[str, Result] = {}
            for output in ("probability", "log_odds"):
                bodies = [
                    json.dumps(
                        {"instances": [{"customer_id": f"B-{i}", "features": p}], "output": output}
                    ).encode()
                    for i, p in enumerate(payloads)
                ]
                baselines = {
                    "in_process": in_process_explainer(home, payloads, output),
                    "naive": naive_explainer_of_rows(home, payloads),
                }
                measured, rates = measure_side_by_side(servers, baselines, bodies, args)
                results[output] = Result(
                    in_process=rates["in_process"], naive=rates["naive"], measured=measured
                )
        finally:
            for server, _ in servers.values():
                server.terminate()
                server.wait(timeout=30)
            drop_schema(schema)
    report(results, chosen, args, cores)


def report(
    results: dict[str, Result], chosen: dict[str, Server], args: argparse.Namespace, cores: int
) -> None:
    one, five, _ = os.getloadavg()
    print(
        f"# Archive cost — {date.today()} — {platform.node()}, {cores} cores, "
        f"Python {platform.python_version()}, load average {one:.1f}/{five:.1f} at the end"
    )
    print(
        f"{args.clients} clients, {args.workers} gunicorn workers x {args.threads} threads, "
        f"{args.seconds:.0f} s per server and output in {args.rounds} rotating rounds, "
        "churn model, one instance per request\n"
    )
    print(
        "Throughput against one thread in-process x cores, measured in the same rounds: "
        "crm-explain's own explainer and the naive path (transform + shap.TreeExplainer). "
        "CPU per explanation: the server's master and workers; every PostgreSQL process.\n"
    )
    print(
        "| output | server | expl/s | cost | / crm-explain x cores | / naive x cores "
        "| CPU/expl, server (ms) | CPU/expl, PostgreSQL (ms) | latency p50 / p99 (ms) "
        "| errors |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for output, result in results.items():
        base = result.measured["none"].done / args.seconds
        own, naive = result.in_process * cores, result.naive * cores
        for name, server in chosen.items():
            m = result.measured[name]
            rate = m.done / args.seconds
            cost = "" if name == "none" else f"{1 - rate / base:+.1%}"
            database = (
                f"{m.per_explanation_ms(m.database_cpu):.2f}"
                if server.archive.startswith("postgresql")
                else ""
            )
            print(
                f"| {output} | {server.label} | {rate:.1f} | {cost} | {rate / own:.2f} "
                f"| {rate / naive:.2f} | {m.per_explanation_ms(m.server_cpu):.2f} "
                f"| {database} | {m.latency_ms(0.5):.1f} / {m.latency_ms(0.99):.1f} "
                f"| {m.errors} |"
            )
    print("\nOne thread in-process (expl/s)\n\n| output | crm-explain | naive |\n|---|---:|---:|")
    for output, result in results.items():
        print(f"| {output} | {result.in_process:.1f} | {result.naive:.1f} |")
    print("\nClients' connections per worker, one split per round (spread evenly first)\n")
    print("| output | server | splits |")
    print("|---|---|---|")
    for output, result in results.items():
        for name in chosen:
            splits = " ".join("/".join(map(str, split)) for split in result.measured[name].splits)
            print(f"| {output} | {name} | {splits} |")


if __name__ == "__main__":
    main()
