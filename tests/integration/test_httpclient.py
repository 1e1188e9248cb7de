"""The channels' one HTTP client (clarion/channels/httpclient.py) and push's fast path
(fastpost.py) against a real local HTTP server: what a peer answers cannot make a worker
buffer it, keep its cookies or follow it elsewhere, and kept-alive connections are
reused. (SSRF, proxies and TLS: test_outbound.py.)"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clarion.channels.fastpost import FastPost
from clarion.channels.httpclient import MAX_ANSWER_BYTES, OutboundHttp
from clarion.channels.outbound import OutboundPolicy
from tests.conftest import LOCAL_PEERS

HUGE = 20 * 1024 * 1024


@pytest.fixture(params=[OutboundHttp, FastPost], ids=["httpx", "fast-path"])
def client(request):
    """The one client, and push's fast path: both must behave alike."""
    return lambda: request.param(OutboundPolicy(LOCAL_PEERS), connect_timeout=2, read_timeout=5)


@pytest.fixture
def peer():
    """POST /small: 200, a cookie and a short body; /huge: 200 with a 20 MiB body;
    /moved: 302 to /small. Records (path, client port, Cookie header) of each request."""
    seen: list[tuple[str, int, str | None]] = []
    sent: dict[str, int] = {"huge": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length") or 0))
            seen.append((self.path, self.client_address[1], self.headers.get("cookie")))
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/small")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b"x" * (HUGE if self.path == "/huge" else 10)
            self.send_response(200)
            self.send_header("Set-Cookie", "session=peer-secret; Path=/")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for at in range(0, len(body), 65536):
                    self.wfile.write(body[at : at + 65536])
                    if self.path == "/huge":
                        sent["huge"] += 65536
            except OSError:
                self.close_connection = True  # the client hung up: expected for /huge

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen, sent
    server.shutdown()
    server.server_close()


def test_short_answers_reuse_the_connection_and_cookies_are_never_sent_back(peer, client):
    base, seen, _ = peer
    http = client()
    try:
        assert [http.post(f"{base}/small", b"a", {}).status for _ in range(3)] == [200] * 3
    finally:
        http.close()
    assert len({port for _, port, _ in seen}) == 1  # one kept-alive connection
    assert [cookie for _, _, cookie in seen] == [None] * 3


def test_a_huge_answer_is_not_read_and_its_connection_is_dropped(peer, client):
    base, seen, sent = peer
    http = client()
    try:
        answer = http.post(f"{base}/huge", b"a", {})
        assert answer.status == 200
        assert not hasattr(answer, "content")  # the body is never handed back
        assert http.post(f"{base}/small", b"b", {}).status == 200
    finally:
        http.close()
    time.sleep(0.2)
    assert sent["huge"] < HUGE  # the server could not write it all: the client hung up
    assert MAX_ANSWER_BYTES < HUGE
    assert seen[0][1] != seen[1][1]  # a new connection after the cut one


def test_a_redirect_is_returned_not_followed(peer, client):
    base, seen, _ = peer
    http = client()
    try:
        answer = http.post(f"{base}/moved", b"a", {})
    finally:
        http.close()
    assert answer.status == 302 and answer.headers["location"] == "/small"
    assert [path for path, _, _ in seen] == ["/moved"]
