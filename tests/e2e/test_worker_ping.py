"""`clarion ping NODE`: the workers' health check in deploy/ (compose and Kubernetes)."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid

from tests.conftest import process_env
from tests.e2e.procs import CLARION, Proc, wait_for


def ping(node: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLARION, "ping", node, "--timeout", "2"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_ping_answers_for_a_running_worker_and_fails_for_a_missing_one(runtime, pg_url, tmp_path):
    env = process_env(pg_url, CLARION_LOG_LEVEL="WARNING")
    name = f"ping{uuid.uuid4().hex[:6]}"
    worker = Proc(
        ["worker", "--queues", "dead_letter", "--concurrency", "1", "--hostname", f"{name}@%h"],
        env,
        tmp_path / "worker.log",
    )
    node = f"{name}@{socket.gethostname()}"
    try:
        wait_for(lambda: ping(node, env).returncode == 0, 60, "the worker's pong", worker)
        assert f"{node}: pong" in ping(node, env).stdout
        missing = ping(f"nobody{name}@{socket.gethostname()}", env)
        assert missing.returncode == 1 and "no answer" in missing.stderr
    finally:
        worker.stop()
    assert ping(node, env).returncode == 1  # stopped: the check fails
