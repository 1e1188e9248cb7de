"""Run Alembic migrations programmatically (``clarion migrate``, ``clarion dev``, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config


def migrations_dir() -> Path:
    """Inside an installed wheel the migrations ship in the package; in a checkout, at the root."""
    package = Path(__file__).resolve().parent.parent  # clarion/, without importing it
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("Clarion's migrations directory was not found")


def _config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(_config(database_url), revision)


def behind(database_url: str) -> tuple[set[str], set[str]] | None:
    """(the database's revisions, the code's heads) when they differ, else None: what a
    process checks before it starts (``clarion migrate --check``)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    heads = set(ScriptDirectory.from_config(_config(database_url)).get_heads())
    engine = create_engine(database_url, hide_parameters=True)
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
    return None if current == heads else (current, heads)
