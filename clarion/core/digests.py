"""Digests: held email and push deliveries, sent as one notification per period.

Routing holds a notification's email and push deliveries (``status='held'``, reason
``digest: <cadence>``, ``next_attempt_at`` = the end of the subscriber's digest period)
when the subscriber chose a cadence for its category; the inbox row is delivered at once.
The digest task (``clarion.digests.run``, on beat every ``digest_interval_seconds``) takes
the held deliveries whose period has ended and, per recipient, category and period, makes
ONE ``digest`` notification through the normal :func:`~clarion.core.create.persist`: the
stored ``digest`` template renders it per channel in the recipient's locale, listing each
item; it goes to the channels that held items and never to the inbox (the items are
there already). The held rows become ``digested`` (``provider_ref`` = the digest's id) in
the same transaction, so a rerun finds nothing to send again, and the digest's
``dedupe_key`` (``digest:<category>:<period end>``) would refuse a second one anyway.

Expired items are skipped, not listed; a period with nothing left sends nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from clarion.channels import Channels, registry
from clarion.core import create as pipeline
from clarion.core.deliver import EXPIRED
from clarion.core.preferences import DIGEST_TYPE
from clarion.core.schemas import CreateMessage, NotificationContent
from clarion.db import digests, notifications
from clarion.db.digests import HeldItem
from clarion.ids import new_id, utcnow
from clarion.settings import Settings

DIGEST_TEMPLATE = "digest"
# Held deliveries per transaction; a run goes on while batches come back full.
DIGEST_BATCH = 5000
# A digest summarises: each item's body is cut to this many characters (its link has the rest).
ITEM_BODY_CHARS = 500


def _cadence(reason: str) -> str:
    """``digest: hourly`` (or ``throttled; digest: hourly``) → ``hourly``: the routing
    decision stored on the held row."""
    _, found, cadence = reason.rpartition("digest:")
    return cadence.strip() if found and cadence.strip() else "digest"


def _summary(body: str | None) -> str | None:
    if body is None or len(body) <= ITEM_BODY_CHARS:
        return body
    return body[: ITEM_BODY_CHARS - 1].rstrip() + "…"


def _groups(items: list[HeldItem], full: bool) -> list[list[HeldItem]]:
    """Held items by digest; when the batch was cut by its limit, its last group may be
    incomplete and is left for the next batch (unless it is the only one)."""
    groups: dict[tuple, list[HeldItem]] = {}
    for item in items:
        groups.setdefault(item.group, []).append(item)
    ordered = list(groups.values())
    return ordered[:-1] if full and len(ordered) > 1 else ordered


def _content(group: list[HeldItem], dedupe_key: str) -> NotificationContent:
    first = group[0]
    listed: dict[uuid.UUID, dict[str, Any]] = {}
    for item in group:  # a notification held on email and push is one item
        listed.setdefault(
            item.notification_id,
            {
                "title": item.title,
                "body": _summary(item.body),
                "url": item.url,
                "created_at": item.created_at.isoformat(),
            },
        )
    held_on = {item.channel for item in group}
    # Built, not validated: the 16 KiB cap on a producer's `data` would cut a long digest.
    return NotificationContent.model_construct(
        category=first.category,
        type=DIGEST_TYPE,
        severity="low",
        template=DIGEST_TEMPLATE,
        data={
            "category": first.category,
            "cadence": _cadence(first.reason),
            "count": len(listed),
            "items": list(listed.values()),
        },
        channels=[c for c in registry.digest_channels() if c in held_on],
        dedupe_key=dedupe_key,
    )


def _dedupe_keys(session: Session, groups: list[list[HeldItem]]) -> list[str]:
    """``digest:<category>:<period end>``; items held after that period's digest was made
    (committed a moment late) get a digest of their own rather than being lost."""
    keys = [f"digest:{g[0].category}:{g[0].period_end.isoformat()}" for g in groups]
    taken = notifications.dedupe_pairs(
        session=session, keys=set(keys), recipients={g[0].recipient_id for g in groups}
    )
    return [
        f"{key}:{g[0].delivery_id}" if (g[0].recipient_id, key) in taken else key
        for key, g in zip(keys, groups, strict=True)
    ]


def _make(
    session: Session, items: list[HeldItem], full: bool, now: datetime
) -> list[CreateMessage]:
    """Skip the expired, build one digest message per group, settle the held rows."""
    expired = [i for i in items if i.expires_at is not None and i.expires_at <= now]
    digests.finish(
        session=session,
        ids=[i.delivery_id for i in expired],
        status=digests.SKIPPED,
        reason=EXPIRED,
        now=utcnow(),
    )
    gone = {i.delivery_id for i in expired}
    groups = _groups([i for i in items if i.delivery_id not in gone], full)
    if not groups:
        return []
    messages = []
    for group, key in zip(groups, _dedupe_keys(session, groups), strict=True):
        nid = new_id()
        messages.append(
            CreateMessage(
                request_id=new_id(),
                accepted_at=utcnow(),
                items=[(nid, group[0].recipient_id)],
                content=_content(group, key),
            )
        )
        digests.finish(
            session=session,
            ids=[i.delivery_id for i in group],
            status=digests.DIGESTED,
            reason=f"{group[0].reason}; sent in digest {nid}",
            ref=str(nid),
            now=utcnow(),
        )
    return messages


def run(
    *,
    sessions: sessionmaker[Session],
    settings: Settings,
    publisher: pipeline.Publisher,
    dispatcher: pipeline.Dispatcher,
    channels: Channels,
    now: datetime | None = None,
    limit: int = DIGEST_BATCH,
) -> int:
    """Make the digests of every period ended by ``now``; returns how many were made.

    Each batch is one transaction (held rows locked with SKIP LOCKED, digests persisted,
    held rows settled), then announced and dispatched like any create."""
    now = now or utcnow()

    def take(session: Session) -> tuple[list[CreateMessage], int]:
        items = digests.take_due(session=session, now=now, limit=limit)
        return (_make(session, items, len(items) >= limit, now) if items else []), len(items)

    return pipeline.persist_due(
        take,
        limit=limit,
        sessions=sessions,
        settings=settings,
        publisher=publisher,
        dispatcher=dispatcher,
        channels=channels,
    )
