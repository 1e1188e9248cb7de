"""The ``clarion`` command: api, worker, beat, flower, migrate, keys, token, ui-link,
dead-letters, failed-requests, rules, vapid, mcp, dev."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable
from datetime import datetime

from clarion import telemetry
from clarion.cli_keys import keys as _keys
from clarion.cli_records import dead_letters as _dead_letters
from clarion.cli_records import failed_requests as _failed_requests
from clarion.core import queues
from clarion.settings import LogSettings, Settings


def _serve_metrics(settings: Settings, port: int, host: str, app) -> None:
    """The metrics of this process (and of the processes it forks) on a port of their own."""
    from clarion import exposition
    from clarion.workers.queue_metrics import QueueCollector

    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    exposition.serve(host, port, exposition.registry(QueueCollector(app)), token)
    logging.getLogger("clarion").info("metrics on http://%s:%d/metrics", host, port)


def _api(args: argparse.Namespace) -> None:
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
        _serve_metrics(settings, settings.metrics_port, host, _celery_app())
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


def _celery_app():
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


def _worker(args: argparse.Namespace) -> None:
    from clarion import exposition

    consumed = worker_queues(args.lanes, args.queues)
    metrics_port = args.metrics_port or Settings().worker_metrics_port
    if metrics_port:  # before anything imports prometheus_client: prefork children add up
        exposition.enable_multiprocess()
    app = _celery_app()
    if metrics_port:
        settings = app.clarion.settings
        _serve_metrics(settings, metrics_port, settings.metrics_host or settings.host, app)
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


def _beat(args: argparse.Namespace) -> None:
    from clarion.workers.app import beat_schedule

    argv = ["beat", "--loglevel", Settings().log_level]
    if LogSettings().log_format == "json":
        argv.insert(0, "--quiet")
    if args.schedule:
        argv += ["--schedule", args.schedule]
    app = _celery_app()
    telemetry.setup("clarion-beat")
    app.conf.beat_schedule = beat_schedule(app.clarion.settings)
    sys.exit(app.start(argv) or 0)


def _flower(args: argparse.Namespace) -> None:
    sys.exit(_celery_app().start(["flower", f"--port={args.port}"]) or 0)


def _ping(args: argparse.Namespace) -> None:
    """Exit 0 when the worker node answers a ping over the broker (a health check)."""
    replies = _celery_app().control.ping(destination=[args.node], timeout=args.timeout)
    if not any(args.node in reply for reply in replies):
        sys.exit(f"clarion: no answer from {args.node} within {args.timeout}s")
    print(f"{args.node}: pong")


def _retention(args: argparse.Namespace) -> None:
    import json

    from clarion.core import retention
    from clarion.db.session import make_engine, make_sessionmaker

    settings = Settings()
    sessions = make_sessionmaker(make_engine(settings.database_url))
    report = retention.run(sessions=sessions, settings=settings, budget_seconds=args.budget)
    print(json.dumps({**report.deleted, "done": report.done, "seconds": round(report.seconds, 1)}))


def _migrate(args: argparse.Namespace) -> None:
    from clarion.db.migrate import behind, upgrade

    if args.check:
        gap = behind(Settings().database_url)
        if gap:
            current, heads = (", ".join(sorted(r)) or "none" for r in gap)
            sys.exit(f"clarion: the database is at {current}; this version needs {heads}")
        print("database is up to date")
        return
    upgrade(Settings().database_url, args.revision)
    print(f"database migrated to {args.revision}")


def _token(args: argparse.Namespace) -> None:
    from clarion.core.auth import issue_user_token

    print(issue_user_token(Settings(), args.subscriber_id, args.ttl))


def _ui_link(args: argparse.Namespace) -> None:
    from clarion.core.auth import ui_login_token

    settings = Settings()
    base = (args.base or f"http://{settings.host}:{settings.port}").rstrip("/")
    token = ui_login_token(settings, args.subscriber_id, args.ttl)
    print(f"{base}/ui/#login={token}")


def _rules(args: argparse.Namespace) -> None:
    import json

    from clarion.engine.runner import build_rule, run_rule
    from clarion.runtime import Runtime

    runtime = Runtime(Settings())
    rules = runtime.rules
    if args.rules_command == "list":
        for key in sorted(rules.classes):
            cls, rule = rules.classes[key], build_rule(rules, key, runtime)
            trigger = (
                f"event {cls.event_type}" if cls.event_type else f"every {rule.schedule_seconds}s"
            )
            state = "on" if rule.config.enabled else "off"
            print(f"{key}\t{cls.pack}\t{state}\t{trigger}\t{cls.description}")
        return
    if args.key not in rules:
        sys.exit(f"clarion: no rule {args.key!r}")
    result = run_rule(
        args.key,
        runtime=runtime,
        rules=rules,
        trigger="manual",
        as_of=args.as_of,
        dry_run=args.rules_command == "dry-run",
    )
    print(json.dumps(dataclasses.asdict(result), indent=2, default=str))
    runtime.close()
    if result.error:
        sys.exit(1)


def _vapid(args: argparse.Namespace) -> None:
    from clarion.channels.push.sender import generate_vapid_keys

    private, public = generate_vapid_keys()
    lines = f"CLARION_VAPID_PRIVATE_KEY={private}\nCLARION_VAPID_PUBLIC_KEY={public}\n"
    if args.write:
        # Never overwrite: a new key pair orphans every browser subscribed with the old one.
        try:
            fd = os.open(args.write, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            sys.exit(f"clarion: {args.write} exists; not replacing its VAPID keys")
        with os.fdopen(fd, "w") as f:
            f.write(lines)
        print(f"# wrote {args.write}", file=sys.stderr)
    else:
        print(lines, end="")
    print("# also set CLARION_VAPID_SUBJECT=mailto:you@example.com", file=sys.stderr)


def _mcp(args: argparse.Namespace) -> None:
    from clarion import mcp

    if not mcp.available():
        sys.exit("clarion: the MCP server needs the mcp extra: pip install 'clarion[mcp]'")
    settings = Settings()
    if settings.mcp_api_key is None:
        sys.exit("clarion: set CLARION_MCP_API_KEY to an API key (clarion keys create NAME)")
    from clarion.core.auth import AuthError
    from clarion.mcp.server import serve_stdio
    from clarion.runtime import Runtime

    runtime = Runtime(settings)
    try:
        serve_stdio(runtime, settings.mcp_api_key.get_secret_value())
    except AuthError:
        sys.exit("clarion: CLARION_MCP_API_KEY is not a valid API key")
    finally:
        runtime.close()


def _dev(args: argparse.Namespace) -> None:
    from clarion.dev import run

    run(data_dir=args.data_dir, host=args.host, port=args.port, demo=args.demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clarion", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, Callable] = {}

    def add(name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        commands[name] = func
        p = sub.add_parser(name, help=help)
        p.set_defaults(func=func)
        return p

    p = add("api", _api, "run the HTTP API (uvicorn)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--metrics-port", type=int, help="serve /metrics on this port instead of the API's"
    )
    p = add("worker", _worker, "run a Celery worker")
    p.add_argument(
        "--lanes",
        help="consume only these lanes' create and deliver queues: priority,normal,bulk "
        "(default: every queue, priority lane first)",
    )
    p.add_argument(
        "--queues",
        help="comma-separated queue names (added to --lanes'); deliver.* = every channel's",
    )
    p.add_argument("--concurrency", type=int)
    p.add_argument("--pool", choices=["prefork", "threads", "solo", "gevent", "eventlet"])
    p.add_argument("--hostname")
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics (every pool process, and the queues) on this port",
    )
    p = add("ping", _ping, "ping a worker node over the broker (exit 1: no answer)")
    p.add_argument("node", help="the worker's node name, e.g. priority@HOSTNAME (--hostname)")
    p.add_argument("--timeout", type=float, default=5.0)
    p = add("beat", _beat, "run celery-beat (the periodic scheduler)")
    p.add_argument("--schedule", help="beat schedule file")
    p = add("flower", _flower, "run Flower, Celery's monitoring UI (needs the `ops` extra)")
    p.add_argument("--port", type=int, default=5555)
    p = add("ui-link", _ui_link, "print a sign-in link to the notification centre (/ui/)")
    p.add_argument("subscriber_id")
    p.add_argument("--ttl", type=int, default=3600, help="seconds the link stays valid")
    p.add_argument("--base", help="the API's public URL (default http://HOST:PORT)")
    p = add("retention", _retention, "delete now what has outlived its retention period")
    p.add_argument(
        "--budget", type=float, help="seconds to go on (default CLARION_RETENTION_BUDGET_SECONDS)"
    )
    p = add("migrate", _migrate, "apply database migrations")
    p.add_argument("revision", nargs="?", default="head")
    p.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 unless the database is at this version's head "
        "(an init container waiting for the migrate job)",
    )
    p = add("keys", _keys, "manage producer API keys")
    keys = p.add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key and print it once")
    create.add_argument("name")
    create.add_argument("--scope", action="append", choices=["notify", "admin"], required=True)
    create.add_argument(
        "--rate", help='requests per window, e.g. "600/minute" (default CLARION_API_KEY_RATE_LIMIT)'
    )
    create.add_argument(
        "--daily-quota",
        type=int,
        help="recipients per day, 0 = none (default CLARION_API_KEY_DAILY_QUOTA)",
    )
    keys.add_parser("list", help="list keys (never their secrets) with their limits")
    limits = keys.add_parser("limits", help="change a key's rate limit or daily quota")
    limits.add_argument("id", type=int)
    limits.add_argument("--rate", help='e.g. "600/minute", or "default"')
    limits.add_argument("--daily-quota", help='recipients per day (0 = none), or "default"')
    revoke = keys.add_parser("revoke", help="revoke a key")
    revoke.add_argument("id", type=int)
    p = add("token", _token, "print a user token for a subscriber (testing, integrations)")
    p.add_argument("subscriber_id")
    p.add_argument(
        "--ttl",
        type=int,
        help="seconds (default CLARION_TOKEN_TTL_SECONDS); above "
        "CLARION_USER_TOKEN_MAX_LIFETIME_SECONDS it is refused",
    )
    p = add("dead-letters", _dead_letters, "list, inspect, replay or purge dead letters")
    dl = p.add_subparsers(dest="dl_command", required=True)
    for name, helptext in (
        ("list", "newest first"),
        ("show", "one dead letter with its attempts"),
        ("replay", "replay one (ID) or every open one the filter selects (audited)"),
        ("purge", "delete one (ID) or every one the filter selects (audited)"),
    ):
        cmd = dl.add_parser(name, help=helptext)
        if name == "show":
            cmd.add_argument("id", type=int)
        elif name in ("replay", "purge"):
            cmd.add_argument("id", type=int, nargs="?")
            cmd.add_argument("--all", action="store_true", help="act without a filter")
        cmd.add_argument("--channel")
        cmd.add_argument("--since", type=datetime.fromisoformat, help="ISO time")
        cmd.add_argument("--until", type=datetime.fromisoformat, help="ISO time")
        cmd.add_argument("--error", help="text the error contains")
        cmd.add_argument("--status", choices=["open", "replayed", "all"], default="open")
        cmd.add_argument("--limit", type=int, default=50)
    p = add("failed-requests", _failed_requests, "requests the worker could not store")
    fr = p.add_subparsers(dest="failed_command", required=True)
    cmd = fr.add_parser("list", help="newest first: id, time, kind, producer, reason")
    cmd.add_argument("--producer", help='only this producer ("api-key:<name>#<id>")')
    cmd.add_argument("--limit", type=int, default=50)
    cmd = fr.add_parser("show", help="one, with the copy of the request (escaped JSON)")
    cmd.add_argument("request_id")
    p = add("rules", _rules, "the rule engine: list rules, run or dry-run one")
    rules = p.add_subparsers(dest="rules_command", required=True)
    rules.add_parser("list", help="every rule with its pack, state and trigger")
    for name in ("run", "dry-run"):
        cmd = rules.add_parser(name, help=f"{name} one rule now, in this process")
        cmd.add_argument("key")
        cmd.add_argument("--as-of", type=datetime.fromisoformat, help="the rule's clock (ISO)")
    p = add("vapid", _vapid, "web push identity")
    vapid = p.add_subparsers(dest="vapid_command", required=True)
    generate = vapid.add_parser("generate", help="print a new VAPID key pair as env lines")
    generate.add_argument("--write", metavar="FILE", help="write them to FILE (mode 0600)")
    add("mcp", _mcp, "serve the MCP tools to a local AI assistant over stdio")
    p = add("dev", _dev, "run everything in one process with no services (SQLite)")
    p.add_argument("--data-dir", default=".clarion")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--demo", action="store_true", help="seed data so every built-in rule fires (rule engine)"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    from clarion import logs

    logs.configure(LogSettings().log_format)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ValueError as exc:  # settings refused (e.g. the default secret outside dev)
        sys.exit(f"clarion: {exc}")


if __name__ == "__main__":
    main()
