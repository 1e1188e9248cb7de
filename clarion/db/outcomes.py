"""Recording the outcome of a delivery attempt, and the connection the deliver step holds.

The deliver step commits each outcome before the next send, or, for a channel that allows
it (``ChannelSpec.outcomes_per_commit``), a few outcomes together; a worker killed
mid-batch re-sends only the messages whose outcome it had not committed. On PostgreSQL a
group is one statement on a connection in autocommit: one round trip and one commit for
the group, no BEGIN/COMMIT, no pool checkout per outcome.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, insert, update
from sqlalchemy.orm import Session, sessionmaker

from clarion.db.deliveries import Claimed
from clarion.db.dialect import dml
from clarion.db.models import DeadLetter, Delivery, DeliveryAttempt

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


# PostgreSQL: a group of outcomes, their attempt rows and (for the dead ones) their dead
# letters in one statement, so that in autocommit they commit together in one round trip.
# Only the rows this caller's attempt still owns are written, and only those come back.
_FINISH_PG = """
    WITH v AS (
        SELECT * FROM unnest(
            %(ids)s::uuid[], %(attempts)s::int[], %(statuses)s::text[], %(outcomes)s::text[],
            %(errors)s::text[], %(refs)s::text[], %(dues)s::timestamptz[],
            %(started)s::timestamptz[]
        ) AS v(id, attempt, status, outcome, error, ref, due, started)
    ), d AS (
        UPDATE deliveries
        SET status = v.status, next_attempt_at = v.due, last_error = v.error,
            provider_ref = v.ref, updated_at = %(now)s
        FROM v
        WHERE deliveries.id = v.id AND deliveries.status = 'sending'
            AND deliveries.attempts = v.attempt
        RETURNING deliveries.id, deliveries.notification_id, v.attempt, v.status, v.outcome,
            v.error, v.ref, v.started
    ), a AS (
        INSERT INTO delivery_attempts
            (delivery_id, attempt, started_at, finished_at, outcome, error, provider_ref)
        SELECT id, attempt, started, %(now)s, outcome, error, ref FROM d
    ), l AS (
        INSERT INTO dead_letters
            (delivery_id, notification_id, channel, error, attempts, created_at)
        SELECT id, notification_id, %(channel)s, coalesce(error, ''), attempt, %(now)s
        FROM d WHERE status = 'dead'
        RETURNING id, delivery_id
    )
    SELECT d.id, l.id FROM d LEFT JOIN l ON l.delivery_id = d.id
"""
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


@dataclass(frozen=True)
class Done:
    """One attempt to record: the claimed row, what it came to, when it started."""

    claimed: Claimed
    outcome: Finished
    started_at: datetime


def finish(
    *, session: Session, done: list[Done], channel: str, now: datetime
) -> dict[uuid.UUID, int | None]:
    """Record and commit a group of attempts' outcomes (row, attempt, and a dead letter for
    each ``dead`` one) together, each only if its attempt still owns the row (lease not
    lost). Returns {delivery id: dead letter id or None} of the rows written; a missing one
    was taken over. Called outside a transaction, on a :func:`held_session`."""
    if not done:
        return {}
    driver = session.info.get(_DRIVER)
    if driver is not None:
        # The statement straight to psycopg, arrays for the group: through SQLAlchemy it
        # costs about twice the CPU (docs/benchmarks/code.md).
        params = {
            "ids": [d.claimed.id for d in done],
            "attempts": [d.claimed.attempt for d in done],
            "statuses": [d.outcome.status for d in done],
            "outcomes": [d.outcome.outcome for d in done],
            "errors": [d.outcome.error for d in done],
            "refs": [d.outcome.provider_ref for d in done],
            "dues": [d.outcome.next_attempt_at for d in done],
            "started": [d.started_at for d in done],
            "now": now,
            "channel": channel,
        }
        return dict(driver.execute(_FINISH_PG, params).fetchall())
    written: dict[uuid.UUID, int | None] = {}
    with session.begin():
        for d in done:
            params = {
                "p_id": d.claimed.id,
                "p_attempt": d.claimed.attempt,
                "p_status": d.outcome.status,
                "p_due": d.outcome.next_attempt_at,
                "p_error": d.outcome.error,
                "p_ref": d.outcome.provider_ref,
                "p_now": now,
                "p_started": d.started_at,
                "p_outcome": d.outcome.outcome,
            }
            if not dml(session.execute(_FINISH, params)).rowcount:
                continue
            session.execute(_ADD_ATTEMPT, params)
            written[d.claimed.id] = None
            if d.outcome.status == "dead":
                params.update(
                    p_notification_id=d.claimed.notification_id,
                    p_channel=channel,
                    p_letter_error=d.outcome.error or "",
                )
                letter = dml(session.execute(_ADD_LETTER, params)).inserted_primary_key
                written[d.claimed.id] = letter[0]
    return written
