"""Topics: named audiences a producer sends to with ``POST /v1/notifications {"topic"}``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from clarion.api.deps import Producer, SessionDep
from clarion.api.problems import Problem
from clarion.api.schemas import (
    TopicMember,
    TopicSubscriberPage,
    TopicSubscribersChanged,
    TopicSubscribersUpdate,
)
from clarion.core.schemas import Key
from clarion.db import topics
from clarion.ids import utcnow

router = APIRouter(prefix="/v1/topics", tags=["topics"])
TopicPath = Annotated[Key, Path(description="The topic's key, e.g. `release-notes`.")]


@router.put(
    "/{key}/subscribers",
    response_model=TopicSubscribersChanged,
    summary="Subscribe and unsubscribe ids (creates the topic and unknown subscribers)",
    responses={422: {"description": "Over 10,000 ids in a list, or an id in both lists"}},
)
def put_subscribers(
    key: TopicPath, body: TopicSubscribersUpdate, session: SessionDep, producer: Producer
) -> TopicSubscribersChanged:
    """Add and remove in one transaction; adding an id twice or removing a stranger is
    not an error (the counts say what changed)."""
    now = utcnow()
    with session.begin():
        topics.ensure(session=session, key=key, now=now)
        added = topics.add(session=session, key=key, ids=body.add, now=now)
        removed = topics.remove(session=session, key=key, ids=body.remove)
        total = topics.count(session=session, key=key)
    return TopicSubscribersChanged(topic=key, added=added, removed=removed, total=total)


@router.get(
    "/{key}/subscribers",
    response_model=TopicSubscriberPage,
    summary="A topic's subscribers, in id order",
    responses={404: {"description": "No such topic"}},
)
def list_subscribers(
    key: TopicPath,
    session: SessionDep,
    producer: Producer,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        str | None, Query(max_length=255, description="`next_cursor` of the previous page.")
    ] = None,
) -> TopicSubscriberPage:
    if not topics.exists(session=session, key=key):
        raise Problem(404, "not-found", f"No topic {key!r}.")
    rows = topics.page(session=session, key=key, after=cursor, limit=limit + 1)
    shown = rows[:limit]
    return TopicSubscriberPage(
        topic=key,
        total=topics.count(session=session, key=key),
        items=[TopicMember(id=i, subscribed_at=at) for i, at in shown],
        next_cursor=shown[-1][0] if len(rows) > limit else None,
    )
