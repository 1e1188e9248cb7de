"""Limits that hold before authentication, against a real ``clarion api`` process: its
memory is read from /proc while a client sends what a hostile one would."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.conftest import make_key, process_env
from tests.e2e.procs import Proc, free_port, wait_ready

pytestmark = pytest.mark.e2e
MiB = 1024 * 1024
CHUNK = b"x" * (64 * 1024)


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def answer_of(sock: socket.socket) -> bytes:
    """What the server answered before it closed (or within 10 s)."""
    sock.settimeout(10)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def send_until_refused(
    port: int, head: bytes, body_chunks: int, chunked: bool
) -> tuple[bytes, int]:
    """Send ``head`` then up to ``body_chunks`` 64 KiB chunks, stopping as soon as the
    server answers or stops reading; returns (answer, body bytes sent)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        frame = (b"%x\r\n" % len(CHUNK) + CHUNK + b"\r\n") if chunked else CHUNK
        for _ in range(body_chunks):
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break  # answered
            except BlockingIOError:
                pass
            except OSError:
                break
            try:
                sock.setblocking(True)
                sock.settimeout(2)
                sock.sendall(frame)
                sock.setblocking(False)
            except OSError:
                break  # the server closed, or stopped reading
            sent += len(CHUNK)
        return answer_of(sock), sent


@pytest.fixture
def api(runtime, tmp_path):
    port = free_port()
    env = process_env(runtime.settings.database_url, CLARION_LOG_LEVEL="WARNING")
    proc = Proc(["api", "--port", str(port)], env, tmp_path / "api.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        yield port, proc
    finally:
        proc.stop()


def settle(pid: int) -> int:
    time.sleep(0.3)
    return rss(pid)


def test_a_huge_chunked_body_without_credentials_is_refused_unread(api):
    port, proc = api
    before = settle(proc.popen.pid)
    head = (
        b"POST /v1/notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    answer, sent = send_until_refused(port, head, body_chunks=1600, chunked=True)  # 100 MiB
    grown = settle(proc.popen.pid) - before
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert sent < 16 * MiB, f"the server kept reading: {sent} bytes"
    assert grown < 4 * MiB, f"RSS grew {grown / MiB:.1f} MiB"


def test_a_huge_chunked_body_with_a_key_is_cut_at_the_limit(api, runtime):
    port, proc = api
    key = make_key(runtime, "notify").encode()
    before = settle(proc.popen.pid)
    head = (
        b"POST /v1/notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + key + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer, sent = send_until_refused(port, head, body_chunks=1600, chunked=True)
    grown = settle(proc.popen.pid) - before
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"urn:clarion:problem:body-too-large" in answer
    assert sent < 16 * MiB, f"the server kept reading: {sent} bytes"
    assert grown < 4 * MiB, f"RSS grew {grown / MiB:.1f} MiB"


def test_sixteen_megabytes_of_headers_are_refused_with_431(api):
    port, proc = api
    before = settle(proc.popen.pid)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    line = b"X-Filler: " + b"a" * 8000 + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        sent = 0
        try:
            while sent < 16 * MiB:
                sock.sendall(line * 8)
                sent += len(line) * 8
        except OSError:
            pass  # closed by the server
        answer = answer_of(sock)
    grown = settle(proc.popen.pid) - before
    # The 431 is written before the close; a reset may still discard it at the client.
    assert answer.startswith(b"HTTP/1.1 431") or answer == b"", answer[:200]
    assert sent < 4 * MiB, f"the server kept reading: {sent} bytes"
    assert grown < 4 * MiB, f"RSS grew {grown / MiB:.1f} MiB"


def test_a_head_over_the_bound_in_one_read_is_refused_with_431(api):
    """40 KiB of headers sent at once (one read for the server): still over the bound."""
    port, _ = api
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Filler: " + b"a" * 40_000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        answer = answer_of(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"urn:clarion:problem:headers-too-large" in answer
    # A head within the bound is served as usual.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 20_000 + b"\r\n\r\n"
        )
        sock.settimeout(5)
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
