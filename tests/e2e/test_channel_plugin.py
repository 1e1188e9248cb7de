"""A channel from another distribution, added by entry point only, in real processes.

``tests/plugins/clarion_testchannel`` is a separate package with its own pyproject. It is
installed here the way pip installs one: a ``*.dist-info`` with its entry points (read
from that pyproject) on the processes' path, next to its source. Clarion's code names it
nowhere; the API, the preferences, routing, the worker's queues and its retries find it
through the ``clarion.channels`` entry point group.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import tomllib
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from clarion.channels import registry
from clarion.db.models import Delivery
from tests.channels import outcomes
from tests.conftest import process_env
from tests.e2e.procs import CLARION, Proc, free_port, quiet_hours_now, run, wait_for, wait_ready

pytestmark = pytest.mark.e2e

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "clarion_testchannel"
KEY = "testchannel"


def install(site: Path) -> str:
    """The plugin's dist-info in ``site``; returns the PYTHONPATH that holds it."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    info = site / f"clarion_testchannel-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = [
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items())
        for group, points in project["entry-points"].items()
    ]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return f"{site}:{PLUGIN}"


class Peer:
    """The channel's peer: records each JSON body; answers from a script, then 200."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.script: deque[tuple[int, dict[str, str]]] = deque()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                status, headers = peer.script.popleft() if peer.script else (200, {})
                if status == 200:
                    peer.received.append(body)
                self.send_response(status)
                for name, value in {**headers, "content-length": "0"}.items():
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def peer():
    made = Peer()
    yield made
    made.close()


@pytest.fixture
def env(runtime, peer, tmp_path) -> dict[str, str]:
    return process_env(
        runtime.settings.database_url,
        CLARION_LOG_LEVEL="WARNING",
        CLARION_RETRY_BACKOFF_SECONDS="0.05",
        CLARION_TESTCHANNEL__URL=peer.url,
        PYTHONPATH=install(tmp_path / "site"),
    )


def rows(runtime, nid) -> list[Delivery]:
    with runtime.sessions() as s:
        return list(s.scalars(select(Delivery).where(Delivery.notification_id == nid)))


def test_an_entry_point_channel_goes_through_the_whole_pipeline(env, runtime, peer, tmp_path):
    assert KEY not in registry.names()  # this test process does not have the plugin
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key = run(["keys", "create", "e2e", "--scope", "notify"], env).strip().splitlines()[-1]
    me = {who: {"Authorization": f"Bearer {run(['token', who], env).strip()}"} for who in "abc"}
    worker = Proc(["worker", "--concurrency", "1"], env, tmp_path / "worker.log")
    api = Proc(["api", "--port", str(port)], env, tmp_path / "api.log")
    try:
        wait_ready(base, api)
        # The API's schemas and the subscriber's preferences list it.
        schema = httpx.get(f"{base}/openapi.json").json()["components"]["schemas"]
        assert (
            KEY
            in schema["NotificationCreate"]["properties"]["channels"]["anyOf"][0]["items"]["enum"]
        )
        listed = httpx.get(f"{base}/v1/me/preferences", headers=me["a"]).json()["channels"]
        assert listed[KEY] == {"enabled": True, "locked": False}
        # b switches it off; c is inside quiet hours.
        off = {"channels": {KEY: False}}
        assert httpx.put(f"{base}/v1/me/preferences", json=off, headers=me["b"]).is_success
        quiet = quiet_hours_now()
        assert httpx.put(f"{base}/v1/me/preferences", json=quiet, headers=me["c"]).is_success
        # The peer is busy at first: one 503 with Retry-After, then it takes it.
        peer.script.append((503, {"Retry-After": "1"}))
        sent = httpx.post(
            f"{base}/v1/notifications",
            json={
                "recipients": ["a", "b", "c"],
                "category": "plugins",
                "title": "Hi <b>a</b>",
                "channels": ["in_app", KEY],
            },
            headers={"Authorization": f"Bearer {key}"},
        )
        assert sent.status_code == 202, sent.text
        ids = {n["recipient"]: n["id"] for n in sent.json()["notifications"]}
        wait_for(lambda: len(peer.received) == 1, 30, "the plugin channel's send", worker)
    finally:
        api.stop()
        worker.stop()
    [body] = peer.received
    assert (body["recipient"], body["title"]) == ("a", "Hi <b>a</b>")
    [a] = [r for r in rows(runtime, ids["a"]) if r.channel == KEY]
    assert a.status == "sent" and a.provider_ref == body["delivery"]
    assert outcomes(runtime, a.id) == ["retry", "sent"]
    [b] = [r for r in rows(runtime, ids["b"]) if r.channel == KEY]
    assert (b.status, b.last_error) == ("skipped", "opted out")
    [c] = [r for r in rows(runtime, ids["c"]) if r.channel == KEY]
    assert c.status == "deferred" and c.last_error.startswith("deferred: quiet hours")


def test_wrong_plugin_settings_stop_the_worker_at_start(env, tmp_path):
    bad = {**env, "CLARION_TESTCHANNEL__TIMEOUT": "-1"}
    done = subprocess.run(
        [*CLARION, "worker"],
        env={**os.environ, **bad},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert (
        "CLARION_TESTCHANNEL__TIMEOUT" in done.stderr
        and "-1" not in done.stderr.split("CLARION_TESTCHANNEL__TIMEOUT")[1].splitlines()[0]
    )
