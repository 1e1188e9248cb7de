"""Serving the metrics: the registry a scrape reads, a port of its own, prefork children.

A process that forks workers (``clarion worker`` with the prefork pool, ``clarion api
--workers N``) runs in prometheus_client's multiprocess mode: :func:`enable_multiprocess`
points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory *before* prometheus_client is
imported (the library picks its storage at import), every process writes its samples to
its own file there, a scrape sums the files (:func:`registry`), and a child that exits
removes its live gauges (:func:`process_exited`). A single process keeps the default
in-memory registry.
"""

from __future__ import annotations

import atexit
import glob
import hmac
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def enable_multiprocess() -> str:
    """Use multiprocess mode in this process and the ones it starts; returns the directory.

    An operator's ``PROMETHEUS_MULTIPROC_DIR`` is used (emptied first: files of a previous
    run would be summed in); otherwise a temporary directory, removed at exit.
    """
    if "prometheus_client" in sys.modules and os.environ.get(ENV) is None:
        raise RuntimeError("prometheus_client was imported before multiprocess mode was set")
    path = os.environ.get(ENV)
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        path = tempfile.mkdtemp(prefix="clarion-metrics-")
        owner = os.getpid()

        def remove() -> None:
            if os.getpid() == owner:  # not from a forked child that exits
                shutil.rmtree(path, ignore_errors=True)

        atexit.register(remove)
        os.environ[ENV] = path
    return path


def multiprocess() -> bool:
    return bool(os.environ.get(ENV))


def process_exited(pid: int | None = None) -> None:
    """A process of a multiprocess group is ending: drop its live gauges (its counters and
    histograms stay, so totals never go down)."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid or os.getpid())


def registry(*extra) -> object:
    """The registry a scrape reads: this process's metrics (or, in multiprocess mode, the
    sum of every process's files) plus ``extra`` collectors (the broker's queues)."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client import multiprocess as mp

    if multiprocess():
        reg = CollectorRegistry()
        mp.MultiProcessCollector(reg)
    elif not extra:
        return REGISTRY
    else:
        reg = CollectorRegistry()
        reg.register(_Delegate(REGISTRY))
    for collector in extra:
        reg.register(collector)
    return reg


class _Delegate:
    """The default registry's metrics inside another registry (which adds collectors)."""

    def __init__(self, source) -> None:
        self.source = source

    def collect(self) -> Iterable:
        return self.source.collect()


def render(reg) -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(reg)


def authorized(token: str | None, header: str | None) -> bool:
    """No token configured: anyone may scrape; else ``Authorization: Bearer <token>``."""
    if not token:
        return True
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # one line per scrape is noise
        pass


def _app(reg, token: str | None) -> Callable:
    def app(environ, start_response):
        if environ.get("PATH_INFO") not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: scrape /metrics\n"]
        if not authorized(token, environ.get("HTTP_AUTHORIZATION")):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")],
            )
            return [b"a bearer token is required\n"]
        body = render(reg)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE)])
        return [body]

    return app


def serve(host: str, port: int, reg, token: str | None) -> WSGIServer:
    """Serve ``reg`` at http://host:port/metrics from a daemon thread of this process."""
    server = make_server(host, port, _app(reg, token), _Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="clarion-metrics", daemon=True).start()
    return server
