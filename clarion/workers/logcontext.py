"""The log context of tasks: each task's id and name, and the X-Request-ID of the HTTP
request that caused it, carried from the API through every task that follows (create,
deliver, its retries) in the task message's headers.

Celery's signals are process-wide, so the receivers are connected once, whatever number
of Celery apps a process builds.
"""

from __future__ import annotations

import logging

from celery import signals

from clarion import logs

# Message headers (protocol 2): a task sees them as attributes of its request.
REQUEST_ID = "clarion_request_id"
REQUEST_IDS = "clarion_request_ids"  # {send request id: X-Request-ID}, coalesced sends

# A coalesced create task carries the map of all its sends; the tasks it publishes (deliver,
# retries) only a small one, so a batch of hundreds of sends does not weigh on every deliver
# message. Beyond it their lines keep send_request_id, which the create task's lines map.
MAX_CARRIED = 20

_tokens: dict[str, tuple] = {}


def _publishing(sender: str | None = None, headers: dict | None = None, **_: object) -> None:
    """A task published while a request or task is in scope carries its request ids."""
    if headers is None:
        return
    request_id = logs.context().get("request_id")
    if request_id is not None:
        headers.setdefault(REQUEST_ID, request_id)
    mapping = logs.request_ids()
    if mapping and (sender == "clarion.create" or len(mapping) <= MAX_CARRIED):
        headers.setdefault(REQUEST_IDS, dict(mapping))


def _started(task_id: str | None = None, task=None, **_: object) -> None:
    request = getattr(task, "request", None)
    mapping = getattr(request, REQUEST_IDS, None)
    token = logs.bind(
        task_id=task_id,
        task_name=getattr(task, "name", None),
        request_id=getattr(request, REQUEST_ID, None),
    )
    _tokens[task_id or ""] = (token, logs.carry(mapping if isinstance(mapping, dict) else {}))


def _finished(task_id: str | None = None, **_: object) -> None:
    tokens = _tokens.pop(task_id or "", None)
    if tokens is not None:
        try:
            logs.uncarry(tokens[1])
            logs.unbind(tokens[0])
        except ValueError:  # set in another context (a pool that switched threads)
            pass


def _json_logging(loglevel: int | None = None, **_: object) -> None:
    """The worker's logging is the CLI's (clarion.logs.configure): Celery's receivers for
    this signal replace its own set-up, which would add a plain-text handler."""
    if loglevel is not None:
        logging.getLogger().setLevel(loglevel)


def connect(log_format: str) -> None:
    signals.before_task_publish.connect(_publishing, weak=False, dispatch_uid="clarion-pub")
    signals.task_prerun.connect(_started, weak=False, dispatch_uid="clarion-prerun")
    signals.task_postrun.connect(_finished, weak=False, dispatch_uid="clarion-postrun")
    if log_format == "json":
        signals.setup_logging.connect(_json_logging, weak=False, dispatch_uid="clarion-logging")
