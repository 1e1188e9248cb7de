"""``clarion dev``: the whole platform in one process, no services.

SQLite for the data, Celery on kombu's SQLAlchemy transport over a second SQLite file
(durable: an accepted request survives a restart), a threaded in-process worker with
embedded beat, in-memory pub/sub, and the API on uvicorn in a thread. Ctrl-C stops
gracefully: the worker finishes what it runs and returns unstarted messages to the queue.
"""

from __future__ import annotations

import shlex
import threading
import time
from pathlib import Path

import uvicorn
from sqlalchemy import create_engine, inspect, text

from clarion import logs
from clarion.api.app import create_app
from clarion.api.server import BoundedHttpToolsProtocol
from clarion.core import queues
from clarion.core.auth import create_api_key, hash_key, issue_user_token, ui_login_token
from clarion.db.migrate import upgrade
from clarion.db.models import ApiKey
from clarion.db.session import transaction
from clarion.runtime import Runtime
from clarion.settings import LogSettings, Settings
from clarion.workers.app import beat_schedule

DEV_USER = "dev-user"


def _dev_api_key(runtime: Runtime, path: Path) -> str:
    """Reuse the dev key kept in the data dir (dev only), or mint a new admin key."""
    if path.exists():
        secret = path.read_text().strip()
        with runtime.sessions() as session:
            if session.query(ApiKey).filter_by(key_hash=hash_key(secret), revoked_at=None).first():
                return secret
    with transaction(runtime.sessions) as session:
        _, secret = create_api_key(session=session, name="dev", scopes=["admin"])
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def _forget_acked_messages(broker_url: str) -> None:
    # kombu's SQL transport keeps fetched messages with visible = false, acked or not.
    # At start nothing is in flight, so those rows are history; drop them so the file
    # does not grow forever.
    engine = create_engine(broker_url.removeprefix("sqla+"), hide_parameters=True)
    with engine.begin() as conn:
        if inspect(conn).has_table("kombu_message"):
            conn.execute(text("DELETE FROM kombu_message WHERE visible = 0"))
    engine.dispose()


# The banner's sign-in link lasts this long; `clarion ui-link` prints a new one.
LINK_SECONDS = 3600


def banner(settings: Settings, api_key: str, token: str) -> str:
    base = f"http://{settings.host}:{settings.port}"
    link = f"{base}/ui/#login={ui_login_token(settings, DEV_USER, LINK_SECONDS)}"
    body = '{"recipients":["' + DEV_USER + '"],"category":"system","title":"Hello from Clarion"}'
    return "\n".join(
        [
            "",
            f"Clarion (embedded) is running at {base}  (docs: {base}/docs)",
            f"  your inbox:  {link}",
            "               (signs you in as 'dev-user'; valid for an hour; a new one: "
            "CLARION_MODE=embedded clarion ui-link dev-user)",
            f"  data:        {settings.data_dir}",
            f"  API key:     {api_key}",
            f"  user token:  {token}   (subscriber {DEV_USER!r})",
            "",
            "Send a notification:",
            f"  curl -s -X POST {base}/v1/notifications -H 'Authorization: Bearer {api_key}' "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}",
            "Read the inbox:",
            f"  curl -s {base}/v1/me/notifications -H 'Authorization: Bearer {token}'",
            "",
        ]
    )


def run(
    data_dir: str | Path = ".clarion", host: str = "127.0.0.1", port: int = 8000, demo=False
) -> None:
    extra = {}
    if demo:
        from clarion import demo as demo_data

        extra["rules"] = demo_data.rules_config(Path(data_dir).resolve(), DEV_USER)
    settings = Settings.embedded(data_dir, host=host, port=port, **extra)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    _forget_acked_messages(settings.broker_url)
    runtime = Runtime(settings)
    if demo:
        for event in demo_data.seed(settings.data_dir, runtime.sessions, DEV_USER):
            runtime.celery.send_task("clarion.events.ingest", args=[event], queue=queues.ENGINE)
        demo_data.seed_schedule(runtime, DEV_USER)
        print(
            "demo: links, campaigns, traffic and activity events seeded; the rules run every "
            f"{demo_data.EVERY} s and notify {DEV_USER!r}; a recurring schedule reminds "
            "them every minute",
            flush=True,
        )
    api_key = _dev_api_key(runtime, settings.data_dir / "dev-api-key")
    token = issue_user_token(settings, DEV_USER, ttl_seconds=7 * 24 * 3600)

    app = create_app(runtime=runtime)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            http=BoundedHttpToolsProtocol,
            log_level="warning",
            log_config=logs.uvicorn_config(LogSettings().log_format),
            timeout_graceful_shutdown=5,
        )
    )
    api_thread = threading.Thread(target=server.run, name="clarion-api", daemon=True)
    api_thread.start()
    # The banner's link is for clicking: print it once the API accepts connections.
    while not server.started:
        if not api_thread.is_alive():
            raise SystemExit(f"clarion dev: the API could not start on {host}:{port}")
        time.sleep(0.01)
    print(banner(settings, api_key, token), flush=True)
    runtime.celery.conf.beat_schedule = beat_schedule(settings)  # the embedded beat
    try:
        runtime.celery.worker_main(
            [
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                "4",
                "--loglevel",
                "WARNING",
                "--queues",
                ",".join(queues.ALL_QUEUES),
                "--hostname",
                "dev@%h",
                "--without-mingle",
                "--without-gossip",
                "--beat",
                "--schedule",
                str(settings.data_dir / "beat-schedule"),
            ]
        )
    finally:
        app.state.hub.shutdown_from_thread()  # live streams end first, or they hold uvicorn
        server.should_exit = True
        api_thread.join(timeout=10)
        runtime.close()
