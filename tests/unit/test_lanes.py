"""Lane names and choices, the worker's queue selection, and the fan-out's derived ids."""

from __future__ import annotations

import shlex
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uuid6
import yaml

from clarion.cli import build_parser
from clarion.cli_processes import worker_queues
from clarion.core import queues
from clarion.core.lanes import lane_for, parse_lanes
from clarion.ids import derived_id, new_id


def test_severity_and_type_pick_the_lane():
    assert lane_for("critical") == lane_for("high") == "priority"
    assert lane_for("medium") == lane_for("low", "link_expired") == "normal"
    assert lane_for("critical", "digest") == "bulk"


def test_lanes_parse_in_priority_order_and_unknown_ones_are_refused():
    assert parse_lanes("bulk, priority") == ("priority", "bulk")
    with pytest.raises(ValueError, match="unknown lanes"):
        parse_lanes("priority,urgent")
    with pytest.raises(ValueError):
        parse_lanes(" , ")


def test_a_worker_consumes_every_queue_by_default_priority_lane_first():
    every = worker_queues(None, None)
    assert sorted(every) == sorted(queues.ALL_QUEUES) and len(set(every)) == len(every)
    assert every[0] == "create.priority" and every[-6:] == [
        "create.bulk",
        "deliver.email.bulk",
        "deliver.push.bulk",
        "deliver.webhook.bulk",
        "deliver.chat.bulk",
        "deliver.sms.bulk",
    ]
    assert every.index("deliver.webhook.priority") < every.index("create")


def test_lanes_select_their_queues_and_queues_add_to_them():
    assert worker_queues("priority", None) == [
        "create.priority",
        "deliver.email.priority",
        "deliver.push.priority",
        "deliver.webhook.priority",
        "deliver.chat.priority",
        "deliver.sms.priority",
    ]
    normal = worker_queues("normal", "engine,periodic,create")
    # No deliver.in_app: the inbox row is the in-app delivery, nothing is ever sent there.
    assert normal[:6] == [
        "create",
        "deliver.email",
        "deliver.push",
        "deliver.webhook",
        "deliver.chat",
        "deliver.sms",
    ]
    assert normal[6:] == ["engine", "periodic"]
    with pytest.raises(ValueError, match="unknown queues"):
        worker_queues(None, "create,nope")
    # Deploy commands name no channel: deliver.* is every channel's normal-lane queue.
    assert worker_queues(None, "deliver.*,dead_letter") == [
        "deliver.email",
        "deliver.push",
        "deliver.webhook",
        "deliver.chat",
        "deliver.sms",
        "dead_letter",
    ]
    args = build_parser().parse_args(["worker", "--lanes", "priority", "--concurrency", "1"])
    assert (args.lanes, args.queues, args.concurrency) == ("priority", None, 1)


def test_derived_ids_are_uuid7_at_the_accepted_time_and_stable_per_request_and_recipient():
    request, at = new_id(), datetime(2030, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    a = derived_id(request, "ada", at)
    assert a == derived_id(request, "ada", at)
    assert a.version == 7 and a.variant == uuid.RFC_4122
    assert uuid6.UUID(int=a.int).time == int(at.timestamp() * 1000)
    others = {derived_id(request, f"user-{i}", at) for i in range(10_000)}
    assert len(others) == 10_000 and a not in others
    assert derived_id(new_id(), "ada", at) != a
    # Time-ordered like any UUIDv7: a later request's ids sort after this one's.
    assert derived_id(request, "ada", at + timedelta(milliseconds=1)) > max(others | {a})


def _consumed(commands: list[list[str]]) -> set[str]:
    consumed = set()
    for argv in commands:
        if argv[:2] == ["clarion", "worker"]:
            args = build_parser().parse_args(argv[1:])
            consumed |= set(worker_queues(args.lanes, args.queues))
    return consumed


def test_the_deploy_files_run_a_worker_for_every_queue_and_one_for_the_priority_lane_alone():
    root = Path(__file__).resolve().parents[2] / "deploy"
    procfile = [
        shlex.split(line.split(":", 1)[1])
        for line in (root / "Procfile").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    compose = [
        service["command"]
        for service in yaml.safe_load((root / "compose.yaml").read_text())["services"].values()
        if "command" in service
    ]
    for commands in (procfile, compose):
        assert _consumed(commands) == set(queues.ALL_QUEUES)
        assert ["clarion", "worker", "--lanes", "priority"] in [c[:4] for c in commands]
