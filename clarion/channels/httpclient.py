"""The one HTTP client of the channels that call out (webhooks, web push): httpx.

Every channel gets its :class:`OutboundHttp` from here, so they all behave the same:

* keep-alive pooling (one httpx transport and its httpcore pool per process, built after
  the worker forked; HTTP/1.1);
* separate connect and read timeouts; no redirect is followed (a 3xx is the channel's to
  judge), no retry (a POST that may have arrived is the deliver step's to retry, with
  backoff), no cookies kept;
* nothing from the environment: no ``*_PROXY``, no ``.netrc``, no ``SSL_CERT_FILE``;
  certificates are checked against certifi's public CAs;
* an answer's body is read, up to :data:`MAX_ANSWER_BYTES`, only so the connection can
  serve the next call; it is never returned, stored or logged;
* the SSRF check at connect time: :class:`PinnedBackend` is the httpcore network backend
  of the pool. It resolves the host once with the :class:`OutboundPolicy`, which checks
  every address, and connects to those very addresses; httpcore keeps the URL's name for
  ``Host``, TLS SNI and the certificate check, so a DNS answer that changes between the
  check and the connection (rebinding) never reaches an internal address;
* with ``CLARION_OUTBOUND_PROXY``, every call goes through that proxy (a CONNECT tunnel for
  https, an absolute URL for http), after the origin was resolved and checked here.

httpx has no public connect hook: :class:`CheckedTransport` is an ``httpx.HTTPTransport``
whose httpcore pool is built here with the pinned backend (httpcore's public
``network_backend`` parameter). The SSRF tests (tests/integration/test_outbound.py) fail if
a new httpx stopped using it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from clarion.channels.outbound import OutboundPolicy
from clarion.version import __version__

USER_AGENT = f"Clarion/{__version__}"
# A peer cannot make a worker buffer a large answer: past this, the connection is dropped.
MAX_ANSWER_BYTES = 4096
# An idle kept-alive connection is closed after this long (and reopened on the next call).
KEEPALIVE_SECONDS = 60.0
# Everything a failed exchange raises once the URL was usable. OSError: a socket error
# outside httpcore's own mapping, should one escape.
TRANSPORT_ERRORS = (httpx.TransportError, OSError)

# httpx logs every request at INFO with its URL (webhook URLs can carry tokens) and the
# peer's own reason phrase; httpcore's DEBUG trace quotes what the peer sent (an internal
# service's first line). Neither may reach Clarion's logs: only their warnings do.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class UnusableURL(ValueError):
    """The URL cannot be called at all (malformed, or not http/https): a permanent
    failure, unlike a transport error."""


@dataclass(frozen=True)
class Answer:
    """What a call returns: the status and headers, never the body."""

    status: int
    headers: httpx.Headers  # case-insensitive get()


class PinnedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to the addresses the policy checked."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        try:  # AddressNotAllowed is not caught: it reaches the channel as it is
            infos = self.policy.resolve(host, port)
        except (OSError, UnicodeError) as exc:  # socket.gaierror: the name does not resolve
            raise httpcore.ConnectError(exc) from exc
        error: Exception | None = None
        for info in infos:  # the checked addresses, in the resolver's order
            try:
                # An IP literal: socket.create_connection does no lookup for it.
                return super().connect_tcp(
                    str(info[4][0]), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error or httpcore.ConnectError(OSError(f"no address for {host}"))


class CheckedTransport(httpx.HTTPTransport):
    """httpx's transport with the policy at connect time (direct) or before the proxy."""

    def __init__(self, policy: OutboundPolicy, *, verify: Any = None) -> None:
        # Not super().__init__(): it builds a pool without our backend. handle_request,
        # close and the context manager of HTTPTransport only use self._pool.
        self.policy = policy
        ssl_context = verify or httpx.create_ssl_context(trust_env=False)
        common: dict[str, Any] = {
            "ssl_context": ssl_context,
            "max_connections": 100,
            "max_keepalive_connections": 100,
            "keepalive_expiry": KEEPALIVE_SECONDS,
            "http1": True,
            "http2": False,
        }
        if policy.proxy:
            # The proxy's own address is the operator's choice, not checked; it resolves
            # and connects to the origin, which handle_request checks first.
            proxy = httpx.Proxy(policy.proxy)
            self._pool = httpcore.HTTPProxy(
                proxy_url=httpcore.URL(
                    scheme=proxy.url.raw_scheme,
                    host=proxy.url.raw_host,
                    port=proxy.url.port,
                    target=proxy.url.raw_path,
                ),
                proxy_auth=proxy.raw_auth,
                proxy_headers=proxy.headers.raw,
                **common,
            )
        else:
            self._pool = httpcore.ConnectionPool(network_backend=PinnedBackend(policy), **common)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.policy.proxy:
            url = request.url
            host = url.raw_host.decode("ascii")
            try:
                self.policy.resolve(host, url.port or (443 if url.scheme == "https" else 80))
            except (OSError, UnicodeError) as exc:
                raise httpx.ConnectError(f"{host} does not resolve", request=request) from exc
        return super().handle_request(request)


class OutboundHttp:
    """A channel's handle on the one HTTP client: POST, and close. Thread-safe (Celery's
    thread pool may share a channel between threads); one pool per process.

    Requests go straight to the transport (httpx's transport API), not through
    ``httpx.Client``: a client's redirects, cookies, auth and event hooks are all things
    an outbound call must not have, and skipping them takes a third off the CPU of a POST
    (docs/benchmarks/channels.md).
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        connect_timeout: float,
        read_timeout: float,
        verify: Any = None,
    ) -> None:
        self.policy = policy
        self.verify = verify
        # Writing a request is bounded like reading its answer; waiting for a pooled
        # connection like opening one.
        self.timeouts = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
        ).as_dict()
        self._transport: CheckedTransport | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        """One POST. Raises AddressNotAllowed when the policy refuses the origin,
        UnusableURL when the URL cannot be called, one of TRANSPORT_ERRORS (timeouts are
        ``httpx.TimeoutException``) when no answer came back. Never follows a redirect."""
        transport = self._pool()
        try:
            request = httpx.Request(
                "POST",
                url,
                content=body,
                headers={"User-Agent": USER_AGENT, **headers},
                extensions={"timeout": self.timeouts},
            )
            response = transport.handle_request(request)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise UnusableURL(str(exc)) from None
        try:
            _drain(response)
            return Answer(response.status_code, response.headers)
        finally:
            response.close()

    def _pool(self) -> CheckedTransport:
        with self._lock:
            if self._transport is None or self._pid != os.getpid():
                # After a fork the parent's connections are not ours to use (or close).
                self._transport = CheckedTransport(self.policy, verify=self.verify)
                self._pid = os.getpid()
            return self._transport

    def close(self) -> None:
        with self._lock:
            transport, self._transport = self._transport, None
        if transport is not None and self._pid == os.getpid():
            transport.close()


def _drain(response: httpx.Response) -> None:
    """Read a short answer to its end, so its connection can serve the next call; a longer
    one is cut (the connection is then closed, not reused). What it says is not kept."""
    read = 0
    with contextlib.suppress(*TRANSPORT_ERRORS, httpx.StreamError):
        for chunk in response.iter_raw(MAX_ANSWER_BYTES):
            read += len(chunk)
            if read > MAX_ANSWER_BYTES:
                break
