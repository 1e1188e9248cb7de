"""The ``notification.created`` events a batch announces: each carries its JSON text,
spliced from one encoding per content, and it must say exactly what the event says."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from clarion.core.create import created_event, created_events
from clarion.core.pubsub import decode, encode

AT = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)
ODD = ['quote"d', "tab\there", "back\\slash", "ünïcødé ✓", "line\nbreak", "plain"]


def row(recipient: str, seq: int, *, title: str, meta: dict, actions=None) -> dict:
    return {
        "id": uuid.uuid4(),
        "request_id": uuid.uuid4(),
        "recipient_id": recipient,
        "seq": seq,
        "actor_id": None,
        "category": "news",
        "type": "release",
        "severity": "medium",
        "title": title,
        "body": 'Read "more"\tnow',
        "url": None,
        "meta": meta,
        "dedupe_key": None,
        "collapse_key": None,
        "expires_at": None,
        "template": None,
        "template_data": None,
        "in_inbox": True,
        "created_at": AT,
        "actions": actions,
    }


def test_each_spliced_text_is_the_event_it_carries():
    shared = {"tags": ["a", "b"], "nested": {"k": "v\u2028"}}
    buttons = [{"id": "open", "label": 'See "it"', "url": "/r?a=1&b=\t", "clicked_at": None}]
    rows = [
        row(r, i + 1, title="v2 is out", meta=shared, actions=buttons) for i, r in enumerate(ODD)
    ]
    rows += [row("plain", 7, title="Другое", meta={})]  # a second content in the batch

    events = created_events(rows)

    assert len(events) == len(rows)
    for event, source in zip(events, rows, strict=True):
        assert json.loads(event.text) == dict(event) == created_event(source)
        assert event["data"]["seq"] == event["cursor"] == source["seq"]
        assert event["recipient"] == source["recipient_id"]
    # The wire format carries the texts: a reader decodes the same events.
    assert decode("\n".join(encode(events))) == [created_event(r) for r in rows]
    # Each line's routing header is the one the gateway reads, as for any other event.
    lines = "\n".join(encode(events)).split("\n")
    assert [line.partition("\t")[0] for line in lines] == [
        encode([dict(e)])[0].partition("\t")[0] for e in events
    ]
    assert [json.loads(line.partition("\t")[0]) for line in lines] == [
        [r["recipient_id"], "notification.created", r["seq"]] for r in rows
    ]


def test_an_event_dict_without_text_is_still_encoded_from_the_dict():
    plain = {"type": "notification.updated", "recipient": "a", "cursor": 3, "data": {"x": 1}}
    assert decode(encode([plain])[0]) == [plain]
