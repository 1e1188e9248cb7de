"""External databases rules read from (a producer's links, an analytics table).

One place for what every such source needs: a URL that is validated without ever being
echoed (it carries a password) and is shown masked, and one engine per URL per process,
which is fork-safe, UTC, and has a connect timeout.

The URL names one of the drivers the packs are written and tested for: PostgreSQL through
psycopg, and SQLite only in the embedded mode (``clarion dev``, the demo). Anything else
is refused when the config is validated (at start, or by the rule API's 422): a URL is
also a way to make a worker open files (SQLite creates one) or load other drivers.
"""

from __future__ import annotations

import os
import threading
from typing import Annotated

from pydantic import AfterValidator, SecretStr, ValidationInfo
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

POSTGRES_DRIVERS = ("postgresql", "postgresql+psycopg")  # "postgresql" means psycopg here
SQLITE_DRIVERS = ("sqlite", "sqlite+pysqlite")


def drivers(mode: str) -> tuple[str, ...]:
    """The source URL drivers a deployment in ``mode`` (Settings.mode) accepts."""
    return POSTGRES_DRIVERS + (SQLITE_DRIVERS if mode == "embedded" else ())


def _parses(value: SecretStr, info: ValidationInfo) -> SecretStr:
    try:
        driver = make_url(value.get_secret_value()).drivername
    except Exception:  # noqa: BLE001 - the message must not echo the URL (password)
        raise ValueError("source_url is not a database URL") from None
    # The rule registry passes the deployment's mode; without it, the server's rules.
    mode = (info.context or {}).get("mode", "server")
    if driver not in drivers(mode):
        sqlite = "" if mode == "embedded" else " (sqlite:// only in the embedded mode)"
        raise ValueError(
            f"source_url: driver {driver!r} is not supported; use postgresql+psycopg://{sqlite}"
        )
    return value


# A config field for a source's SQLAlchemy URL. Configs holding one should also set
# ``hide_input_in_errors=True``: validation errors end up in logs and API answers.
SourceUrl = Annotated[SecretStr, AfterValidator(_parses)]

# One engine (so one small pool) per URL per process: rules running every few minutes
# must not open a pool per run, and a pool must not outlive a fork.
_ENGINES: dict[tuple[str, int], Engine] = {}
_LOCK = threading.Lock()


def engine(url: SecretStr, connect_timeout: int = 10) -> Engine:
    """The process's engine for a source URL, created on first use."""
    key = (url.get_secret_value(), connect_timeout)
    with _LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = _create(*key)
        return _ENGINES[key]


def _create(url: str, connect_timeout: int) -> Engine:
    parsed = make_url(url)
    if parsed.drivername == "postgresql":  # psycopg 3 is the driver Clarion ships
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "postgresql":  # SQLite (validated: embedded mode)
        return create_engine(parsed, hide_parameters=True)
    # Naive timestamps compared in SQL are UTC; a small pool, rules take turns.
    return create_engine(
        parsed,
        pool_size=2,
        max_overflow=4,
        pool_pre_ping=True,
        hide_parameters=True,  # errors get logged; rows are people's data
        connect_args={"connect_timeout": connect_timeout, "options": "-c TimeZone=UTC"},
    )


def dispose_engines() -> None:
    """Close every cached source engine (tests, and before a source database is dropped)."""
    with _LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for cached in engines:
        cached.dispose()


def _forget_after_fork() -> None:
    # A forked worker must not share the parent's sockets; close=False leaves them to it.
    for cached in _ENGINES.values():
        cached.dispose(close=False)
    _ENGINES.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
