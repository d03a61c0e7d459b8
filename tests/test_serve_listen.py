"""`crm-explain serve` with several workers: each worker listens on a socket of its own
(SO_REUSEPORT), so the kernel spreads kept-alive connections over all of them instead of the
fastest worker taking them; a port another server holds is refused before anything loads."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from explainer.exceptions import ValidationError
from explainer.server import _claim_port
from model_store import FileSystemStore
from model_store.demo import DemoModel
from tests._server import (
    LISTEN,
    Server,
    connections_per_worker,
    free_port,
    serve_command,
    server_environment,
    socket_inodes,
    start_server,
    tcp_sockets,
    workers_of,
)
from tests.conftest import register_demo

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads sockets from /proc"
)


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
        server.wait_ready()  # one worker answers; the other may still be binding
        deadline = time.monotonic() + 60
        while len(tcp_sockets(LISTEN, port_of(server))) < 2:
            assert time.monotonic() < deadline, "the second worker never listened"
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_each_worker_listens_on_a_socket_of_its_own(two_workers: Server) -> None:
    listening = tcp_sockets(LISTEN, port_of(two_workers))
    workers = workers_of(two_workers.process.pid)
    assert len(workers) == 2
    held = [socket_inodes(pid) & listening for pid in workers]
    assert all(len(inodes) == 1 for inodes in held), held
    assert held[0] != held[1]


@pytest.mark.slow
def test_kept_alive_connections_are_spread_over_the_workers(two_workers: Server) -> None:
    port = port_of(two_workers)
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(32)]

    def health(connection: http.client.HTTPConnection) -> int:
        connection.request("GET", "/healthz")  # answered: accepted by a worker, and kept
        response = connection.getresponse()
        response.read()
        return response.status

    try:
        with ThreadPoolExecutor(max_workers=32) as pool:  # within the 2 s keep-alive
            assert set(pool.map(health, connections)) == {200}
        per_worker = connections_per_worker(two_workers.process.pid, port)
    finally:
        for connection in connections:
            connection.close()
    assert sum(per_worker) == 32
    # the kernel hashes each connection to a worker: fewer than 6 of 32 on either one has a
    # chance of about 1 in 10,000; on one shared socket a single worker often took them all
    assert min(per_worker) >= 6, per_worker


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_another_server_holds_is_refused_before_anything_loads(
    tmp_path: Path, workers: int
) -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        result = subprocess.run(
            serve_command(port, workers),
            env=server_environment(tmp_path / "home"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2, result.stderr
    assert f"port: {port} on 127.0.0.1 is in use by another server" in result.stderr
    assert not (tmp_path / "home").exists(), "nothing is prepared for a server that cannot listen"


def test_the_port_is_held_for_the_workers_while_the_models_load() -> None:
    port = free_port()
    options, claim = _claim_port("127.0.0.1", port, workers=2)
    assert options == {"reuse_port": True} and claim is not None
    try:
        with pytest.raises(OSError, match="Address already in use"):
            socket.create_server(("127.0.0.1", port))  # another server
        with socket.create_server(("127.0.0.1", port), reuse_port=True):  # a worker
            pass
    finally:
        claim.close()


def test_an_earlier_servers_lingering_sockets_do_not_stop_a_restart() -> None:
    port = free_port()
    with socket.socket() as lingering:  # bound, not listening: like a connection in TIME_WAIT
        lingering.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lingering.bind(("127.0.0.1", port))

        options, claim = _claim_port("127.0.0.1", port, workers=2)

    assert options == {"reuse_port": True} and claim is None  # the workers bind beside it


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_an_ipv6_host_is_claimed_as_gunicorn_binds_it() -> None:
    port = free_port()
    try:
        _, claim = _claim_port("[::1]", port, workers=2)
    except ValidationError as exc:  # no IPv6 loopback on this host
        pytest.skip(exc.message)
    assert claim is not None and claim.family == socket.AF_INET6
    claim.close()
