"""`crm-explain serve` with several workers: each worker listens on a socket of its own
(SO_REUSEPORT), so the kernel spreads kept-alive connections over all of them instead of the
fastest worker taking them; a port another server holds is refused before anything loads."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_store import FileSystemStore
from model_store.demo import DemoModel
from tests._server import Server, free_port, start_server
from tests.conftest import register_demo

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads sockets from /proc"
)

LISTEN, ESTABLISHED = "0A", "01"


def workers_of(server: Server) -> list[int]:
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
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
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def two_workers(
    tmp_path_factory: pytest.TempPathFactory, demo_models: dict[str, DemoModel]
) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("listen")
    register_demo(FileSystemStore(str(home / "models")), demo_models)
    server = start_server(home, workers=2, env={"CRM_EXPLAIN_API_KEYS": "crm:a-crm-key"})
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_each_worker_listens_on_a_socket_of_its_own(two_workers: Server) -> None:
    listening = tcp_sockets(LISTEN, port_of(two_workers))
    workers = workers_of(two_workers)
    assert len(workers) == 2
    held = [socket_inodes(pid) & listening for pid in workers]
    assert all(len(inodes) == 1 for inodes in held), held
    assert held[0] != held[1]


@pytest.mark.slow
def test_kept_alive_connections_are_spread_over_the_workers(two_workers: Server) -> None:
    port = port_of(two_workers)
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(32)]
    try:
        for connection in connections:  # answered: the connection was accepted and is kept
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
        established = tcp_sockets(ESTABLISHED, port)
        per_worker = [len(socket_inodes(pid) & established) for pid in workers_of(two_workers)]
    finally:
        for connection in connections:
            connection.close()
    assert sum(per_worker) == 32
    # the kernel hashes each connection to a worker: fewer than 6 of 32 on either one has a
    # chance of about 1 in 10,000; on one shared socket a single worker often took them all
    assert min(per_worker) >= 6, per_worker


def test_a_port_another_server_holds_is_refused_before_anything_loads(tmp_path: Path) -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_EXPLAIN_")}
        result = subprocess.run(
            [sys.executable, "-m", "explainer.cli", "serve", "--port", str(port)],
            env=env | {"CRM_EXPLAIN_HOME": str(tmp_path / "home")},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2, result.stderr
    assert f"port: {port} on 127.0.0.1 is in use by another server" in result.stderr
    assert not (tmp_path / "home").exists(), "nothing is prepared for a server that cannot listen"
