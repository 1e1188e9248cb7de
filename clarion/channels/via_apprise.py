"""What the chat and sms channels share: sending through Apprise, safely.

* **Logs.** Apprise logs the URLs it posts to (tokens and all) at DEBUG and an unparseable
  URL in full at ERROR; urllib3 logs each request's path at DEBUG. A filter on the
  ``apprise`` logger drops its DEBUG and INFO records and replaces every URL in the others
  by ``scheme://[redacted]``, and one on urllib3's drops its DEBUG records made during an
  Apprise send, so no address reaches a log whatever level the deployment runs at.
* **Outbound policy.** A URL a subscriber gives is checked like a webhook URL: its host
  (for self-hosted services such as ``json://``, ``ntfy://``, ``matrix://``) must not be,
  or resolve to, an address outside the public internet unless
  ``CLARION_OUTBOUND_ALLOWED_NETWORKS`` allows it; checked when it is set and again right
  before each send. Apprise resolves the name again when it connects, so unlike webhooks a
  DNS answer that changes in between is not caught; nor does Apprise use
  ``CLARION_OUTBOUND_PROXY`` (docs/channels/chat.md).
* **Outcome.** ``notify()`` answers only True or False: False is retried (the provider
  may be down), a URL Apprise cannot parse is permanent. No Retry-After reaches us.
"""

from __future__ import annotations

import contextvars
import copy
import logging
import re
import socket
import threading
from collections import OrderedDict
from ipaddress import ip_address
from typing import Any

import apprise
from apprise import plugins as apprise_plugins

from clarion.channels import RetryableChannelError
from clarion.channels.outbound import AddressNotAllowed, OutboundPolicy

URL = re.compile(r"\b([a-z][a-z0-9+.-]{1,31})://[^\s'\"<>]+", re.IGNORECASE)
# Apprise's "url: /services/T000/B000/XXX" in connection errors (urllib3's wording).
URL_PATH = re.compile(r"(url: )\S+", re.IGNORECASE)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return URL_PATH.sub(r"\1" + REDACTED, URL.sub(r"\1://" + REDACTED, text))


class _QuietApprise(logging.Filter):
    """Apprise's records without any address in them (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_info = None  # its text quotes the URL; the message says what failed
            record.exc_text = None
        return True


_sending = contextvars.ContextVar("apprise_sending", default=False)


class _QuietHTTP(logging.Filter):
    """urllib3's DEBUG lines ("POST /services/T000/B000/XXX") made during an Apprise send."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not _sending.get()


def quiet_logs() -> None:
    """Install the filters once per process (idempotent)."""
    for name, kind in (("apprise", _QuietApprise), ("urllib3.connectionpool", _QuietHTTP)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())


quiet_logs()


class UnusableURL(ValueError):
    """Apprise does not know the URL (unknown scheme, missing tokens)."""


# Apprise's parse of the URLs sent to lately (tokens, host, targets), kept to build each
# new plugin from: the parse is most of the cost of instantiating one (docs/benchmarks/
# channels.md). Only URLs that instantiated once are kept: given a dict it cannot use,
# Apprise logs the dict, secrets and all. Each send still gets a new plugin, so no state
# (Apprise's throttle clock) carries from one send to the next, as before.
PARSED_URLS = 1024
_parsed: OrderedDict[str, dict[str, Any]] = OrderedDict()
_parsed_lock = threading.Lock()


def _known(url: str) -> dict[str, Any] | None:
    with _parsed_lock:
        parsed = _parsed.get(url)
        if parsed is not None:
            _parsed.move_to_end(url)
        return parsed


def _remember(url: str) -> None:
    parsed = apprise_plugins.url_to_dict(url, secure_logging=True)
    if parsed is None:
        return
    with _parsed_lock:
        _parsed[url] = parsed
        while len(_parsed) > PARSED_URLS:
            _parsed.popitem(last=False)


def instantiate(url: str, timeout: float) -> Any:
    """The Apprise plugin for ``url`` with our timeouts, or UnusableURL."""
    parsed = _known(url)
    if parsed is not None:
        # Apprise adds to the dict it is given: the kept one stays as parsed.
        plugin = apprise.Apprise.instantiate(copy.deepcopy(parsed), suppress_exceptions=True)
    else:
        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if plugin is not None:
            _remember(url)
    if plugin is None:
        raise UnusableURL("Apprise does not recognise this URL (scheme, tokens or format)")
    plugin.socket_connect_timeout = plugin.socket_read_timeout = timeout
    return plugin


def scheme(url: str) -> str:
    return url.partition("://")[0].lower()


def masked(url: str, plugin: Any = None) -> str:
    """What the API shows of a chat URL: its service, never a token. A service's own
    https URL (``https://hooks.slack.com/...``) shows as its Apprise scheme (``slack``)."""
    shown = scheme(url)
    if shown in ("http", "https") and plugin is not None:
        own = getattr(plugin, "secure_protocol", None) or getattr(plugin, "protocol", None)
        own = own[0] if isinstance(own, tuple | list) and own else own
        if isinstance(own, str) and own:
            shown = own
    return f"{shown}://…/****"


def check_host(policy: OutboundPolicy, plugin: Any) -> None:
    """AddressNotAllowed if the plugin's host is, or resolves to, a refused address.

    Cloud services' URLs carry tokens where the host goes (``slack://T000/B000/XXX``): a
    name that does not resolve is let through, as at webhook registration.
    """
    host = str(getattr(plugin, "host", "") or "").strip("[]")
    if not host:
        return
    try:
        literal = ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and (reason := policy.verdict(literal)):
        raise AddressNotAllowed(host, reason)
    port = getattr(plugin, "port", None) or 443
    try:
        policy.resolve(host, int(port))
    except (socket.gaierror, UnicodeError, ValueError):
        return


def notify(plugin: Any, *, title: str, body: str, label: str) -> None:
    """Send once; RetryableChannelError when Apprise reports failure (it says no more)."""
    token = _sending.set(True)
    try:
        ok = bool(plugin.notify(body=body, title=title))
    except Exception as exc:  # a plugin bug or a network error it did not catch
        raise RetryableChannelError(f"{label}: {type(exc).__name__}") from None
    finally:
        _sending.reset(token)
    if not ok:
        raise RetryableChannelError(
            f"{label}: Apprise reported a failure (it gives no status or Retry-After)"
        )
