"""The rule engine for operators (admin scope): list, configure, run, dry-run, history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from clarion.api.deps import Admin, RuntimeDep, SessionDep
from clarion.api.problems import BROKER_ERRORS, Problem, unavailable
from clarion.core import queues
from clarion.core.schemas import UTCDateTime
from clarion.core.storable import BigInt, Instant, StorableModel
from clarion.db import rule_runs as runs_db
from clarion.engine.registry import RuleError
from clarion.engine.runner import RuleDisabled, build_rule, run_rule
from clarion.ids import utcnow

router = APIRouter(prefix="/v1/rules", tags=["rules"])
RuleKey = Annotated[str, Path(max_length=128)]


class RunPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    rule_key: str
    trigger: str
    started_at: UTCDateTime
    finished_at: UTCDateTime | None
    as_of: UTCDateTime
    candidates: int
    created: int
    duplicates: int
    error: str | None


class RulePublic(BaseModel):
    key: str
    description: str
    pack: str
    kind: str = Field(description="scan (on beat) or event")
    every_seconds: float | None
    event_type: str | None
    enabled: bool
    config: dict[str, Any]
    overridden_by: str | None = None
    last_run: RunPublic | None = None


class RulePatch(StorableModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"enabled": True, "config": {"threshold_hours": 48}}]},
    )

    enabled: bool | None = None
    config: dict[str, Any] | None = Field(
        default=None, description="Replaces the stored override; validated by the rule."
    )


class DryRun(BaseModel):
    run_id: int | None
    as_of: datetime
    candidates: int
    would_create: int
    duplicates: int
    error: str | None
    preview: list[dict[str, Any]]


def _listed(runtime, session, keys: list[str]) -> list[RulePublic]:
    """The rules with their overrides and last runs, each read once for all of them."""
    overrides = runs_db.overrides(session=session)
    last_runs = runs_db.last_runs(session=session)
    return [_public(runtime, key, overrides.get(key), last_runs.get(key)) for key in keys]


def _public(runtime, key: str, override, last) -> RulePublic:
    cls = runtime.rules.classes[key]
    rule = build_rule(runtime.rules, key, runtime, override)
    return RulePublic(
        key=key,
        description=cls.description,
        pack=cls.pack,
        kind="event" if cls.event_type else "scan",
        every_seconds=rule.schedule_seconds,
        event_type=cls.event_type,
        enabled=rule.config.enabled,
        config=rule.config.model_dump(mode="json"),
        overridden_by=override.updated_by if override else None,
        last_run=RunPublic.model_validate(last) if last else None,
    )


def _known(runtime, key: str) -> str:
    if key not in runtime.rules:
        raise Problem(404, "not-found", f"No rule {key!r}.")
    return key


@router.get("", response_model=list[RulePublic], summary="Every rule, its config and last run")
def list_rules(runtime: RuntimeDep, session: SessionDep, admin: Admin) -> list[RulePublic]:
    return _listed(runtime, session, sorted(runtime.rules.classes))


@router.get("/{key}", response_model=RulePublic, summary="One rule")
def get_rule(key: RuleKey, runtime: RuntimeDep, session: SessionDep, admin: Admin) -> RulePublic:
    return _listed(runtime, session, [_known(runtime, key)])[0]


@router.patch("/{key}", response_model=RulePublic, summary="Enable, disable or reconfigure")
def patch_rule(
    key: RuleKey, body: RulePatch, runtime: RuntimeDep, session: SessionDep, admin: Admin
) -> RulePublic:
    _known(runtime, key)
    current = runs_db.overrides(session=session).get(key)
    enabled = body.enabled if body.enabled is not None else (current.enabled if current else None)
    config = body.config if body.config is not None else (current.config if current else {})
    try:  # validated with the rule's own model before anything is stored
        runtime.rules.config_of(
            key, {**config, **({"enabled": enabled} if enabled is not None else {})}
        )
    except RuleError as exc:
        raise Problem(422, "invalid-rule-config", str(exc)) from None
    runs_db.set_override(
        session=session,
        key=key,
        enabled=enabled,
        config=config,
        actor=f"api-key:{admin.name}#{admin.key_id}",
        now=utcnow(),
    )
    session.commit()  # the reads above began the transaction
    return _listed(runtime, session, [key])[0]


@router.get("/{key}/runs", response_model=list[RunPublic], summary="A rule's runs, newest first")
def rule_runs(
    key: RuleKey,
    runtime: RuntimeDep,
    session: SessionDep,
    admin: Admin,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: BigInt | None = None,
) -> list[RunPublic]:
    runs = runs_db.runs_of(session=session, key=_known(runtime, key), limit=limit, before_id=cursor)
    return [RunPublic.model_validate(r) for r in runs]


@router.post(
    "/{key}/run",
    summary="Run a rule now (queued), or dry-run it (answered at once, creates nothing)",
    responses={202: {"description": "Queued on the engine queue"}, 200: {"model": DryRun}},
)
def run_now(
    key: RuleKey,
    runtime: RuntimeDep,
    admin: Admin,
    dry_run: bool = False,
    as_of: Annotated[Instant | None, Query(description="The rule's clock (time travel).")] = None,
):
    _known(runtime, key)
    if not dry_run:
        if not build_rule(runtime.rules, key, runtime).config.enabled:
            raise Problem(409, "rule-disabled", f"Rule {key!r} is disabled.")
        try:
            runtime.celery.send_task(
                "clarion.rules.run",
                args=[key, "manual", as_of.isoformat() if as_of else None],
                queue=queues.ENGINE,
            )
        except BROKER_ERRORS:
            raise unavailable("broker") from None
        return JSONResponse({"queued": True, "rule": key}, status_code=202)
    try:
        result = run_rule(
            key, runtime=runtime, rules=runtime.rules, trigger="manual", as_of=as_of, dry_run=True
        )
    except RuleDisabled as exc:
        raise Problem(409, "rule-disabled", str(exc)) from None
    return DryRun(
        run_id=result.run_id,
        as_of=result.as_of,
        candidates=result.candidates,
        would_create=result.created,
        duplicates=result.duplicates,
        error=result.error,
        preview=result.preview,
    )
