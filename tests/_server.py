"""Start `crm-explain serve` as a user would, on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROLE_LINE = re.compile(r"\s+(crm|analyst|auditor|admin)\s+(ce_\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    output: list[str] = field(default_factory=list)

    def read_printed_keys(self) -> dict[str, str]:
        """The keys a first start prints once."""
        keys: dict[str, str] = {}
        assert self.process.stdout is not None
        deadline = time.monotonic() + 120
        while len(keys) < 4 and time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = ROLE_LINE.match(line)
            if match:
                keys[match.group(1)] = match.group(2)
        assert len(keys) == 4, "".join(self.output)
        return keys

    def wait_ready(self, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the server exited:\n" + "".join(self.output)
            try:
                if requests.get(f"{self.url}/readyz", timeout=10).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.3)
        raise AssertionError("the server did not become ready:\n" + "".join(self.output))

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Signal the whole process group (gunicorn master and workers) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        self.process.wait(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()


def serve_command(port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "explainer.cli",
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def server_environment(home: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without CRM_EXPLAIN_* settings, then ``home`` and ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CRM_EXPLAIN_")}
    return environ | {"CRM_EXPLAIN_HOME": str(home), **(env or {})}


def start_server(home: Path, *, workers: int = 2, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    process = subprocess.Popen(
        serve_command(port, workers),
        env=server_environment(home, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return Server(process, f"http://127.0.0.1:{port}")


# --- a server's sockets, read from /proc (Linux) ------------------------------------------

LISTEN, ESTABLISHED = "0A", "01"  # TCP states as /proc/net/tcp writes them


def workers_of(master_pid: int) -> list[int]:
    """The pids of a gunicorn master's workers."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return [int(child) for child in children]


def tcp_sockets(state: str, local_port: int) -> set[int]:
    """Inodes of this host's IPv4 TCP sockets in ``state`` on ``local_port``."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        port = int(fields[1].rsplit(":", 1)[1], 16)
        if port == local_port and fields[3] == state:
            inodes.add(int(fields[9]))
    return inodes


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def connections_per_worker(master_pid: int, port: int) -> list[int]:
    """How many of the connections established on ``port`` each worker holds."""
    established = tcp_sockets(ESTABLISHED, port)
    return [len(socket_inodes(pid) & established) for pid in workers_of(master_pid)]
