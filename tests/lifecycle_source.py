"""A throwaway source database for the lifecycle pack: links and campaigns, any names.

The tables are created with psycopg's ``sql.Identifier`` (quoted), so tests can give them
names that need quoting, in another schema, with naive or aware timestamps.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

LINK_COLUMNS = {
    "id": "id",
    "owner": "owner",
    "url": "url",
    "expires_at": "expires_at",
    "is_active": "is_active",
    "campaign_id": "campaign_id",
}
CAMPAIGN_COLUMNS = {
    "id": "id",
    "owner": "owner",
    "name": "name",
    "starts_at": "starts_at",
    "ends_at": "ends_at",
    "is_active": "is_active",
}
TYPES = {
    "id": "bigint PRIMARY KEY",
    "owner": "text",
    "url": "text",
    "name": "text",
    "is_active": "boolean NOT NULL DEFAULT true",
    "campaign_id": "bigint",
}


@dataclass
class Layout:
    """Where the tables are and what their columns are called (defaults: the documented
    schema). A column mapped to None is left out of the table."""

    schema: str | None = None
    links: str = "links"
    campaigns: str = "campaigns"
    link_columns: dict[str, str | None] = field(default_factory=lambda: dict(LINK_COLUMNS))
    campaign_columns: dict[str, str | None] = field(default_factory=lambda: dict(CAMPAIGN_COLUMNS))
    naive: bool = False  # timestamp without time zone

    def config(self) -> dict[str, Any]:
        """The pack config keys describing this layout."""
        values: dict[str, Any] = {
            "links_table": self.links,
            "campaigns_table": self.campaigns,
            "columns": {"links": self.link_columns, "campaigns": self.campaign_columns},
        }
        if self.schema:
            values["source_schema"] = self.schema
        return values


class SourceDB:
    """A database ``clarion_src_<random>`` on the test server, dropped by ``drop()``."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"clarion_src_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        self.url = f"{admin_url.rsplit('/', 1)[0]}/{self.name}"
        self.conn = psycopg.connect(self.url, autocommit=True)
        self.layout = Layout()

    def drop(self) -> None:
        self.conn.close()
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )

    def reset(self, layout: Layout | None = None) -> Layout:
        """Empty the database and create the two tables of ``layout``."""
        self.layout = layout or Layout()
        self.conn.execute("DROP SCHEMA public CASCADE")
        self.conn.execute("CREATE SCHEMA public")
        schema = self.layout.schema
        if schema:
            ident = sql.Identifier(schema)
            self.conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident))
            self.conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
        stamp = "timestamp" if self.layout.naive else "timestamptz"
        for table, columns in (
            (self.layout.links, self.layout.link_columns),
            (self.layout.campaigns, self.layout.campaign_columns),
        ):
            defs = [
                sql.SQL("{} {}").format(sql.Identifier(col), sql.SQL(TYPES.get(key, stamp)))
                for key, col in columns.items()
                if col is not None
            ]
            self.conn.execute(
                sql.SQL("CREATE TABLE {} ({})").format(self._table(table), sql.SQL(", ").join(defs))
            )
        return self.layout

    def _table(self, name: str) -> sql.Composable:
        if self.layout.schema:
            return sql.Identifier(self.layout.schema, name)
        return sql.Identifier(name)

    def _insert(self, table: str, columns: dict[str, str | None], values: dict[str, Any]) -> None:
        pairs = [(columns[k], v) for k, v in values.items() if columns.get(k) is not None]
        self.conn.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                self._table(table),
                sql.SQL(", ").join(sql.Identifier(c) for c, _ in pairs),
                sql.SQL(", ").join(sql.Placeholder() * len(pairs)),
            ),
            [v for _, v in pairs],
        )

    def link(
        self,
        id: int,
        owner: str | None,
        expires_at: datetime | None,
        *,
        url: str | None = None,
        is_active: bool = True,
        campaign_id: int | None = None,
    ) -> None:
        url = f"https://go.example/l{id}" if url is None else url
        values = dict(
            id=id,
            owner=owner,
            url=url,
            expires_at=expires_at,
            is_active=is_active,
            campaign_id=campaign_id,
        )
        self._insert(self.layout.links, self.layout.link_columns, values)

    def campaign(
        self,
        id: int,
        owner: str | None,
        ends_at: datetime | None,
        *,
        name: str | None = None,
        starts_at: datetime | None = None,
        is_active: bool = True,
    ) -> None:
        values = dict(
            id=id,
            owner=owner,
            name=f"Campaign {id}" if name is None else name,
            starts_at=starts_at,
            ends_at=ends_at,
            is_active=is_active,
        )
        self._insert(self.layout.campaigns, self.layout.campaign_columns, values)

    def set_link(self, id: int, **values: Any) -> None:
        """UPDATE one link's columns by their pack names (``expires_at=...``)."""
        columns = self.layout.link_columns
        self.conn.execute(
            sql.SQL("UPDATE {} SET {} WHERE {} = %s").format(
                self._table(self.layout.links),
                sql.SQL(", ").join(
                    sql.SQL("{} = %s").format(sql.Identifier(columns[k])) for k in values
                ),
                sql.Identifier(columns["id"]),
            ),
            [*values.values(), id],
        )
