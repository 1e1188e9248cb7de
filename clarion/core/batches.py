"""The ``create`` task's work: a coalesced batch of requests, stored together, or one by
one when the database refuses the batch's data (``clarion.core.failures``).

A batch is one transaction, so one request the database refuses would fail the others
with it, every time it is retried. So on a data error each request is stored alone, in a
transaction of its own, and the one that still fails is recorded as failed; a message
that does not validate is recorded before anything is tried. Every step is idempotent
(stored ids are skipped, a failure is recorded once), so a rerun of the task after a
crash midway redoes only what is missing.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from clarion.core.create import Created, create_notifications
from clarion.core.failures import is_data_error, reason_of, record
from clarion.core.schemas import CreateMessage

log = logging.getLogger(__name__)


def create_requests(
    raw: list[dict[str, Any]],
    *,
    sessions: sessionmaker[Session],
    **pipeline: Any,
) -> dict[str, int]:
    """The ``create`` task's work: store the requests in one transaction; when their data
    is refused, store each alone and record the ones that still fail. Returns counts."""
    messages, failed = [], 0
    for item in raw:
        try:
            messages.append(CreateMessage.model_validate(item))
        except ValidationError as exc:
            failed += record(sessions, "create", item, reason_of(exc))
    counts = {"created": 0, "skipped_existing": 0, "skipped_dedupe": 0, "scheduled": 0}
    if messages:
        try:
            _add(counts, create_notifications(messages, sessions=sessions, **pipeline))
        except Exception as exc:
            if not is_data_error(exc):
                raise
            log.warning(
                "a batch of %d requests was refused (%s); storing each alone",
                len(messages),
                reason_of(exc),
            )
            failed += _one_by_one(messages, counts, sessions=sessions, **pipeline)
    return {**counts, "failed": failed}


def _one_by_one(
    messages: list[CreateMessage], counts: dict[str, int], *, sessions, **pipeline: Any
) -> int:
    failed = 0
    for message in messages:
        try:
            _add(counts, create_notifications([message], sessions=sessions, **pipeline))
        except Exception as exc:
            if not is_data_error(exc):
                raise
            failed += record(sessions, "create", message.model_dump(mode="json"), reason_of(exc))
    return failed


def _add(counts: dict[str, int], result: Created) -> None:
    counts["created"] += len(result.notifications)
    counts["skipped_existing"] += result.skipped_existing
    counts["skipped_dedupe"] += result.skipped_dedupe
    counts["scheduled"] += result.scheduled
