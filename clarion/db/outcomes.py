"""Recording the outcome of a delivery attempt, and the connection the deliver step holds.

Each outcome is committed before the next send, so a worker killed mid-batch can only
re-send the one message in flight. On PostgreSQL it is one statement on a connection in
autocommit: one round trip per delivery, no BEGIN/COMMIT, no pool checkout per outcome.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Boolean, Connection, Uuid, bindparam, insert, text, update
from sqlalchemy.orm import Session, sessionmaker

from clarion.db.deliveries import Claimed
from clarion.db.dialect import dml
from clarion.db.models import DeadLetter, Delivery, DeliveryAttempt
from clarion.db.models.base import UTCDateTime

_DELIVERIES = Delivery.__table__
_ATTEMPTS = DeliveryAttempt.__table__
_LETTERS = DeadLetter.__table__

# session.info key: the autocommit driver connection of a held session (PostgreSQL).
_DRIVER = "clarion.deliver.autocommit"


@contextmanager
def held_session(
    sessions: sessionmaker[Session], *, synchronous_commit: str = "on"
) -> Iterator[Session]:
    """A session on one connection for a whole deliver call, in which each state-machine
    write commits on its own (``with session.begin(): ...``; :func:`finish` takes care of
    itself).

    On PostgreSQL the connection is in autocommit and every write of the deliver step is a
    single statement (atomic by itself): no BEGIN and COMMIT round trips, and no pool
    checkout and pre-ping per transaction. SQLite keeps ordinary transactions.

    ``synchronous_commit="off"`` (PostgreSQL) sets it on the connection for the call and
    resets it before the connection goes back to the pool: the claims and outcomes then
    return without waiting for their WAL flush (see ``delivery_synchronous_commit``).
    """
    engine = sessions.kw["bind"]
    with engine.connect() as conn:
        autocommit = conn.dialect.name == "postgresql"
        if autocommit:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        relaxed = autocommit and synchronous_commit == "off"
        if relaxed:
            conn.exec_driver_sql("SET synchronous_commit = off")
        try:
            with sessions(bind=conn) as session:
                if autocommit:
                    session.info[_DRIVER] = conn.connection.driver_connection
                yield session
        finally:
            if relaxed:
                _reset_synchronous_commit(conn)


def _reset_synchronous_commit(conn: Connection) -> None:
    """The pooled connection must not keep the relaxed setting for other work (a create
    task in the same process commits with the server's default)."""
    try:
        conn.exec_driver_sql("RESET synchronous_commit")
    except Exception:
        # Broken or in an unknown state: the pool opens a fresh connection instead (and
        # the error that broke it, if any, is the one the caller sees).
        conn.invalidate()


@dataclass(frozen=True)
class Finished:
    """What one attempt came to: the row's new status and the attempt's timeline entry."""

    status: str
    outcome: str  # sent | retry | dead | gone | expired
    error: str | None = None
    provider_ref: str | None = None
    next_attempt_at: datetime | None = None


# PostgreSQL: the outcome, its attempt row and (when dead) its dead letter in one statement,
# so that in autocommit they commit together in one round trip. Nothing is written unless
# this attempt still owns the row; no row comes back then.
_FINISH_PG = text(
    """
    WITH d AS (
        UPDATE deliveries
        SET status = :p_status, next_attempt_at = :p_due, last_error = :p_error,
            provider_ref = :p_ref, updated_at = :p_now
        WHERE id = :p_id AND status = 'sending' AND attempts = :p_attempt
        RETURNING id, notification_id
    ), a AS (
        INSERT INTO delivery_attempts
            (delivery_id, attempt, started_at, finished_at, outcome, error, provider_ref)
        SELECT id, :p_attempt, :p_started, :p_now, :p_outcome, :p_error, :p_ref FROM d
    ), l AS (
        INSERT INTO dead_letters
            (delivery_id, notification_id, channel, error, attempts, created_at)
        SELECT id, notification_id, :p_channel, coalesce(:p_error, ''), :p_attempt, :p_now
        FROM d WHERE :p_dead
        RETURNING id
    )
    SELECT l.id FROM d LEFT JOIN l ON true
    """
).bindparams(
    bindparam("p_id", type_=Uuid()),
    bindparam("p_due", type_=UTCDateTime),
    bindparam("p_now", type_=UTCDateTime),
    bindparam("p_started", type_=UTCDateTime),
    bindparam("p_dead", type_=Boolean()),
)
_FINISH = (
    update(_DELIVERIES)
    .where(
        _DELIVERIES.c.id == bindparam("p_id"),
        _DELIVERIES.c.status == "sending",
        _DELIVERIES.c.attempts == bindparam("p_attempt"),
    )
    .values(
        status=bindparam("p_status"),
        next_attempt_at=bindparam("p_due"),
        last_error=bindparam("p_error"),
        provider_ref=bindparam("p_ref"),
        updated_at=bindparam("p_now"),
    )
)
_ADD_ATTEMPT = insert(_ATTEMPTS).values(
    delivery_id=bindparam("p_id"),
    attempt=bindparam("p_attempt"),
    started_at=bindparam("p_started"),
    finished_at=bindparam("p_now"),
    outcome=bindparam("p_outcome"),
    error=bindparam("p_error"),
    provider_ref=bindparam("p_ref"),
)
_ADD_LETTER = insert(_LETTERS).values(
    delivery_id=bindparam("p_id"),
    notification_id=bindparam("p_notification_id"),
    channel=bindparam("p_channel"),
    error=bindparam("p_letter_error"),
    attempts=bindparam("p_attempt"),
    created_at=bindparam("p_now"),
)


def finish(
    *,
    session: Session,
    claimed: Claimed,
    outcome: Finished,
    channel: str,
    started_at: datetime,
    now: datetime,
) -> tuple[bool, int | None]:
    """Record and commit one attempt's outcome (row, attempt, and a dead letter if it is
    ``dead``), if this attempt still owns the row (lease not lost). Returns (owned, dead
    letter id). Called outside a transaction, on a :func:`held_session`."""
    params = {
        "p_id": claimed.id,
        "p_attempt": claimed.attempt,
        "p_status": outcome.status,
        "p_due": outcome.next_attempt_at,
        "p_error": outcome.error,
        "p_ref": outcome.provider_ref,
        "p_now": now,
        "p_started": started_at,
        "p_outcome": outcome.outcome,
        "p_channel": channel,
        "p_dead": outcome.status == "dead",
    }
    driver = session.info.get(_DRIVER)
    if driver is not None:
        # The statement straight to psycopg: through SQLAlchemy it costs about twice the
        # CPU (docs/benchmarks/code.md).
        row = driver.execute(_finish_sql(session.get_bind().dialect), params).fetchone()
        return (row is not None, row[0] if row is not None else None)
    with session.begin():
        if not dml(session.execute(_FINISH, params)).rowcount:
            return False, None
        session.execute(_ADD_ATTEMPT, params)
        if outcome.status != "dead":
            return True, None
        params.update(p_notification_id=claimed.notification_id, p_letter_error=outcome.error or "")
        return True, dml(session.execute(_ADD_LETTER, params)).inserted_primary_key[0]


@functools.cache
def _finish_sql(dialect) -> str:
    """_FINISH_PG as the driver takes it (psycopg's %(name)s placeholders)."""
    return str(_FINISH_PG.compile(dialect=dialect))
