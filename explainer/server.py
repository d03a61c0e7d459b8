"""``crm-explain serve``: the API under gunicorn.

The app and the models load once in the master (``preload_app``) so workers share their
memory; each worker opens its own archive connections after the fork, since database
connections do not survive one.

Workers are threaded (``gthread``): while one request waits for the archive's commit
(an ``fsync``), the worker's other threads go on computing their explanations; requests
that wait while others are explained are explained together next (``ExplainerService``),
and records that reach the archive together share one transaction (group commit). With one
thread per worker, the worker would idle through every commit. Several workers each listen
on a socket of their own (``_claim_port``).
"""

from __future__ import annotations

import errno
import gc
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from explainer.config import Settings
from explainer.exceptions import ValidationError
from explainer.keys import ROLES, KeyRing


def prepare_home(settings: Settings, echo: Callable[[str], None]) -> None:
    """On a first start: seed the demo models into an empty store and make API keys."""
    from model_store import open_store
    from model_store.demo import seed_demo

    settings.home.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.store_url)
    if not store.names():
        echo(
            "The model store is empty: training the demo models (churn, case_priority, lead_score)…"
        )
        for record in seed_demo(store):
            echo(f"  {record.ref} ready")
    if settings.api_keys:
        return
    ring = KeyRing.load(settings.home)
    if ring.empty:
        echo("API keys for this service (shown once; stored only as hashes):")
        for role in ROLES:
            _, plain = ring.create(role)
            echo(f"  {role:<8} {plain}")


#: Threads per worker: enough for requests to share archive commits; more only adds
#: contention for the GIL, since explanations are CPU-bound.
DEFAULT_THREADS = 4


def run_server(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    echo: Callable[[str], None],
    threads: int = DEFAULT_THREADS,
) -> None:
    listen, port_claim = _claim_port(host, port, workers)
    _share_metrics_between_workers(settings, workers)  # before prometheus_client is imported
    from gunicorn.app.base import BaseApplication

    from explainer.api import create_app
    from explainer.methods.shap_method import import_shap_without_plots
    from explainer.service import ExplainerService

    prepare_home(settings, echo)
    service = ExplainerService.from_settings(replace(settings, archive_enabled=False))
    service.warm_up()
    import_shap_without_plots()  # before priming, which is the first to use shap
    service.prime()
    app = create_app(settings, service=service)
    # The models and primed explainers live for the whole run: frozen, a worker's garbage
    # collections do not write to their pages, so the workers keep sharing them with the master.
    gc.freeze()

    def post_fork(server: Any, worker: Any) -> None:
        from explainer.archive import Secrets, open_archive

        if settings.archive_enabled:
            service.archive = open_archive(
                settings.archive_url, Secrets.load_or_create(settings.home)
            )

    def worker_exit(server: Any, worker: Any) -> None:
        service.close()

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options = {
                "bind": f"{host}:{port}",
                "workers": workers,
                "worker_class": "gthread",
                "threads": threads,
                "preload_app": True,
                "timeout": 60,
                "graceful_timeout": 10,
                "post_fork": post_fork,
                "worker_exit": worker_exit,
                "accesslog": None,
                # gunicorn's control socket lives outside the home, in a path shared by every
                # instance of this user: a second instance would take it from the first
                "control_socket_disable": True,
                **listen,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    echo(
        f"crm-explain listening on http://{host}:{port} with {workers} worker(s) "
        f"x {threads} thread(s)"
    )
    try:
        Server().run()
    finally:
        if port_claim is not None:
            port_claim.close()


def _claim_port(host: str, port: int, workers: int) -> tuple[dict[str, Any], socket.socket | None]:
    """gunicorn's listening options, and a socket that keeps the port until the workers listen.

    Several workers each listen on a socket of their own (SO_REUSEPORT), so that the kernel
    spreads new connections evenly over them. On one shared socket the worker that wins the
    race accepts most of them: a few kept-alive clients (a CRM backend's connection pool) then
    all land on one worker, whose Python runs on about one core (8 clients, 2 workers: one
    worker took all 8 connections or 7 of them in most rounds; see docs/benchmarks.md). The
    workers bind after the models load, and a port shared that way would let a second server
    in silently, so the port is checked first (for any number of workers) and then held by a
    bound socket that never listens: one that shares ports only with this server's workers.
    A worker that stops drops the connections still queued on its socket. Port 0 (any free
    port) would give each worker a port of its own: one shared socket then."""
    if port == 0:
        return {}, None
    try:
        _bind(host, port, socket.SO_REUSEADDR).close()  # as gunicorn binds: past TIME_WAIT
    except socket.gaierror as exc:
        raise ValidationError.for_field("host", f"{host!r} cannot be resolved") from exc
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ValidationError.for_field(
                "port", f"{port} on {host} is in use by another server"
            ) from exc
        raise ValidationError.for_field(
            "host", f"cannot listen on {host}:{port} ({exc.strerror})"
        ) from exc
    if workers < 2 or not hasattr(socket, "SO_REUSEPORT"):
        return {}, None
    try:  # without SO_REUSEADDR, which would let any server bind beside a socket not listening
        claim: socket.socket | None = _bind(host, port, socket.SO_REUSEPORT)
    except OSError:  # only an earlier server's connections in TIME_WAIT: the workers bind anyway
        claim = None
    return {"reuse_port": True}, claim


def _bind(host: str, port: int, option: int) -> socket.socket:
    """A socket with ``option`` set, bound (not listening) to ``host:port`` as gunicorn binds
    it: IPv6 for an IPv6 literal, else IPv4."""
    from gunicorn.util import is_ipv6

    address = host.strip("[]")
    bound = socket.socket(socket.AF_INET6 if is_ipv6(address) else socket.AF_INET)
    try:
        bound.setsockopt(socket.SOL_SOCKET, option, 1)
        bound.bind((address, port))
    except OSError:
        bound.close()
        raise
    return bound


def _share_metrics_between_workers(settings: Settings, workers: int) -> None:
    """With several workers, /metrics must add up all of them: prometheus-client's
    multiprocess mode, in a fresh folder under the home unless one is configured."""
    import os
    import shutil

    if workers < 2 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    folder = settings.home / "metrics"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
