"""Run a rule: record the run, persist its candidates through ``create``, count the rest.

A run never creates a notification twice: candidates carry a dedupe key and the create
step skips a (recipient, key) pair that exists, under the recipients' row locks, so two
engines running the same rule at once, or a rerun after a crash, end with one row each.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clarion import logs, metrics
from clarion.core.create import create_notifications
from clarion.core.schemas import CreateMessage, NotificationContent
from clarion.db import notifications, rule_runs
from clarion.db.session import transaction
from clarion.engine.registry import Rules
from clarion.engine.rules import Candidate, EventIn, Rule, RuleRuntime, RunContext
from clarion.ids import new_id, utcnow

log = logging.getLogger(__name__)

# Notifications per create call: large enough for bulk inserts, small enough for one
# transaction to stay short.
BATCH = 500
MAX_RECIPIENTS = 1000
PREVIEW = 100


_LOAD = object()  # build_rule: read the override from the database


class RuleDisabled(Exception):
    """The rule is switched off; disabled rules do nothing."""


@dataclass
class RunResult:
    key: str
    trigger: str
    as_of: datetime
    run_id: int | None = None
    candidates: int = 0
    created: int = 0
    duplicates: int = 0
    error: str | None = None
    # Dry runs: what would be created (the first PREVIEW candidates).
    preview: list[dict[str, Any]] = field(default_factory=list)


def build_rule(rules: Rules, key: str, runtime, override=_LOAD) -> Rule:
    """The rule with the operator's override (stored by the API) applied; pass the
    ``override`` row (or None) when it is loaded already."""
    if override is _LOAD:
        with runtime.sessions() as session:
            override = rule_runs.overrides(session=session).get(key)
    values: dict[str, Any] = {}
    if override is not None:
        values.update(override.config)
        if override.enabled is not None:
            values["enabled"] = override.enabled
    return rules.build(key, values)


def _messages(candidate: Candidate) -> list[CreateMessage]:
    content = NotificationContent.model_validate(candidate.model_dump(exclude={"recipients"}))
    recipients = list(dict.fromkeys(candidate.recipients))
    now = utcnow()
    return [
        CreateMessage(
            request_id=new_id(),
            accepted_at=now,
            items=[(new_id(), r) for r in recipients[i : i + MAX_RECIPIENTS]],
            content=content,
        )
        for i in range(0, len(recipients), MAX_RECIPIENTS)
    ]


class _Persist:
    """Candidates → create calls of about BATCH notifications."""

    def __init__(self, runtime: RuleRuntime, result: RunResult) -> None:
        self.runtime, self.result, self.size = runtime, result, 0
        self.pending: list[CreateMessage] = []

    def add(self, candidate: Candidate) -> None:
        for message in _messages(candidate):
            self.pending.append(message)
            self.size += len(message.items)
        if self.size >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        rt = self.runtime
        fresh = self._not_yet_notified()
        if fresh:
            created = create_notifications(fresh, **rt.pipeline.kwargs())
            size = sum(len(m.items) for m in fresh)
            self.result.created += size - created.skipped_existing - created.skipped_dedupe
            self.result.duplicates += created.skipped_dedupe
        self.pending, self.size = [], 0

    def _not_yet_notified(self) -> list[CreateMessage]:
        """Drop the (recipient, key) pairs stored already, before create takes row locks
        for them: a rerun then costs one read. Create checks again under the locks, so a
        concurrent engine still cannot make a duplicate."""
        keys = {m.content.dedupe_key for m in self.pending if m.content.dedupe_key}
        recipients = {r for m in self.pending for _, r in m.items}
        with self.runtime.sessions() as session:
            taken = notifications.dedupe_pairs(session=session, keys=keys, recipients=recipients)
        fresh = []
        for m in self.pending:
            items = [(nid, r) for nid, r in m.items if (r, m.content.dedupe_key) not in taken]
            self.result.duplicates += len(m.items) - len(items)
            if items:
                fresh.append(m.model_copy(update={"items": items}))
        return fresh


def _preview(runtime, candidates: list[Candidate], result: RunResult) -> None:
    """Dry run: mark each previewed recipient as new or already notified."""
    keys = {c.dedupe_key for c in candidates}
    recipients = {r for c in candidates for r in c.recipients}
    with runtime.sessions() as session:
        taken = notifications.dedupe_pairs(session=session, keys=keys, recipients=recipients)
    for c in candidates:
        new = [r for r in c.recipients if (r, c.dedupe_key) not in taken]
        result.created += len(new)
        result.duplicates += len(c.recipients) - len(new)
        if len(result.preview) < PREVIEW:
            shown = c.model_dump(mode="json", exclude_none=True)
            result.preview.append({**shown, "new_recipients": new})


def run_rule(
    key: str,
    *,
    runtime,
    rules: Rules,
    trigger: str,
    as_of: datetime | None = None,
    event: EventIn | None = None,
    dry_run: bool = False,
) -> RunResult:
    """Run one rule now (or as of ``as_of``: the injectable clock). Never raises for the
    rule's own errors: they are recorded on the run. Raises RuleDisabled when it is off."""
    with logs.bound(rule_key=key):
        return _run(key, runtime, rules, trigger, as_of, event, dry_run)


def _run(key, runtime, rules, trigger, as_of, event, dry_run) -> RunResult:
    rule = build_rule(rules, key, runtime)
    if not rule.config.enabled:
        raise RuleDisabled(f"rule {key!r} is disabled")
    trigger = "dry-run" if dry_run else trigger
    started = time.perf_counter()
    result = RunResult(key=key, trigger=trigger, as_of=as_of or utcnow())
    with transaction(runtime.sessions) as session:
        result.run_id = rule_runs.start_run(
            session=session,
            key=key,
            trigger=trigger,
            now=utcnow(),
            as_of=result.as_of,
            event_id=event.id if event else None,
        )
    ctx = RunContext(now=result.as_of, runtime=runtime, event=event, dry_run=dry_run)
    persist, seen = _Persist(runtime, result), []
    try:
        for candidate in rule.candidates(ctx):
            result.candidates += len(candidate.recipients)
            if dry_run:
                seen.append(candidate)
            else:
                persist.add(candidate)
        persist.flush()
        if dry_run:
            _preview(runtime, seen, result)
    except Exception as exc:  # a broken rule is recorded; the other rules go on
        log.exception("rule %s failed", key)
        result.error = f"{type(exc).__name__}: {exc}"[:2000]
    with transaction(runtime.sessions) as session:
        rule_runs.finish_run(
            session=session,
            id=result.run_id,
            now=utcnow(),
            candidates=result.candidates,
            created=result.created,
            duplicates=result.duplicates,
            error=result.error,
        )
    if not dry_run:
        metrics.rule_ran(
            key,
            trigger,
            candidates=result.candidates,
            created=result.created,
            duplicates=result.duplicates,
            failed=result.error is not None,
            seconds=time.perf_counter() - started,
        )
    return result
