"""Start and stop real ``clarion`` processes for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

CLARION = [sys.executable, "-m", "clarion.cli"]
# Makes fd N fd 3, then runs the command: how a service manager passes a socket.
AS_FD_3 = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.execv(sys.argv[2], sys.argv[2:])"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A clarion subprocess in its own process group, logging to a file."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str | None],
        log: Path,
        stderr: Path | None = None,
        listening: socket.socket | None = None,
    ) -> None:
        """Output goes to ``log``; stderr too unless ``stderr`` names a file of its own.
        ``listening``: passed as a service manager passes it (fd 3, ``LISTEN_FDS=1``)."""
        self.log, self.stderr = log, stderr
        self._file = log.open("wb")
        self._err = stderr.open("wb") if stderr is not None else None
        merged = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
        command, fds = [*CLARION, *args], ()
        if listening is not None:
            fds = (listening.fileno(),)
            command = [sys.executable, "-c", AS_FD_3, str(fds[0]), *command]
            merged["LISTEN_FDS"] = "1"
        self.popen = subprocess.Popen(
            command,
            env=merged,
            stdout=self._file,
            stderr=self._err or subprocess.STDOUT,
            start_new_session=True,
            pass_fds=fds,
        )

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        self.send_signal(sig)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send_signal(signal.SIGKILL)
            code = self.popen.wait(5)
        self._file.close()
        if self._err is not None:
            self._err.close()
        return code

    def output(self) -> str:
        text = self.log.read_text(errors="replace")
        return text + (self.stderr.read_text(errors="replace") if self.stderr else "")

    def errors(self) -> str:
        """What the process wrote to stderr (its log)."""
        assert self.stderr is not None
        return self.stderr.read_text(errors="replace")


def run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [*CLARION, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait_for(check: Callable[[], bool], timeout: float, what: str, proc: Proc | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        if proc is not None and proc.popen.poll() is not None:
            raise AssertionError(f"{what}: process exited\n{proc.output()[-3000:]}")
        time.sleep(0.1)
    tail = proc.output()[-3000:] if proc else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def wait_ready(base: str, proc: Proc, timeout: float = 30) -> None:
    wait_for(
        lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200,
        timeout,
        "API ready",
        proc,
    )


def quiet_hours_now() -> dict:
    """Preferences whose quiet hours (UTC) are under way: from an hour ago to an hour ahead."""
    now = datetime.now(UTC)
    return {
        "timezone": "UTC",
        "quiet_hours": {
            "start": (now - timedelta(hours=1)).strftime("%H:%M"),
            "end": (now + timedelta(hours=1)).strftime("%H:%M"),
        },
    }
