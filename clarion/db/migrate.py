"""Run Alembic migrations programmatically (``clarion migrate``, ``clarion dev``, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import clarion


def migrations_dir() -> Path:
    """Inside an installed wheel the migrations ship in the package; in a checkout, at the root."""
    package = Path(clarion.__file__).parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("Clarion's migrations directory was not found")


def upgrade(database_url: str, revision: str = "head") -> None:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(config, revision)
