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

import logging
import re
from collections.abc import Mapping

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
