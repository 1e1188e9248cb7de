"""The ``create`` step: persist notifications and deliveries in one transaction.

Called by the ``create`` task, and by nothing else: the API and ``clarion.enqueue`` only
enqueue. One task may carry several requests (the API coalesces concurrent small ones);
they share one transaction and one statement of each kind, which is what makes small
requests cheap.

Safe to run twice: ids come from the sender, existing ids and dedupe keys are skipped under
the recipients' row locks, and after commit the still-pending deliveries of every request
are dispatched again (the deliver step ignores what is no longer pending).
"""

from __future__ import annotations

import logging
import operator
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from clarion import logs, metrics
from clarion.channels import INBOX, Channels, registry
from clarion.core import collapse, enqueue, hold, pubsub
from clarion.core.route import Router
from clarion.core.schemas import CreateMessage, NotificationContent, NotificationPublic
from clarion.core.templates import InboxTexts
from clarion.db import notifications, roundtrip, subscribers
from clarion.db.dialect import is_postgres
from clarion.db.session import transaction
from clarion.ids import utcnow
from clarion.settings import Settings

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    def deliver(self, channel: str, delivery_ids: list[uuid.UUID], *, lane: str) -> None: ...


class Publisher(Protocol):
    def publish_many(self, events: list[dict[str, Any]]) -> None: ...


@dataclass
class Created:
    """What one run inserted, and what must happen after its commit."""

    notifications: list[dict[str, Any]] = field(default_factory=list)
    skipped_existing: int = 0
    skipped_dedupe: int = 0
    # Items with a future send_at, stored for the release task instead (clarion.core.hold).
    scheduled: int = 0
    # (channel, lane) → pending delivery ids: each request's deliveries go out on its lane.
    to_dispatch: dict[tuple[str, str], list[uuid.UUID]] = field(default_factory=dict)
    # Inbox events of older notifications this run replaced (collapse_key), in cursor order.
    events: list[dict[str, Any]] = field(default_factory=list)
    # (category, lane) → notifications inserted, counted in the metrics after commit.
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)


# A rerun of a message looks for deliveries an earlier run left pending on any of these.
EXTERNAL = frozenset(registry.external())


def persist(
    *,
    session: Session,
    messages: list[CreateMessage],
    settings: Settings,
    channels: Channels,
    look: bool = True,
) -> Created:
    """Insert the requests' new notifications and their deliveries; the caller commits.
    ``look`` False: the ids are not looked up, the insert fails on any stored already."""
    now = utcnow()
    counts = Counter(r for m in messages for _, r in m.items)
    recipients = sorted(counts)
    all_ids = [nid for m in messages for nid, _ in m.items] if look else None
    reserved, existing = _lock_then_look(session, counts, all_ids, now)
    seqs = dict(reserved.seqs)
    taken = _dedupe_taken(session, messages)
    result = Created()
    rows, deliveries = [], []
    # Per request, the channels its recipients were routed to (preferences differ).
    channels_of: list[set[str]] = [set() for _ in messages]
    router = Router(
        session=session,
        channels=channels,
        settings=settings,
        recipients=recipients,
        locked=reserved,
        now=now,
    )
    texts = InboxTexts(
        session=session,
        messages=messages,
        locales=reserved.locales,
        default_locale=settings.default_locale,
    )
    for message, used in zip(messages, channels_of, strict=True):
        content, dedupe = message.content, message.content.dedupe_key
        shared = _shared_row(message)  # copied per recipient, its own fields then set
        before = len(rows)
        for nid, recipient in message.items:
            if existing and nid in existing:
                result.skipped_existing += 1
                used.update(EXTERNAL)
                continue
            if dedupe:
                if (recipient, dedupe) in taken:
                    result.skipped_dedupe += 1
                    continue
                taken.add((recipient, dedupe))
            seqs[recipient] += 1
            routed = router.route(nid, recipient, content)
            row = shared.copy()
            row["id"], row["recipient_id"], row["seq"] = nid, recipient, seqs[recipient]
            row["title"], row["body"] = texts.of(message, recipient)
            row["in_inbox"] = INBOX in routed.channels
            rows.append(row)
            deliveries += routed.rows
            used.update(routed.channels)
            if routed.in_inbox:
                result.notifications.append(row)
        if len(rows) > before:
            result.counts[(message.content.category, enqueue.lane_of(message))] += (
                len(rows) - before
            )
    unused = {r: seqs[r] for r in recipients if seqs[r] != reserved.seqs[r] + counts[r]}
    subscribers.set_seqs(session=session, seqs=unused)
    notifications.insert_many(session=session, rows=rows, deliveries=deliveries)
    if log.isEnabledFor(logging.DEBUG):
        for row in rows:
            with logs.about(row["request_id"], notification_id=row["id"]):
                log.debug("notification %s inserted", row["id"])
    result.events = collapse.replace_older(session=session, rows=rows, seqs=seqs, now=now)
    result.to_dispatch = _pending_external(session, messages, channels_of)
    return result


def _lock_then_look(
    session: Session, counts: dict[str, int], ids: list[uuid.UUID] | None, now: datetime
) -> tuple[subscribers.Reserved, set[uuid.UUID]]:
    """Lock the recipients, then see which ids are stored already: after the lock, so a
    concurrent run of the same message waits for it and then sees that run's rows. One
    number is reserved per item; the ones a rerun or a dedupe key leaves unused are given
    back by the caller. On PostgreSQL both go out in one round trip. ``ids`` None: lock
    only (nothing is taken for stored)."""
    if ids is None:
        return subscribers.reserve_seqs(session=session, counts=counts, now=now), set()
    if is_postgres(session):
        return roundtrip.together(
            session,
            subscribers.reserve_query(counts=counts, now=now),
            notifications.existing_query(ids=ids),
        )
    reserved = subscribers.reserve_seqs(session=session, counts=counts, now=now)
    return reserved, notifications.existing_ids(session=session, ids=ids)


def _dedupe_taken(session: Session, messages: list[CreateMessage]) -> set[tuple[str, str]]:
    keys = {m.content.dedupe_key for m in messages if m.content.dedupe_key}
    if not keys:
        return set()
    recipients = {r for m in messages if m.content.dedupe_key for _, r in m.items}
    return notifications.dedupe_pairs(session=session, keys=keys, recipients=recipients)


def _pending_external(
    session: Session, messages: list[CreateMessage], channels_of: list[set[str]]
) -> dict[tuple[str, str], list[uuid.UUID]]:
    """Pending external deliveries of every request, this run's and earlier runs', by
    channel and lane (one query per lane; a task's requests usually share one)."""
    external = {c for channels in channels_of for c in channels} - {INBOX}
    by_lane: dict[str, list[uuid.UUID]] = defaultdict(list)
    for m, channels in zip(messages, channels_of, strict=True):
        if set(channels) & external:
            by_lane[enqueue.lane_of(m)] += [nid for nid, _ in m.items]
    grouped: dict[tuple[str, str], list[uuid.UUID]] = defaultdict(list)
    for lane, ids in by_lane.items():
        for delivery_id, channel in notifications.pending_deliveries(
            session=session, notification_ids=ids, channels=external
        ):
            grouped[(channel, lane)].append(delivery_id)
    return dict(grouped)


def stored_actions(content: NotificationContent) -> list[dict[str, Any]] | None:
    """The actions as the ``actions`` column keeps them (None: none)."""
    if not content.actions:
        return None
    return [{**a.model_dump(mode="json"), "clicked_at": None} for a in content.actions]


def _shared_row(message: CreateMessage) -> dict[str, Any]:
    """A notification row of the message with what its recipients share; the id,
    recipient, seq, title and body (rendered per locale when sent by template) and
    in_inbox are each row's own, set in this order of keys."""
    content = message.content
    return {
        "id": None,
        "request_id": message.request_id,
        "recipient_id": None,
        "seq": None,
        "actor_id": content.actor_id,
        "category": content.category,
        "type": content.type,
        "severity": content.severity,
        "title": None,
        "body": None,
        "url": content.url,
        "meta": content.metadata,
        "dedupe_key": content.dedupe_key,
        "collapse_key": content.collapse_key,
        "expires_at": content.expires_at,
        "template": content.template,
        "template_data": content.data,
        "in_inbox": None,
        # The time the sender accepted it: the id encodes the same instant.
        "created_at": message.accepted_at,
        # One object shared by the message's rows.
        "actions": stored_actions(content),
    }


def created_event(row: dict[str, Any]) -> dict[str, Any]:
    """The ``notification.created`` event for one new inbox row."""
    return _event(row, _public(row))


def created_events(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``notification.created`` events of these rows, as :func:`created_event` makes
    them. A fan-out batch's rows differ only in id, recipient and seq, so the public form
    is validated once per distinct content and copied with each row's id and seq
    (validating per recipient was a large share of the worker's time), and its JSON is
    encoded once too: each event carries its wire line, the shared part spliced with the
    row's id, seq and recipient (:class:`pubsub.Encoded`). Figures: docs/benchmarks/."""
    shared: dict[tuple, tuple[dict[str, Any], str]] = {}
    events = []
    for row in rows:
        # The dict-valued fields by identity: a batch's rows share its content's objects.
        key = (_shared_values(row), *map(id, _identity_values(row)))
        found = shared.get(key)
        if found is None:
            public = _public(row)
            rest = pubsub.compact({k: v for k, v in public.items() if k not in _OWN})[1:-1]
            found = shared[key] = public, "," + rest if rest else ""
        public, rest = found
        nid, seq, recipient = str(row["id"]), row["seq"], row["recipient_id"]
        data = public.copy()
        data["id"], data["seq"] = nid, seq
        event = pubsub.Encoded(type=CREATED, recipient=recipient, cursor=seq, data=data)
        quoted = _quote(recipient)
        event.line = (  # the routing header (pubsub's wire format), a tab, the event's text
            f'[{quoted},"notification.created",{seq}]\t'
            f'{{"type":"notification.created","recipient":{quoted},'
            f'"cursor":{seq},"data":{{"id":"{nid}","seq":{seq}{rest}}}}}'
        )
        events.append(event)
    return events


# The row fields the public form reads besides id and seq.
_SHARED = (
    "category",
    "type",
    "severity",
    "title",
    "body",
    "url",
    "actor_id",
    "meta",
    "collapse_key",
    "expires_at",
    "created_at",
    "actions",
)
_BY_IDENTITY = ("meta", "actions")
# A batch's key per row, read in C (a generator over the fields cost ~1 µs per row).
_shared_values = operator.itemgetter(*(k for k in _SHARED if k not in _BY_IDENTITY))
_identity_values = operator.itemgetter(*_BY_IDENTITY)
# The public fields each row has its own value of.
_OWN = frozenset({"id", "seq"})
CREATED = "notification.created"


def _public(row: dict[str, Any]) -> dict[str, Any]:
    public = NotificationPublic.model_validate(
        {**row, "seen_at": None, "read_at": None, "archived_at": None}
    )
    return public.model_dump(mode="json")


def _event(row: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": CREATED,
        "recipient": row["recipient_id"],
        "cursor": row["seq"],
        "data": data,
    }


def create_notifications(
    messages: list[CreateMessage],
    *,
    sessions: sessionmaker[Session],
    settings: Settings,
    publisher: Publisher,
    dispatcher: Dispatcher,
    channels: Channels,
) -> Created:
    """Persist in one transaction, then announce the inbox rows and dispatch the rest.

    Items whose ``send_at`` is still ahead are stored as scheduled instead; the release
    task persists them through :func:`persist` when they are due.

    A message is almost always stored for the first time, so the first attempt does not
    look its ids up (an index probe per recipient): a stored one fails the insert on the
    primary key, and the attempt that follows looks and skips it. Messages with a dedupe
    key look first: a stored row would be taken for a duplicate, not a rerun."""
    look = any(m.content.dedupe_key for m in messages)
    stored = {"sessions": sessions, "settings": settings, "channels": channels}
    try:
        result = _store(messages, look=look, **stored)
    except IntegrityError:
        if look:
            raise
        result = _store(messages, **stored)
    after_commit(result, publisher=publisher, dispatcher=dispatcher)
    return result


def _store(messages: list[CreateMessage], *, sessions, look: bool = True, **pipeline) -> Created:
    with transaction(sessions) as session:
        held = hold.hold(session=session, messages=messages, now=utcnow())
        due = held.due
        result = persist(session=session, messages=due, look=look, **pipeline) if due else Created()
        result.scheduled = held.scheduled
    return result


def after_commit(result: Created, *, publisher: Publisher, dispatcher: Dispatcher) -> None:
    """What follows every commit of :func:`persist` (create, scheduled release, digests):
    the inbox events in one pipelined publish, then the external deliveries' tasks."""
    metrics.notifications_created(result.counts)
    metrics.delivered_to_inbox(INBOX, len(result.notifications))
    events = created_events(result.notifications) + result.events
    if events:
        publisher.publish_many(events)
    for (channel, lane), ids in result.to_dispatch.items():
        dispatcher.deliver(channel, ids, lane=lane)


# Claims up to a batch of due rows (SKIP LOCKED) and settles them in the caller's
# transaction; returns their create messages and how many rows it took.
Take = Callable[[Session], tuple[list[CreateMessage], int]]


def persist_due(
    take: Take,
    *,
    limit: int,
    sessions: sessionmaker[Session],
    settings: Settings,
    publisher: Publisher,
    dispatcher: Dispatcher,
    channels: Channels,
) -> int:
    """Feed a table of due work into the pipeline (scheduled releases, digests).

    Each batch is one transaction: ``take`` claims and settles its rows, their messages go
    through :func:`persist`, and after commit they are announced like any create. It goes
    on while batches come back full. Returns the notifications persisted."""
    made = 0
    while True:
        with transaction(sessions) as session:
            messages, taken = take(session)
            result = (
                persist(session=session, messages=messages, settings=settings, channels=channels)
                if messages
                else None
            )
        if result is not None:
            after_commit(result, publisher=publisher, dispatcher=dispatcher)
            made += sum(len(m.items) for m in messages)
        if taken < limit:
            return made
