"""Where Clarion's outbound HTTP calls (webhooks, web push) may go: the public internet.

Webhook URLs come from admin keys and push endpoints from any end user, so without a
check either could make a worker call an internal service (server-side request forgery).
:class:`OutboundPolicy` is the one check, used twice:

* at registration (``check_url``): the URL's host is resolved and refused when it is, or
  resolves to, an address that is not globally routable;
* at connect time (``resolve``, called by the HTTP client's network backend,
  :class:`clarion.channels.httpclient.PinnedBackend`): the host is resolved once, every
  address is checked, and the socket connects to those very addresses. The client keeps
  the original host for ``Host``, SNI and certificate checks, so a DNS answer that changes
  between the two (rebinding) cannot reach an internal address.

``getaddrinfo`` reads every form of an IPv4 address (``2130706433``, ``0177.0.0.1``,
``127.1``) and IPv6 literals with zone ids, so checking what it returns covers them all.
Networks in ``CLARION_OUTBOUND_ALLOWED_NETWORKS`` are let through (tests, private
deployments; ``clarion dev`` allows loopback).

The client-agnostic part is here; the one HTTP client (``httpclient.py``) enforces it.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any
from urllib.parse import unquote, urlsplit

from clarion.settings import Settings

AddrInfo = tuple[Any, ...]  # (family, type, proto, canonname, sockaddr), as getaddrinfo
Resolver = Callable[[str, int], Sequence[AddrInfo]]

CGNAT = ip_network("100.64.0.0/10")  # RFC 6598 shared address space
NAT64 = ip_network("64:ff9b::/96")  # RFC 6052: the last 32 bits are an IPv4 address
IPV4_COMPATIBLE = ip_network("::/96")  # deprecated ::a.b.c.d


class AddressNotAllowed(Exception):
    """The destination is, or resolves to, an address outside the public internet that
    ``CLARION_OUTBOUND_ALLOWED_NETWORKS`` does not allow: Clarion must not call it.

    Not an OSError on purpose: HTTP clients wrap and retry OSErrors, and this must reach
    the channel as it is (a refused call is permanent, not a network hiccup).
    """

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"address not allowed ({address}: {reason})")
        self.address, self.reason = address, reason


def system_resolver(host: str, port: int) -> Sequence[AddrInfo]:
    """The operating system's resolver (``/etc/hosts``, DNS, numeric forms)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def _embedded_v4(ip: IPv4Address | IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address carries (compatible, NAT64, 6to4), if any."""
    if not isinstance(ip, IPv6Address):
        return None
    if ip in IPV4_COMPATIBLE or ip in NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour  # 6to4, RFC 3056 (None outside 2002::/16)


def refusal(ip: IPv4Address | IPv6Address) -> str | None:
    """Why ``ip`` is not a public internet address, or None when it is.

    Python's ``is_global`` alone is not enough (3.11 calls multicast, ``::127.0.0.1`` and
    6to4 of a private address global), so each class is tested explicitly.
    """
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for name, bad in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("shared address space (CGNAT)", ip in CGNAT),
        ("private", ip.is_private),
    ):
        if bad:
            return name
    embedded = _embedded_v4(ip)
    if embedded is not None:
        if inner := refusal(embedded):
            return f"{inner} (embedded IPv4 {embedded})"
        if ip in NAT64:
            return None  # DNS64's answer for a public IPv4 host on an IPv6-only network
    if ip in IPV4_COMPATIBLE or ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


class OutboundPolicy:
    """The destinations one process may call (the HTTP client checks every connection here).

    ``allowed``: networks let through even though they are not public. ``proxy``: the
    explicit proxy (``CLARION_OUTBOUND_PROXY``) the clients send through, if any; the
    target is then still resolved and checked here, but it is the proxy that resolves it
    again and connects. ``resolver`` is replaceable (a test proves rebinding is refused).
    """

    def __init__(
        self,
        allowed: Iterable[IPv4Network | IPv6Network | str] = (),
        *,
        proxy: str | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.allowed = tuple(ip_network(net) for net in allowed)
        self.proxy = proxy
        self.resolver = resolver

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        proxy = settings.outbound_proxy
        return cls(
            settings.outbound_allowed_networks, proxy=proxy.get_secret_value() if proxy else None
        )

    def verdict(self, ip: IPv4Address | IPv6Address) -> str | None:
        """Why a connection to ``ip`` is refused, or None when it is allowed."""
        plain = ip.ipv4_mapped if isinstance(ip, IPv6Address) and ip.ipv4_mapped else ip
        if any(plain in net or ip in net for net in self.allowed):
            return None
        return refusal(ip)

    def resolve(self, host: str, port: int) -> list[AddrInfo]:
        """Resolve once and check every address; AddressNotAllowed if any is refused.

        Every address must pass, not just one: a client (or a retry) could otherwise
        land on the refused one. Raises ``socket.gaierror`` when the name does not
        resolve.
        """
        infos = list(self.resolver(host, port))
        for info in infos:
            text = str(info[4][0])
            reason = self.verdict(ip_address(text))
            if reason is not None:
                raise AddressNotAllowed(text, reason)
        if not infos:
            raise socket.gaierror(socket.EAI_NONAME, "no address")
        return infos

    def check_url(self, url: str) -> None:
        """Registration-time check of an http(s) URL; AddressNotAllowed if refused.

        A name that does not resolve (yet) is accepted: the check at connect time is the
        one that holds, and registration must not depend on DNS being up.
        """
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return  # malformed: the schema refuses it, with its own message
        host = unquote(parts.hostname or "")  # zone ids come %25-encoded: fe80::1%25eth0
        try:  # an IPv6 literal is judged as written, even with a zone no interface has
            literal = ip_address(host)
        except ValueError:
            literal = None
        if literal is not None and (reason := self.verdict(literal)):
            raise AddressNotAllowed(host, reason)
        try:
            self.resolve(host, port)
        except (socket.gaierror, UnicodeError):
            return


def status_text(status: int) -> str:
    """``500 Internal Server Error``: the code and its standard phrase, never the peer's
    own reason phrase (which, like the body, is whatever the server chose to say)."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def failure(exc: BaseException) -> str:
    """A short reason for a failed call, with nothing the peer sent in it.

    Exception texts can carry what the server answered (``BadStatusLine`` holds the line
    an internal service replied with), and stored errors are readable by producers, so
    only our own words, ``strerror`` and exception type names are used.
    """
    cause = _innermost(exc)
    if isinstance(cause, AddressNotAllowed):
        return f"connect: {cause}"
    if isinstance(cause, TimeoutError):
        return "timed out"
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS: {cause.verify_message or 'certificate verify failed'}"
    if isinstance(cause, ssl.SSLError):
        return f"TLS: {cause.reason or type(cause).__name__}"
    if isinstance(cause, socket.gaierror):
        return "name does not resolve"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return type(cause).__name__


def _innermost(exc: BaseException) -> BaseException:
    """The root cause of a wrapped exception (httpx wraps httpcore's, which wraps the
    socket's)."""
    seen = {id(exc)}
    while True:
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in exc.args if isinstance(a, BaseException)), None)
        inner = inner or exc.__cause__
        if inner is None or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner
