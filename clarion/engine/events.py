"""Events in, notifications out: store the event once, then run its event rules."""

from __future__ import annotations

from typing import Any

from clarion.db import rule_runs
from clarion.db.session import transaction
from clarion.engine.registry import Rules
from clarion.engine.rules import EventIn
from clarion.engine.runner import RuleDisabled, RunResult, run_rule
from clarion.ids import utcnow


def ingest(event: dict[str, Any], *, runtime, rules: Rules) -> list[RunResult]:
    """Store the event (a resend of the same id is stored once) and run every enabled
    event rule of its type. Running them again for a resend is safe: candidates dedupe."""
    parsed = EventIn.model_validate(event)
    with transaction(runtime.sessions) as session:
        rule_runs.store_event(session=session, event=parsed.model_dump(), now=utcnow())
    results = []
    for key in rules.for_event(parsed.type):
        try:
            results.append(
                run_rule(key, runtime=runtime, rules=rules, trigger="event", event=parsed)
            )
        except RuleDisabled:
            continue
    return results
