"""Requests that cannot be stored: what counts as such a failure, and its record.

The API coalesces concurrent sends into one ``create`` task and one transaction. If the
database refuses one request's data, retrying the transaction fails the same way every
time: before this, ten retries later the task was dropped, and every request of the
batch with it. So a *data error* (the database refused the values, not the connection)
is permanent: the batch is stored request by request (``clarion.core.batches``), and the
request that still fails is recorded here, in ``failed_requests``, with its reason, where
its producer (``GET /v1/requests/{id}``, ``GET /v1/notifications/{id}``) and operators
(``GET /v1/failed-requests``) see it. A request that does not even validate (a message
published around the API) is recorded the same way, as are fan-outs and events.

Lost connections, deadlocks and serialisation failures are not data errors: they are
left to Celery's retries.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy.exc import DataError, IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from clarion.core import storable
from clarion.db import failed
from clarion.db.session import transaction
from clarion.ids import utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLSTATE classes that are about the values sent: data exception (22), integrity
# constraint violation (23), program limit exceeded (54: a value too big to index).
DATA_SQLSTATES = ("22", "23", "54")
MAX_REASON = 2000
MAX_IDS = 10_000


def is_data_error(exc: BaseException) -> bool:
    """The database (or its driver) refused the data itself, so retrying it as it is can
    only fail again. A constraint violated by a concurrent transaction is retried once by
    the split (each request is stored alone after its batch failed), which a race passes."""
    if isinstance(exc, DataError | IntegrityError | UnicodeEncodeError):
        return True
    if isinstance(exc, StatementError):
        orig = exc.orig
        sqlstate = getattr(orig, "sqlstate", None) or ""
        return sqlstate[:2] in DATA_SQLSTATES or isinstance(orig, UnicodeEncodeError)
    return False


def is_request_error(exc: BaseException) -> bool:
    """A failure that is a property of the request: it does not validate, or its data is
    refused."""
    return isinstance(exc, ValidationError) or is_data_error(exc)


def reason_of(exc: BaseException) -> str:
    """What went wrong, for a producer and an operator: the validation errors, or the
    database's own message (its first line: the SQL and parameters stay out)."""
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)[:10]
        ]
        return "invalid request: " + "; ".join(parts)
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"the database refused the request: {type(orig).__name__}: {first}"


def run_or_record(
    kind: str, raw: dict[str, Any], run: Callable[[], T], *, sessions: sessionmaker[Session]
) -> T | None:
    """``run()`` the request (a fan-out, an event); if it fails on the request itself,
    record it as failed and return None. Any other error is raised (transient: retried)."""
    try:
        return run()
    except Exception as exc:
        if not is_request_error(exc):
            raise
        record(sessions, kind, raw, reason_of(exc))
        return None


def record(sessions: sessionmaker[Session], kind: str, raw: Any, reason: str) -> int:
    """Record a request that cannot be stored, in a transaction of its own (once, however
    often it is retried); 1 if this call recorded it."""
    with transaction(sessions) as session:
        return record_in(session, kind, raw, reason)


def record_in(session: Session, kind: str, raw: Any, reason: str) -> int:
    """:func:`record`, in the caller's transaction."""
    copy = _copy(raw)
    request_id = _uuid(raw.get("request_id") or raw.get("id")) if isinstance(raw, dict) else None
    # A message without a usable id still gets one record: an id derived from its text.
    request_id = request_id or uuid.uuid5(uuid.NAMESPACE_URL, "clarion:failed:" + copy)
    producer = raw.get("producer") if isinstance(raw, dict) else None
    reason = storable.escape(reason)[:MAX_REASON]
    new = failed.record(
        session=session,
        request_id=request_id,
        kind=kind,
        producer=storable.escape(producer)[:255] if isinstance(producer, str) else None,
        reason=reason,
        request=copy,
        notification_ids=_ids(raw),
        now=utcnow(),
    )
    log.error("%s request %s could not be stored and was recorded: %s", kind, request_id, reason)
    return int(new)


def _copy(raw: Any) -> str:
    """The request as ASCII JSON text: "\\u0000" and "\\ud800" stay escapes in it."""
    try:
        return json.dumps(raw, ensure_ascii=True, default=str, separators=(",", ":"))
    except (ValueError, RecursionError):
        return json.dumps(storable.escape(repr(raw))[:100_000], ensure_ascii=True)


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _ids(raw: Any) -> list[uuid.UUID]:
    """The notification ids a create message carried (those that parse)."""
    items = raw.get("items") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        return []
    pairs: Iterable[Any] = items[:MAX_IDS]
    ids = [_uuid(p[0]) for p in pairs if isinstance(p, list | tuple) and p]
    return sorted({i for i in ids if i is not None})
