"""``clarion api``, ``worker``, ``beat``, ``flower`` and ``ping``: the long-running
processes of a deployment, the metrics port each may serve, and the worker health check."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from clarion import telemetry
from clarion.core import queues
from clarion.settings import LogSettings, Settings


def serve_metrics(settings: Settings, port: int, host: str, app) -> None:
    """The metrics of this process (and of the processes it forks) on a port of their own."""
    from clarion import exposition
    from clarion.workers.queue_metrics import QueueCollector

    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    exposition.serve(host, port, exposition.registry(QueueCollector(app)), token)
    logging.getLogger("clarion").info("metrics on http://%s:%d/metrics", host, port)


def api(args: argparse.Namespace) -> None:
    import uvicorn

    from clarion import exposition, logs
    from clarion.api import server
    from clarion.api.server import BoundedHttpToolsProtocol

    if args.metrics_port:  # the app factory reads it too: no /metrics on the API's port
        os.environ["CLARION_METRICS_PORT"] = str(args.metrics_port)
    settings = Settings()
    if args.workers > 1:  # uvicorn's worker processes write their metrics side by side
        exposition.enable_multiprocess()
    if settings.metrics_port:
        host = settings.metrics_host or args.host or settings.host
        serve_metrics(settings, settings.metrics_port, host, celery_app())
    config = uvicorn.Config(
        "clarion.api.app:create_app",
        factory=True,
        http=BoundedHttpToolsProtocol,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers,
        backlog=server.BACKLOG,
        log_level=settings.log_level.lower(),
        log_config=logs.uvicorn_config(LogSettings().log_format),
    )
    server.run(config)


def celery_app():
    from clarion.runtime import Runtime

    return Runtime(Settings()).celery


def worker_queues(lanes: str | None, explicit: str | None) -> list[str]:
    """The queues of ``--lanes`` (highest lane first) plus ``--queues``; neither: all."""
    from clarion.core.lanes import parse_lanes

    if lanes is None and explicit is None:
        return list(queues.ALL_QUEUES)
    chosen = list(queues.queues_of(parse_lanes(lanes))) if lanes else []
    extra = queues.expand(q.strip() for q in (explicit or "").split(",") if q.strip())
    unknown = sorted(set(extra) - set(queues.ALL_QUEUES))
    if unknown:
        raise ValueError(f"unknown queues {unknown}")
    return chosen + [q for q in extra if q not in chosen]


def worker(args: argparse.Namespace) -> None:
    from clarion import exposition

    consumed = worker_queues(args.lanes, args.queues)
    metrics_port = args.metrics_port or Settings().worker_metrics_port
    if metrics_port:  # before anything imports prometheus_client: prefork children add up
        exposition.enable_multiprocess()
    app = celery_app()
    if metrics_port:
        settings = app.clarion.settings
        serve_metrics(settings, metrics_port, settings.metrics_host or settings.host, app)
    if args.pool and args.pool != "prefork":  # no pool children: this process runs tasks
        from clarion import metrics

        metrics.WORKER_PROCESSES.inc()
    # Wrong channel settings stop the worker here, not at its first send (ValueError).
    states = app.clarion.channels.check()
    app.clarion.channels.close()  # each worker process builds its own after the fork
    logging.getLogger("clarion").info("channels: %s; queues: %s", states, ",".join(consumed))
    argv = ["worker", "--loglevel", Settings().log_level, "-Q", ",".join(consumed)]
    if LogSettings().log_format == "json":
        argv.insert(0, "--quiet")  # no banner: it is printed, not logged, so it is not JSON
    if queues.BULK_QUEUES & set(consumed):
        # A bulk task is a whole page of a broadcast: a worker that prefetched several
        # would sit on them while other workers idle, and a priority or normal task this
        # worker also consumes would wait behind all of them.
        argv += ["--prefetch-multiplier", "1"]
    elif prefetch := queues.prefetch_of(consumed):  # a channel's own (its ChannelSpec)
        argv += ["--prefetch-multiplier", str(prefetch)]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    if args.pool:
        argv += ["--pool", args.pool]
        if args.pool != "prefork":  # no child processes: tracing starts here
            telemetry.setup("clarion-worker")
    if args.hostname:
        argv += ["--hostname", args.hostname]
    sys.exit(app.worker_main(argv) or 0)


def beat(args: argparse.Namespace) -> None:
    from clarion.workers.app import beat_schedule

    argv = ["beat", "--loglevel", Settings().log_level]
    if LogSettings().log_format == "json":
        argv.insert(0, "--quiet")
    if args.schedule:
        argv += ["--schedule", args.schedule]
    app = celery_app()
    telemetry.setup("clarion-beat")
    app.conf.beat_schedule = beat_schedule(app.clarion.settings)
    sys.exit(app.start(argv) or 0)


def flower(args: argparse.Namespace) -> None:
    sys.exit(celery_app().start(["flower", f"--port={args.port}"]) or 0)


def ping(args: argparse.Namespace) -> None:
    """Exit 0 when the worker node answers a ping over the broker (a health check)."""
    replies = celery_app().control.ping(destination=[args.node], timeout=args.timeout)
    if not any(args.node in reply for reply in replies):
        sys.exit(f"clarion: no answer from {args.node} within {args.timeout}s")
    print(f"{args.node}: pong")
