"""Start-up: ``crm-explain serve`` from exec to ``/readyz`` 200 on a seeded home, and the memory
of each gunicorn worker (RSS and, where the kernel reports it, PSS: the pages shared with the
preloaded master counted in shares).

    .venv/bin/python bench/bench_startup.py [--runs 5] [--workers 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, median

CLI = str(Path(sys.executable).with_name("crm-explain"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def memory(pid: int) -> dict[str, float]:
    """RSS and PSS of one process, in MiB (from /proc)."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_mib"] = int(line.split()[1]) / 1024
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss_mib"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def children(pid: int) -> list[int]:
    try:
        import psutil

        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except ImportError:  # pragma: no cover - psutil comes with distributed
        return []


def one_start(env: dict[str, str], workers: int) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/readyz"
    start = time.perf_counter()
    server = subprocess.Popen(
        [CLI, "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while not ready(url):
            if server.poll() is not None:
                raise RuntimeError("crm-explain serve exited before it was ready")
            if time.perf_counter() - start > 60:
                raise RuntimeError("not ready within 60 s")
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        time.sleep(1.0)  # let every worker answer once and settle
        for _ in range(2 * workers):
            ready(url)
        master = memory(server.pid)
        worker_memory = [memory(pid) for pid in children(server.pid)]
        return {"seconds": seconds, "master": master, "workers": worker_memory}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="crm-explain-startup-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_EXPLAIN_")}
    env |= {"CRM_EXPLAIN_HOME": str(home), "CRM_EXPLAIN_API_KEYS": "crm:bench-startup-key"}
    subprocess.run([CLI, "demo", "seed"], env=env, check=True, stdout=subprocess.DEVNULL)
    one_start(env, args.workers)  # the first start creates the archive; not timed
    runs = [one_start(env, args.workers) for _ in range(args.runs)]
    seconds = [r["seconds"] for r in runs]
    last = runs[-1]
    print(f"# start-up, crm-explain serve --workers {args.workers}; machine: {machine()}")
    print(
        f"exec -> /readyz 200: median {median(seconds):.2f} s, "
        f"min {min(seconds):.2f} s, max {max(seconds):.2f} s over {args.runs} starts"
    )
    print(f"master: {last['master']}")
    for i, worker in enumerate(last["workers"]):
        print(f"worker {i + 1}: {worker}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
