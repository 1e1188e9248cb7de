"""The create message's two forms: ids and recipients (a request), or recipients alone (a
topic fan-out's page), whose ids the worker derives."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from clarion.core.fanout import batch_message
from clarion.core.schemas import CreateMessage, FanoutMessage, NotificationContent
from clarion.ids import derived_id, new_id

AT = datetime(2026, 12, 6, 22, 0, 0, 123000, tzinfo=UTC)
CONTENT = NotificationContent(category="news", title="v2")


def fanout_message() -> FanoutMessage:
    return FanoutMessage(request_id=new_id(), accepted_at=AT, topic="t", content=CONTENT)


def test_a_fan_out_page_travels_without_ids_and_arrives_with_the_derived_ones():
    fanout = fanout_message()
    wire = json.loads(
        json.dumps(batch_message(fanout, ["ada", "bob", "ünï"]).model_dump(mode="json"))
    )
    assert wire["recipients"] == ["ada", "bob", "ünï"] and "items" not in wire

    message = CreateMessage.model_validate(wire)
    assert message.recipients is None
    assert message.items == [
        (derived_id(fanout.request_id, r, AT), r) for r in ("ada", "bob", "ünï")
    ]
    assert CreateMessage.model_validate(wire).items == message.items  # a redelivery: same ids
    assert (message.lane, message.content.title) == ("bulk", "v2")


def test_once_validated_it_is_an_ordinary_message_and_dumps_as_one():
    page = batch_message(fanout_message(), ["ada"]).model_dump(mode="json")
    message = CreateMessage.model_validate(page)
    dumped = message.model_dump(mode="json")
    assert "recipients" not in dumped
    assert dumped["items"] == [[str(message.items[0][0]), "ada"]]
    assert CreateMessage.model_validate(dumped) == message


def test_a_message_with_ids_is_the_same_on_the_wire_as_before():
    nid = uuid.uuid4()
    message = CreateMessage(
        request_id=new_id(), accepted_at=AT, items=[(nid, "a")], content=CONTENT
    )
    dumped = message.model_dump(mode="json")
    assert list(dumped) == ["request_id", "accepted_at", "items", "content", "lane", "producer"]
    assert CreateMessage.model_validate(dumped).items == [(nid, "a")]


def test_ids_and_recipients_together_are_refused():
    page = batch_message(fanout_message(), ["ada"]).model_dump(mode="json")
    with pytest.raises(ValidationError, match="either items or recipients"):
        CreateMessage.model_validate({**page, "items": [[str(uuid.uuid4()), "bob"]]})


def test_an_unstorable_recipient_is_refused_before_any_id_is_derived():
    page = batch_message(fanout_message(), ["ada"]).model_dump(mode="json")
    with pytest.raises(ValidationError, match="recipients"):
        CreateMessage.model_validate({**page, "recipients": ["ok", "nul\x00"]})
