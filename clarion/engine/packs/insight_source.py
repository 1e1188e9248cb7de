"""The insight pack's source: which table, which columns, and the SQL that counts.

Split from :mod:`clarion.engine.packs.insight` (the rules); see its docstring.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

import sqlalchemy as sa
from pydantic import (
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from clarion.core.schemas import SubscriberId
from clarion.engine import sources
from clarion.engine.rules import RuleConfig
from clarion.engine.sources import SourceUrl
from clarion.ids import as_utc

TableName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
]
Column = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
# A column, or "column.key": a key of a JSON column.
ColumnOrKey = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_-]+)?$")
]
DAY = 86_400


class InsightConfig(RuleConfig):
    """The source, shared by the pack: ``CLARION_RULES={"insight": {...}}``. Each rule's
    thresholds go under its own key (``{"traffic_spike": {"z": 5}}``)."""

    # Validation errors end up in logs and API answers: never echo source_url's password.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    # SQLAlchemy URL of the database holding the table; None: Clarion's own. Shown masked.
    # Naive timestamps in it are read as UTC.
    source_url: SourceUrl | None = None
    table: TableName = "events"  # "schema.table" works
    time_column: Column = "occurred_at"
    subject_column: ColumnOrKey = "subject"
    kind_column: ColumnOrKey | None = "type"  # None: every row is a visit
    visit_kinds: list[str] = Field(default=["visit"], min_length=1)
    conversion_kinds: list[str] = Field(default=["conversion"], min_length=1)
    country_column: ColumnOrKey = "data.country"
    device_column: ColumnOrKey = "data.device"
    owner_column: ColumnOrKey | None = "data.owner"  # the subject's recipient
    recipients: list[SubscriberId] = []  # notified too (or instead, without owner_column)
    url_template: str | None = None  # e.g. "https://app.example/links/{subject}/stats"

    @model_validator(mode="after")
    def _someone_to_tell(self):
        if self.owner_column is None and not self.recipients:
            raise ValueError("set owner_column or recipients: insights need a recipient")
        return self


class Source:
    """The events table as SQLAlchemy Core sees it, and the one aggregate query."""

    def __init__(self, config: InsightConfig) -> None:
        self.config = config
        specs = [config.subject_column, config.kind_column, config.owner_column]
        specs += [config.country_column, config.device_column]
        json_columns = {s.split(".")[0] for s in specs if s and "." in s}
        names = dict.fromkeys(s.split(".")[0] for s in specs if s)
        columns = [sa.column(n, sa.JSON if n in json_columns else None) for n in names]
        columns.append(sa.column(config.time_column, sa.DateTime(timezone=True)))
        schema, _, name = config.table.rpartition(".")
        self.table = sa.table(name, *columns, schema=schema or None)
        self.time = self.table.c[config.time_column]

    def expr(self, spec: str) -> sa.ColumnElement:
        """A column, or the text of a JSON column's key (``->>`` / ``JSON_EXTRACT``)."""
        column, _, key = spec.partition(".")
        return self.table.c[column][key].as_string() if key else self.table.c[column]

    @contextmanager
    def connect(self, runtime) -> Iterator[sa.Connection]:
        if self.config.source_url is None:
            with runtime.engine.connect() as conn:
                yield conn
            return
        with sources.engine(self.config.source_url).connect() as conn:
            yield conn

    def aggregate(
        self,
        conn: sa.Connection,
        periods: list[tuple[int, datetime, datetime]],
        *,
        kinds: list[str] | None,
        dim: str | None = None,
        active_in: tuple[datetime, datetime] | None = None,
    ) -> list[tuple[str, int, str | None, int]]:
        """``(subject, period, dimension, count)`` per group, counted by the database.

        ``periods`` are ``(label, start, end)``; rows outside them are not read (the
        WHERE is an OR of time ranges, which an index on the time column serves).
        ``active_in`` keeps the subjects with events in that range.
        """
        cfg = self.config
        inside = [sa.and_(self.time >= s, self.time < e) for _, s, e in periods]
        subject = self.expr(cfg.subject_column)
        labels = [(c, sa.literal(label)) for c, (label, _, _) in zip(inside, periods, strict=True)]
        cols = {"subject": subject, "period": sa.case(*labels)}
        cols["dim"] = self.expr(dim) if dim else sa.null()
        where = [sa.or_(*inside), subject.is_not(None)]
        if dim:
            where.append(cols["dim"].is_not(None))
        if kinds is not None and cfg.kind_column:
            where.append(self.expr(cfg.kind_column).in_(kinds))
        if active_in:
            active = sa.select(subject).where(self.time >= active_in[0], self.time < active_in[1])
            where.append(subject.in_(active))
        # Group on the labels of a subquery: PostgreSQL would not match "data ->> $1" in
        # SELECT with "data ->> $2" in GROUP BY.
        inner = sa.select(*(c.label(k) for k, c in cols.items())).where(*where).subquery()
        keys = [inner.c.subject, inner.c.period, inner.c.dim]
        query = sa.select(*keys, sa.func.count()).group_by(*keys)
        return [(str(s), p, d if d is None else str(d), n) for s, p, d, n in conn.execute(query)]

    def owners(
        self, conn: sa.Connection, seen_in: dict[str, tuple[datetime, datetime]]
    ) -> dict[str, str]:
        """The owner of each subject, read from its rows in the given time range, and only
        for the subjects a rule fires for: reading it with the counts (a max over every
        row of a month) tripled the cost of the aggregate."""
        if self.config.owner_column is None:
            return {}
        subject = sa.cast(self.expr(self.config.subject_column), sa.String)
        owner = self.expr(self.config.owner_column)
        by_range: dict[tuple[datetime, datetime], list[str]] = defaultdict(list)
        for name, span in seen_in.items():
            by_range[span].append(name)
        found: dict[str, str] = {}
        for (start, end), names in by_range.items():
            for i in range(0, len(names), 500):
                inner = sa.select(subject.label("subject"), owner.label("owner")).where(
                    self.time >= start, self.time < end, subject.in_(names[i : i + 500])
                )
                inner = inner.where(owner.is_not(None)).subquery()
                query = sa.select(inner.c.subject, sa.func.max(inner.c.owner))
                found.update((s, str(o)) for s, o in conn.execute(query.group_by(inner.c.subject)))
        return found


def window_end(now: datetime, seconds: float) -> datetime:
    """The end of the last complete window: ``now`` rounded down to a multiple of it."""
    ts = as_utc(now).timestamp()
    return datetime.fromtimestamp(ts - ts % seconds, UTC)
