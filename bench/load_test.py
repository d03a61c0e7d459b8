"""Load test: a real ``crm-explain serve`` under concurrent clients, for errors and memory growth.

    python bench/load_test.py                      # 8 clients, 60 s, at least 10,000 requests
    python bench/load_test.py --seconds 10 --requests 1000 --clients 4   # a quick look

It starts the server on a free loopback port in a temporary CRM_EXPLAIN_HOME (the first start
seeds the demo models), with Prometheus multiprocess mode on, and drives it with threads of
stdlib ``http.client``: mostly single-decision explanations of the three demo models (SHAP, some
LIME), with model listings, cards and health checks in between. It measures the resident memory
(RSS, and PSS: RSS with shared pages split between the processes) of the master and its
workers, read from /proc, after a warm-up and again after ``--requests`` requests, and prints
a markdown summary. It fails (exit 1) on any error or on RSS growth of 10 % or more.

Not run by pytest: it takes minutes.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEYS = {"crm": "load-crm-key", "analyst": "load-analyst-key", "admin": "load-admin-key"}
MODELS = ("churn", "case_priority", "lead_score")
MAX_GROWTH = 0.10


@dataclass(frozen=True)
class Call:
    kind: str
    method: str
    path: str
    body: bytes | None = None
    role: str = "crm"
    expect: int = 200


@dataclass
class Tally:
    """What the clients saw; shared by the threads under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    done: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def record(self, kind: str, seconds: float, error: str | None) -> int:
        with self.lock:
            self.done += 1
            self.latencies[kind].append(seconds)
            if error:
                self.errors[error] += 1
            return self.done


# -- the server ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(home: Path, port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    multiproc = home / "prometheus"
    multiproc.mkdir(parents=True)
    env = os.environ | {
        "CRM_EXPLAIN_HOME": str(home),
        "CRM_EXPLAIN_API_KEYS": ",".join(f"{role}:{key}" for role, key in KEYS.items()),
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
    }
    command = shutil.which("crm-explain") or str(Path(sys.executable).parent / "crm-explain")
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                command,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(port: int, server: subprocess.Popen[bytes], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode} before it was ready")
        try:
            status, _ = request(port, "GET", "/readyz")
            if status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not ready after {timeout:.0f} s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def server_pids(master: int) -> list[int]:
    """The master and every process below it."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children[parent].append(int(entry.name))
    pids, todo = [], [master]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(pids)


def memory_kib(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) summed over ``pids``, in KiB."""
    rss = pss = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss += int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            pss += int(re.search(r"^Pss:\s+(\d+)", rollup, re.M).group(1))  # type: ignore[union-attr]
        except (OSError, AttributeError):
            continue
    return rss, pss


# -- the clients --------------------------------------------------------------------------------
def request(
    port: int, method: str, path: str, body: bytes | None = None, role: str | None = None
) -> tuple[int, bytes]:
    headers = {"Accept": "application/json"}
    if role:
        headers["Authorization"] = f"Bearer {KEYS[role]}"
    if body is not None:
        headers["Content-Type"] = "application/json"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def workload(port: int) -> Callable[[random.Random], Call]:
    """Calls in the proportions a CRM would make them, with real features of each model."""
    features: dict[str, list[dict[str, Any]]] = {}
    for name in MODELS:
        status, raw = request(port, "GET", f"/v1/models/{name}", role="crm")
        assert status == 200, raw
        card = json.loads(raw)
        features[name] = [_example(card["schema"]["features"], i) for i in range(50)]

    def explain(rng: random.Random, name: str, method: str = "shap") -> Call:
        rows = features[name]
        body = {
            "instances": [
                {"customer_id": f"C-{rng.randrange(10**6)}", "features": rng.choice(rows)}
            ],
            "method": method,
        }
        kind = f"explain {name} ({method})"
        return Call(kind, "POST", f"/v1/models/{name}/explain", json.dumps(body).encode())

    mix: list[tuple[float, Callable[[random.Random], Call]]] = [
        (0.50, lambda rng: explain(rng, "churn")),
        (0.10, lambda rng: explain(rng, "case_priority")),
        (0.08, lambda rng: explain(rng, "lead_score")),
        (0.02, lambda rng: explain(rng, "churn", "lime")),
        (0.12, lambda rng: Call("list models", "GET", "/v1/models")),
        (0.08, lambda rng: Call("model card", "GET", f"/v1/models/{rng.choice(MODELS)}")),
        (0.10, lambda rng: Call("healthz", "GET", "/healthz", role="")),
    ]
    weights = [w for w, _ in mix]

    def next_call(rng: random.Random) -> Call:
        return rng.choices([make for _, make in mix], weights)[0](rng)

    return next_call


def _example(specs: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    row: dict[str, Any] = {}
    for spec in specs:
        if spec["type"] == "categorical":
            row[spec["name"]] = rng.choice(spec["categories"])
        else:
            low = spec.get("min", 0.0)
            high = spec.get("max", low + 100.0)
            row[spec["name"]] = round(rng.uniform(low, high), 2)
    return row


def client(
    port: int,
    next_call: Callable[[random.Random], Call],
    tally: Tally,
    stop: threading.Event,
    seed: int,
    on_count: Callable[[int], None],
) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        call = next_call(rng)
        started = time.perf_counter()
        error = None
        try:
            status, raw = request(port, call.method, call.path, call.body, call.role or None)
            if status != call.expect:
                error = f"{call.kind}: HTTP {status} {raw[:200]!r}"
        except Exception as exc:  # every failure counts, whatever its kind
            error = f"{call.kind}: {type(exc).__name__}: {exc}"
        on_count(tally.record(call.kind, time.perf_counter() - started, error))


def run_clients(
    port: int,
    clients: int,
    next_call: Callable[[random.Random], Call],
    *,
    seconds: float,
    at_least: int,
    on_count: Callable[[int], None],
    seed: int,
) -> tuple[Tally, float]:
    """Run until ``seconds`` have passed and at least ``at_least`` requests were answered."""
    tally, stop = Tally(), threading.Event()
    threads = [
        threading.Thread(target=client, args=(port, next_call, tally, stop, seed + i, on_count))
        for i in range(clients)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while time.monotonic() - started < seconds or tally.done < at_least:
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join()
    return tally, time.monotonic() - started


# -- the report ---------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def served_by_metrics(port: int) -> float:
    _, raw = request(port, "GET", "/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in raw.decode().splitlines()
        if line.startswith("crm_explain_http_requests_total{")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--requests",
        type=int,
        default=10_000,
        help="measure memory again after this many requests (run on until then)",
    )
    parser.add_argument("--warmup", type=int, default=300, help="requests before the first measure")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (serve's default)")
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="crm-explain-load-"))
    log = home.parent / f"{home.name}.log"
    port = free_port()
    server = start_server(home, port, args.workers, log)
    try:
        ready_after = wait_ready(port, server, args.ready_timeout)
        next_call = workload(port)
        warm, _ = run_clients(
            port,
            args.clients,
            next_call,
            seconds=0,
            at_least=args.warmup,
            on_count=lambda _: None,
            seed=1,
        )
        pids = server_pids(server.pid)
        before = memory_kib(pids)
        before_metrics = served_by_metrics(port)

        after: list[tuple[int, int]] = []
        lock = threading.Lock()

        def measure_at(count: int) -> None:
            if count == args.requests:
                with lock:
                    after.append(memory_kib(server_pids(server.pid)))

        tally, elapsed = run_clients(
            port,
            args.clients,
            next_call,
            seconds=args.seconds,
            at_least=args.requests,
            on_count=measure_at,
            seed=100,
        )
        end = memory_kib(server_pids(server.pid))
        counted = served_by_metrics(port) - before_metrics - 1  # less this scrape's own count
        at_mark = after[0] if after else end
    finally:
        stop_server(server)

    growth = (at_mark[0] - before[0]) / before[0]
    errors = sum(tally.errors.values()) + sum(warm.errors.values())
    print(
        report(
            args,
            tally,
            elapsed,
            ready_after,
            pids,
            before,
            at_mark,
            end,
            growth,
            errors,
            counted,
            warm,
        )
    )
    for error, n in (tally.errors + warm.errors).most_common(10):
        print(f"- {n} x {error}")
    if args.keep:
        print(f"\nHome kept at {home}; server log at {log}")
    else:
        shutil.rmtree(home, ignore_errors=True)
        log.unlink(missing_ok=True)
    return 0 if errors == 0 and growth < MAX_GROWTH else 1


def report(
    args: argparse.Namespace,
    tally: Tally,
    elapsed: float,
    ready_after: float,
    pids: list[int],
    before: tuple[int, int],
    at_mark: tuple[int, int],
    end: tuple[int, int],
    growth: float,
    errors: int,
    counted: float,
    warm: Tally,
) -> str:
    def mib(kib: int) -> str:
        return f"{kib / 1024:.1f}"

    lines = [
        "## crm-explain load test",
        "",
        f"- server: `crm-explain serve --workers {args.workers}` ({len(pids)} processes: "
        f"master + workers), ready after {ready_after:.1f} s; {os.cpu_count()} CPUs",
        f"- clients: {args.clients} threads, {elapsed:.1f} s after a warm-up of {warm.done} "
        "requests",
        f"- requests: {tally.done} ({tally.done / elapsed:.1f}/s); errors: {errors}; "
        f"counted by /metrics: {counted:.0f}",
        "",
        "| memory of all server processes | RSS MiB | PSS MiB |",
        "|---|---:|---:|",
        f"| after warm-up | {mib(before[0])} | {mib(before[1])} |",
        f"| after {args.requests} requests | {mib(at_mark[0])} | {mib(at_mark[1])} |",
        f"| at the end ({tally.done} requests) | {mib(end[0])} | {mib(end[1])} |",
        f"| growth to {args.requests} requests | {growth:+.1%} "
        f"| {(at_mark[1] - before[1]) / before[1]:+.1%} |",
        "",
        "| request | n | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, values in sorted(tally.latencies.items(), key=lambda kv: -len(kv[1])):
        lines.append(
            f"| {kind} | {len(values)} | {statistics.median(values) * 1000:.1f} "
            f"| {percentile(values, 0.95) * 1000:.1f} | {percentile(values, 0.99) * 1000:.1f} "
            f"| {max(values) * 1000:.1f} |"
        )
    verdict = "PASS" if errors == 0 and growth < MAX_GROWTH else "FAIL"
    lines += [
        "",
        f"**{verdict}**: {errors} errors, RSS growth {growth:+.1%} (limit {MAX_GROWTH:.0%})",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
