"""The lifecycle pack's source database: one engine per URL, reflected tables, clocks.

Everything the queries need from the source is here, so the rules only say *what* they
select. Identifiers come from the config and reach SQL only through SQLAlchemy ``Table``
objects (quoted by the dialect), never through string formatting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    MetaData,
    Table,
    and_,
    or_,
    true,
)
from sqlalchemy.exc import NoSuchTableError
from sqlalchemy.sql.elements import ColumnElement

from clarion.engine import sources
from clarion.engine.packs.lifecycle_config import LifecycleConfig


class SourceError(RuntimeError):
    """The source database does not look like the config says (missing table or column).

    Raised during a run, so the runner records it on that run and the other rules go on.
    """


def source_engine(config: LifecycleConfig) -> Engine:
    """The process's engine for the configured source URL (created on first use)."""
    if config.source_url is None:  # the config validator makes enabled imply a URL
        raise SourceError("the lifecycle pack has no source_url")
    return sources.engine(config.source_url, config.connect_timeout_seconds)


@contextmanager
def read_connection(config: LifecycleConfig) -> Iterator[Connection]:
    """A connection to the source; on PostgreSQL its transactions are read-only."""
    engine = source_engine(config)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            # The pack only reads: a read-only transaction makes that a promise to the source.
            conn = conn.execution_options(postgresql_readonly=True)
            # A cursor is planned for its first 10 % of rows by default; every rule reads all
            # of them. Without this, campaign_has_expired_links walked links in campaign_id
            # order (the whole table) instead of the expires_at range (docs/benchmarks/code.md).
            conn.exec_driver_sql("SET LOCAL cursor_tuple_fraction = 1.0")
        yield conn


def stream(conn: Connection, statement, config: LifecycleConfig) -> Iterator[Any]:
    """Rows of ``statement`` through a server-side cursor, ``fetch_size`` at a time, so a
    run's memory does not grow with the number of matching rows."""
    result = conn.execute(statement.execution_options(yield_per=config.fetch_size))
    try:
        yield from result
    finally:
        result.close()


@dataclass
class Source:
    """The two reflected tables, looked up by the pack's own column names."""

    config: LifecycleConfig
    links: Table
    campaigns: Table

    @classmethod
    def reflect(cls, conn: Connection, config: LifecycleConfig, *, campaigns: bool = True):
        """Reflect the tables a rule needs (links always; campaigns when asked)."""
        links = _reflect(conn, config, config.links_table, config.columns.links.model_dump())
        other = (
            _reflect(conn, config, config.campaigns_table, config.columns.campaigns.model_dump())
            if campaigns
            else None
        )
        return cls(config=config, links=links, campaigns=other)  # type: ignore[arg-type]

    def link(self, name: str) -> Column | None:
        column = getattr(self.config.columns.links, name)
        return None if column is None else self.links.c[column]

    def campaign(self, name: str) -> Column | None:
        column = getattr(self.config.columns.campaigns, name)
        return None if column is None else self.campaigns.c[column]


def _reflect(conn: Connection, config: LifecycleConfig, name: str, columns: dict) -> Table:
    wanted = [c for c in columns.values() if c is not None]
    try:
        # include_columns: the source's other columns (and their types) are none of our
        # business, and reflecting fewer is cheaper.
        table = Table(
            name,
            MetaData(),
            schema=config.source_schema,
            autoload_with=conn,
            include_columns=wanted,
            resolve_fks=False,
        )
    except NoSuchTableError:
        where = f"{config.source_schema}.{name}" if config.source_schema else name
        raise SourceError(f"the source database has no table {where!r}") from None
    missing = [c for c in wanted if c not in table.c]
    if missing:
        raise SourceError(f"table {name!r} has no column(s) {missing} (see the pack's columns)")
    return table


def is_active(column: Column | None) -> ColumnElement[bool]:
    """The row counts as active: no such column, a true boolean, or a non-zero number."""
    if column is None:
        return true()
    if isinstance(column.type, Boolean):
        return column.is_(true())
    return column != 0  # integer flags; NULL is not active either way


class Clock:
    """Instants in and out of the source's timestamp columns.

    Aware columns (``timestamptz``) take and return UTC instants. Naive ones hold wall-clock
    times in ``source_timezone``: bounds are converted to that zone before they are bound,
    and values read back are placed in it. (In the hour a DST change repeats, a naive
    wall-clock time is ambiguous; the first occurrence is taken.)
    """

    def __init__(self, zone: str) -> None:
        self.zone = ZoneInfo(zone)

    def bound(self, column: Column, instant: datetime) -> datetime:
        if getattr(column.type, "timezone", False):
            return instant.astimezone(UTC)
        return instant.astimezone(self.zone).replace(tzinfo=None)

    def read(self, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=self.zone)
        return value.astimezone(UTC)


class Window:
    """One run's bounds as SQL conditions on a source timestamp column ``t``. Both ends are
    stated so each boundary is exact: ``soon`` is ``now < t <= now + expiring_within_hours``
    and ``expired`` is ``now - lookback_days < t <= now`` (a ``t`` of exactly now has
    expired: the link stops working at that instant)."""

    def __init__(self, config: LifecycleConfig, now: datetime) -> None:
        self.now, self.clock = now, Clock(config.source_timezone)
        self.soon_until = now + timedelta(hours=config.expiring_within_hours)
        self.back_to = now - timedelta(days=config.lookback_days)

    def soon(self, column):
        bound = self.clock.bound
        return and_(column > bound(column, self.now), column <= bound(column, self.soon_until))

    def expired(self, column):
        bound = self.clock.bound
        return and_(column > bound(column, self.back_to), column <= bound(column, self.now))

    def not_over(self, column):
        """No end date, or an end still to come."""
        return or_(column.is_(None), column > self.clock.bound(column, self.now))
