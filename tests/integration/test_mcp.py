"""The MCP server driven by the SDK's own client: over streamable HTTP against a real
uvicorn serving the API, and over stdio against a real ``clarion mcp`` process, each tool
call ending in the recipient's inbox (the create task the server published, run from the
real broker)."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
import uvicorn
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from clarion.api.app import create_app
from clarion.api.routers.templates import PreviewRequest
from clarion.api.schedule_schemas import ScheduleFilter
from clarion.core import enqueue, recurring
from clarion.core.recurrence import Recurrence
from clarion.core.schemas import NotificationCreate
from tests.broker import drain
from tests.conftest import make_key, process_env

INBOX = "/v1/me/notifications"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def api_url(runtime):
    """The API (with /mcp) on a real uvicorn in a thread, on this test's runtime."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime=runtime), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def over_http(url: str, key: str) -> Client:
    headers = {"Authorization": f"Bearer {key}"}
    return Client(
        streamable_http_client(f"{url}/mcp", http_client=httpx2.AsyncClient(headers=headers))
    )


def session(client: Client, steps):
    """Run ``steps(client)`` (async) inside a connected client; return what it returns."""

    async def main():
        async with client:
            return await steps(client)

    return anyio.run(main)


def inbox(client, user, who: str) -> list[dict]:
    return client.get(INBOX, headers=user(who)).json()["items"]


def test_tool_schemas_are_the_rest_api_models(runtime, api_url):
    key = make_key(runtime, "notify")

    async def steps(c):
        return {t.name: t for t in (await c.list_tools()).tools}

    tools = session(over_http(api_url, key), steps)
    assert set(tools) == {
        "schedule_notification",
        "cancel_notification",
        "list_schedules",
        "get_notification_status",
        "list_recent_notifications",
        "preview_template",
    }
    schema = tools["schedule_notification"].input_schema
    rest = NotificationCreate.model_json_schema()
    for name, spec in rest["properties"].items():
        assert schema["properties"][name] == spec, name
    assert schema["$defs"]["Recurrence"] == Recurrence.model_json_schema()
    assert tools["list_schedules"].input_schema == ScheduleFilter.model_json_schema()
    preview = tools["preview_template"].input_schema["properties"]
    assert PreviewRequest.model_json_schema()["properties"].items() <= preview.items()
    assert "every weekday at 9:00" in tools["schedule_notification"].description
    assert tools["list_recent_notifications"].annotations.read_only_hint is True


def test_a_send_over_http_lands_in_the_inbox_once_even_when_repeated(
    runtime, api_url, client, user
):
    key = make_key(runtime, "notify")
    args = {
        "recipients": ["ada"],
        "category": "reminders",
        "title": "Call the bank",
        "idempotency_key": "agent-42",
    }

    async def steps(c):
        first = await c.call_tool("schedule_notification", args)
        again = await c.call_tool("schedule_notification", args)
        other = await c.call_tool("schedule_notification", {**args, "title": "Other"})
        return first, again, other

    first, again, other = session(over_http(api_url, key), steps)
    assert not first.is_error and not again.is_error
    [sent] = first.structured_content["accepted"]["notifications"]
    assert again.structured_content["replayed"] is True
    assert again.structured_content["accepted"] == first.structured_content["accepted"]
    assert other.is_error
    assert other.structured_content["type"] == "urn:clarion:problem:idempotency-key-reused"
    drain(runtime.celery)
    assert [n["id"] for n in inbox(client, user, "ada")] == [sent["id"]]

    async def read(c):
        status = await c.call_tool("get_notification_status", {"id": sent["id"]})
        recent = await c.call_tool("list_recent_notifications", {"subscriber_id": "ada"})
        return status, recent

    status, recent = session(over_http(api_url, key), read)
    assert status.structured_content["notification"]["state"] == "created"
    assert [i["title"] for i in recent.structured_content["items"]] == ["Call the bank"]
    assert inbox(client, user, "ada")[0]["read_at"] is None  # reading it changed nothing


def test_a_recurring_schedule_from_an_agent_fires_and_can_be_cancelled(
    runtime, api_url, client, user, producer
):
    key = make_key(runtime, "notify")
    client.put("/v1/subscribers/ada", json={"timezone": "Europe/Berlin"}, headers=producer)
    args = {
        "recipients": ["ada"],
        "category": "reminders",
        "title": "Daily standup",
        "recurrence": {"every": "weekdays at 09:00", "timezone": "subscriber"},
        "name": "standup",
    }

    async def create(c):
        made = await c.call_tool("schedule_notification", args)
        listed = await c.call_tool("list_schedules", {"status": "active"})
        return made, listed

    made, listed = session(over_http(api_url, key), create)
    schedule = made.structured_content["schedule"]
    assert schedule["rrule"].startswith("FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=9")
    assert [s["id"] for s in listed.structured_content["items"]] == [schedule["id"]]
    first = datetime.fromisoformat(schedule["next_occurrences"][0]["local"])
    due = first.replace(tzinfo=UTC) - timedelta(hours=1) + timedelta(seconds=1)  # CET/CEST
    for at in (due - timedelta(hours=14), due, due + timedelta(hours=1)):
        recurring.run(
            sessions=runtime.sessions,
            settings=runtime.settings,
            publish=lambda m: enqueue.enqueue(runtime.celery, *m),
            now=at,
        )
    drain(runtime.celery)
    assert [n["title"] for n in inbox(client, user, "ada")] == ["Daily standup"]

    async def cancel(c):
        return await c.call_tool("cancel_notification", {"id": schedule["id"]})

    cancelled = session(over_http(api_url, key), cancel)
    assert cancelled.structured_content == {"id": schedule["id"], "deleted": "schedule"}
    assert client.get(f"/v1/schedules/{schedule['id']}", headers=producer).status_code == 404


def test_an_agent_can_do_only_what_its_key_can(runtime, api_url):
    notify, admin = make_key(runtime, "notify"), make_key(runtime, "admin")
    answer = httpx.post(f"{api_url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    wrong = httpx.post(f"{api_url}/mcp", json={}, headers={"Authorization": "Bearer clk_not-a-key"})
    assert wrong.status_code == 401

    async def as_notify(c):
        preview = await c.call_tool("preview_template", {"key": "digest", "data": {}})
        invalid = await c.call_tool("schedule_notification", {"recipients": ["ada"]})
        with pytest.raises(MCPError) as refused:
            await c.read_resource("clarion://templates")
        return preview, invalid, refused.value

    preview, invalid, refused = session(over_http(api_url, notify), as_notify)
    assert preview.is_error and preview.structured_content["status"] == 403
    assert invalid.structured_content["type"] == "urn:clarion:problem:validation-error"
    assert {tuple(e["loc"]) for e in invalid.structured_content["errors"]} >= {("category",)}
    assert refused.data["type"] == "urn:clarion:problem:forbidden"

    async def as_admin(c):
        listed = await c.list_resources()
        catalogue = await c.read_resource("clarion://templates")
        rules = await c.read_resource("clarion://rules")
        return listed, catalogue, rules

    listed, catalogue, rules = session(over_http(api_url, admin), as_admin)
    assert {str(r.uri) for r in listed.resources} == {"clarion://templates", "clarion://rules"}
    assert '"digest"' in catalogue.contents[0].text
    assert '"key"' in rules.contents[0].text


def _clarion() -> str:
    found = Path(sys.executable).with_name("clarion")
    return str(found) if found.exists() else shutil.which("clarion")


def test_over_stdio_a_local_assistant_sends_into_the_inbox(runtime, settings, client, user):
    key = make_key(runtime, "notify")
    env = {**os.environ, **process_env(settings.database_url, CLARION_MCP_API_KEY=key)}
    params = StdioServerParameters(command=_clarion(), args=["mcp"], env=env)

    async def steps(c):
        tools = await c.list_tools()
        sent = await c.call_tool(
            "schedule_notification",
            {"recipients": ["bob"], "category": "reminders", "title": "From the assistant"},
        )
        forbidden = await c.call_tool("preview_template", {"key": "digest"})
        return tools, sent, forbidden

    tools, sent, forbidden = session(Client(params), steps)
    assert len(tools.tools) == 6
    assert not sent.is_error, sent.structured_content
    assert forbidden.structured_content["status"] == 403  # a notify key, as over HTTP
    drain(runtime.celery)
    assert [n["title"] for n in inbox(client, user, "bob")] == ["From the assistant"]


def test_clarion_mcp_refuses_to_start_without_a_valid_key(settings):
    import subprocess

    env = {**os.environ, **process_env(settings.database_url, CLARION_MCP_API_KEY="clk_nope")}
    done = subprocess.run(
        [_clarion(), "mcp"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode != 0 and "not a valid API key" in done.stderr
