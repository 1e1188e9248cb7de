"""No token, API key or signing secret reaches a log: every record is redacted as it is made.

Browsers can only authenticate live streams with ``?token=``, and unsubscribe links carry
theirs in the query string, so access logs (uvicorn's, and its WebSocket lines on
``uvicorn.error``) would write them down. Rather than a filter on each handler someone
configured (Celery and uvicorn add their own), a log record factory redacts the message,
its arguments and its traceback text before any handler sees them. It covers every logger
of the process and the processes it forks. SQL parameters are kept out separately
(``hide_parameters`` on every engine).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

REDACTED = "[redacted]"
_SECRETS = re.compile(
    r"""
    (?P<param>\b(?:access_)?token=)[^&\s"'#]+      # a query parameter: ?token=...
    | (?P<header>(?i:authorization):\s*\w+\s)\S+   # a header (websockets logs them)
    | (?P<prefix>clk_|whsec_)[A-Za-z0-9_+/=-]{16,}   # an API key, a webhook signing secret
    | eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*  # a JWT
    """,
    re.VERBOSE,
)
_traceback = logging.Formatter()


def _replace(match: re.Match) -> str:
    return (match["param"] or match["header"] or match["prefix"] or "") + REDACTED


def redact(text: str) -> str:
    """``text`` with every token, API key and webhook secret replaced by ``[redacted]``."""
    return _SECRETS.sub(_replace, text)


def _redact_arg(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, int | float):
        return value
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - the handler reports what cannot be formatted
        return value
    cleaned = redact(text)
    # Other objects keep their type (a formatter may use it) unless they held a secret.
    return value if cleaned == text else cleaned


def redact_record(record: logging.LogRecord) -> None:
    """Redact a record's message, arguments and traceback in place."""
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    if isinstance(record.args, Mapping):
        record.args = {k: _redact_arg(v) for k, v in record.args.items()}
    elif record.args:
        record.args = tuple(_redact_arg(a) for a in record.args)
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        # Formatters print exc_text when it is set, instead of formatting exc_info again.
        record.exc_text = redact(_traceback.formatException(record.exc_info))


def install() -> None:
    """Redact every log record this process makes from now on (idempotent)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "clarion_redacts", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redact_record(record)
        return record

    factory.clarion_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


# --- Context: the ids a log line is about -------------------------------------------------
#
# Set at the choke points (the API's request wrapper, Celery's task signals, the create and
# deliver loops, the rule runner) and read by the JSON formatter, so a line logged anywhere
# below them says which request, task, notification, delivery or rule it was about.

_NONE: Mapping[str, Any] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "clarion_log_context", default=_NONE
)


def context() -> Mapping[str, Any]:
    """The ids in scope (read-only: bind new ones with :func:`bound` or :func:`bind`)."""
    return _context.get()


def bind(**fields: Any) -> contextvars.Token:
    """Add ``fields`` (None values are dropped) to the context; undo with :func:`unbind`."""
    # Values are kept as they are (UUIDs…): the JSON formatter turns them into text.
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    return _context.set(merged)


def unbind(token: contextvars.Token) -> None:
    _context.reset(token)


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


# The X-Request-ID of each Clarion send request a task carries, by the send request's id:
# the API coalesces several HTTP requests into one create task, whose deliver tasks then
# carry deliveries of several. Propagated with the task messages, never logged as such.
_request_ids: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "clarion_request_ids", default=_NONE
)


def request_ids() -> Mapping[str, str]:
    return _request_ids.get()


def carry(mapping: Mapping[str, str]) -> contextvars.Token:
    return _request_ids.set(mapping)


def uncarry(token: contextvars.Token) -> None:
    _request_ids.reset(token)


class about:  # noqa: N801 - used like a function: ``with logs.about(...)``
    """Bind the ids of one notification or delivery of send request ``send_request_id``,
    with that request's own X-Request-ID when the task carries several. A class, not a
    generator: the deliver step enters one per delivery."""

    __slots__ = ("_fields", "_token")

    def __init__(self, send_request_id: Any, **fields: Any) -> None:
        fields["send_request_id"] = send_request_id
        carried = _request_ids.get()
        if carried and send_request_id is not None:
            request_id = carried.get(str(send_request_id))
            if request_id is not None:
                fields["request_id"] = request_id
        self._fields = {k: v for k, v in fields.items() if v is not None}

    def __enter__(self) -> None:
        self._token = _context.set({**_context.get(), **self._fields})

    def __exit__(self, *exc: object) -> None:
        _context.reset(self._token)


# --- Formats --------------------------------------------------------------------------------

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339, UTC), level, logger, message, the ids in
    scope, and the exception text. Message, arguments and traceback were redacted when the
    record was made (:func:`install`); the ids are ours, or checked when they came in."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_context.get())
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            # uvicorn's access line: its parts as fields too (the path was redacted).
            line["client"], line["method"], line["path"], _, line["status"] = args
        for hook in _enrichers:
            hook(line)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line, default=str, ensure_ascii=False)


# Callables that add fields to each JSON line (the trace ids when tracing is on).
_enrichers: list[Callable[[dict[str, Any]], None]] = []


def add_enricher(hook: Callable[[dict[str, Any]], None]) -> None:
    if hook not in _enrichers:
        _enrichers.append(hook)


def configure(fmt: str, level: str | int = logging.INFO) -> None:
    """Redact every record, and send every logger's lines to stderr in ``fmt`` (text or
    json). In JSON mode Python's warnings become log lines too, so stderr holds only JSON."""
    install()
    handler = logging.StreamHandler()  # stderr
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
        logging.captureWarnings(True)
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    # A no-op when the root logger has handlers already (an embedding program, pytest).
    logging.basicConfig(level=level, handlers=[handler])


def uvicorn_config(fmt: str) -> dict | None:
    """uvicorn's ``log_config``: its own (colours, access lines on stdout) for text; for
    JSON none of its handlers, so its lines, the access log included, go through the root
    logger's JSON handler like every other line."""
    if fmt != "json":
        from uvicorn.config import LOGGING_CONFIG

        return LOGGING_CONFIG
    # The root handler too: with --workers, each server process is spawned and configured
    # by this alone.
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": "INFO"},
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
