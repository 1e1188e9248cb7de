"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from clarion.api.deps import RuntimeDep
from clarion.api.problems import problem_response

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check(runtime) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        with runtime.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=runtime.settings.broker_publish_timeout)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"error: {type(exc).__name__}"
    return checks


@router.get("/readyz", summary="Database and broker reachable")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks = await run_in_threadpool(_check, runtime)
    if all(v == "ok" for v in checks.values()):
        return JSONResponse({"status": "ok", "checks": checks})
    return problem_response(
        503,
        "not-ready",
        "A dependency is unreachable.",
        headers={"Retry-After": "5"},
        checks=checks,
    )
