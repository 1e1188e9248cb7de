"""The outbound address policy on its own: every way of writing an internal address is
refused, public ones pass, allowed networks let chosen ones through, and a failed call's
reason never carries what the peer said. (Registration and delivery through the API, the
worker and real peers: tests/integration/test_outbound.py.)"""

from __future__ import annotations

import http.client
import socket
import ssl
from ipaddress import ip_address, ip_network

import h11
import httpcore
import httpx
import pytest

from clarion.channels.httpclient import PinnedBackend
from clarion.channels.outbound import AddressNotAllowed, OutboundPolicy, failure, refusal
from clarion.settings import Settings

INTERNAL = {
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "10.1.2.3": "private",
    "172.16.5.4": "private",
    "192.168.0.1": "private",
    "169.254.169.254": "link-local",
    "100.64.0.1": "shared address space (CGNAT)",
    "0.0.0.0": "unspecified",
    "224.0.0.1": "multicast",
    "255.255.255.255": "private",  # limited broadcast (ipaddress files it under private)
    "240.0.0.1": "private",  # reserved 240/4
    "::1": "loopback",
    "::": "unspecified",
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped
    "::ffff:169.254.169.254": "link-local",
    "::127.0.0.1": "loopback (embedded IPv4 127.0.0.1)",  # IPv4-compatible
    "::8.8.8.8": "reserved",  # deprecated form, even of a public address
    "64:ff9b::10.0.0.1": "private (embedded IPv4 10.0.0.1)",  # NAT64
    "64:ff9b:1::1": "reserved",  # local-use NAT64
    "2002:a9fe:a9fe::1": "link-local (embedded IPv4 169.254.169.254)",  # 6to4
    "fd00::1": "private",
    "fe80::1%eth0": "link-local",
    "ff02::1": "multicast",
    "2001:db8::1": "private",  # documentation
}
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::8.8.8.8", "2002:808:808::"]


@pytest.mark.parametrize(("address", "reason"), INTERNAL.items(), ids=list(INTERNAL))
def test_internal_addresses_are_refused_with_the_reason(address, reason):
    assert refusal(ip_address(address)) == reason
    with pytest.raises(AddressNotAllowed, match=r"address not allowed \("):
        OutboundPolicy(resolver=fixed(address.split("%")[0])).resolve("hook.example", 443)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert refusal(ip_address(address)) is None


# getaddrinfo reads all of these as 127.0.0.1 (or ::1); the policy checks what it reads.
LOOPBACK_SPELLINGS = ["2130706433", "0177.0.0.1", "0x7f.0.0.1", "127.1", "017700000001", "0"]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS + ["localhost", "LOCALHOST"])
def test_every_spelling_the_resolver_accepts_is_checked_as_resolved(host):
    with pytest.raises(AddressNotAllowed):
        OutboundPolicy().check_url(f"http://{host}:8080/hook")


def test_ipv6_literals_with_zone_ids_are_judged_as_written():
    for url in ("https://[fe80::1%25lo]/x", "https://[fe80::1%25nosuchif]/x"):
        with pytest.raises(AddressNotAllowed, match="link-local"):
            OutboundPolicy().check_url(url)


def test_every_resolved_address_must_pass_not_just_one():
    policy = OutboundPolicy(resolver=fixed("93.184.216.34", "10.0.0.7"))
    with pytest.raises(AddressNotAllowed, match="10.0.0.7: private"):
        policy.check_url("https://mixed.example/hook")


def test_a_name_that_does_not_resolve_is_left_to_the_connect_time_check():
    OutboundPolicy().check_url("https://hooks.example/a")  # .example never resolves
    with pytest.raises(httpcore.ConnectError) as raised:
        PinnedBackend(OutboundPolicy()).connect_tcp("hooks.example", 443, timeout=1)
    assert isinstance(raised.value.__cause__, socket.gaierror)
    assert failure(raised.value) == "name does not resolve"


def test_allowed_networks_let_chosen_addresses_through_mapped_forms_too():
    policy = OutboundPolicy(["127.0.0.0/8", "10.20.0.0/16"])
    for address in ("127.0.0.1", "::ffff:127.0.0.1", "10.20.3.4"):
        assert policy.verdict(ip_address(address)) is None, address
    for address in ("10.21.0.1", "::1", "169.254.169.254"):
        assert policy.verdict(ip_address(address)) is not None, address


def test_the_default_allows_nothing_internal_and_the_embedded_mode_adds_loopback(
    tmp_path, monkeypatch
):
    assert Settings(secret_key="s" * 40).outbound_allowed_networks == []
    embedded = Settings.embedded(tmp_path).outbound_allowed_networks
    assert ip_network("127.0.0.0/8") in embedded and ip_network("::1/128") in embedded
    # A network the developer allows is kept, not replaced by loopback.
    monkeypatch.setenv("CLARION_OUTBOUND_ALLOWED_NETWORKS", '["10.20.0.0/16"]')
    assert ip_network("10.20.0.0/16") in Settings.embedded(tmp_path).outbound_allowed_networks
    assert Settings(secret_key="s" * 40).outbound_allowed_networks == [ip_network("10.20.0.0/16")]


def test_only_an_http_proxy_url_is_accepted():
    proxy = "http://ops:pw-5@proxy:3128"
    settings = Settings(secret_key="s" * 40, outbound_proxy=proxy)
    assert OutboundPolicy.from_settings(settings).proxy == proxy
    assert "pw-5" not in repr(settings)
    for bad in ("socks5://u:pw-5@proxy:1080", "proxy:3128", "http://:3128", "http://proxy:x"):
        with pytest.raises(ValueError, match="CLARION_OUTBOUND_PROXY") as caught:
            Settings(secret_key="s" * 40, outbound_proxy=bad)
        assert "pw-5" not in str(caught.value)


def test_a_failure_reason_carries_nothing_the_peer_sent():
    secret = "internal-token-42"  # e.g. the first line an internal service answered
    cases = {
        # requests/urllib3 wrap the cause: ConnectionError(ProtocolError(..., cause))
        "BadStatusLine": ConnectionError("Connection aborted.", http.client.BadStatusLine(secret)),
        # httpx wraps httpcore's error, which wraps h11's, each quoting the peer's line.
        "RemoteProtocolError": _httpx_error(h11.RemoteProtocolError(f"illegal: {secret}", 400)),
        "LineTooLong": http.client.LineTooLong(secret),
        "Connection refused": ConnectionRefusedError(111, "Connection refused"),
        "timed out": TimeoutError(secret),
        "TLS: WRONG_VERSION_NUMBER": _ssl_error("WRONG_VERSION_NUMBER", secret),
        "connect: address not allowed (10.0.0.1: private)": AddressNotAllowed(
            "10.0.0.1", "private"
        ),
    }
    for expected, exc in cases.items():
        assert failure(exc) == expected


def _httpx_error(cause: Exception) -> httpx.HTTPError:
    try:
        try:
            raise httpcore.RemoteProtocolError(cause) from cause
        except httpcore.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
    except httpx.RemoteProtocolError as exc:
        return exc


def _ssl_error(reason: str, text: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, text)
    exc.reason = reason
    return exc


def fixed(*addresses: str):
    """A resolver answering these addresses for any name."""

    def resolve(host: str, port: int):
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port),
            )
            for a in addresses
        ]

    return resolve
