"""The one list of channels: every name, trait and queue elsewhere is derived from here.

A channel is one package, ``clarion/channels/<key>/`` (or a third-party package), whose
``__init__`` holds a :class:`ChannelSpec` named ``CHANNEL`` and nothing heavy: the sender
class is named by its import path and imported only when a worker builds it, so loading
the registry (API schemas, preferences, queues) never imports a provider's library.

Built-in channels are listed in :data:`BUILTIN`; third-party ones are found through the
``clarion.channels`` entry point group (``key = "package"`` or ``"package:ATTRIBUTE"``),
like rule packs (``clarion.rules``). The registry is read once per process, when first
asked; its order is the built-ins', then the entry points' by key.

This module imports nothing from Clarion: settings, db and core may all read it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

ENTRY_POINT_GROUP = "clarion.channels"
BUILTIN: tuple[str, ...] = (
    "clarion.channels.in_app",
    "clarion.channels.email",
    "clarion.channels.push",
    "clarion.channels.webhook",
    "clarion.channels.chat",
    "clarion.channels.sms",
)
KEY = re.compile(r"^[a-z][a-z0-9_]{1,30}$")
TEMPLATE_FIELDS = ("subject", "html", "text")
# Names that mean something else where channel keys are used: template fields (a built-in
# template's channel tables sit beside them) and "all" (the test button's every channel).
RESERVED = (*TEMPLATE_FIELDS, "all")


@dataclass(frozen=True)
class ChannelSpec:
    """What the rest of Clarion needs to know about a channel, without importing it."""

    key: str
    # "module:Class" of its Channel subclass; None for the inbox, which is delivered by the
    # notification row itself (no queue, no sender).
    sender: str | None
    # The subscriber switches it on and off (preferences API and page, the test button).
    subscriber_controlled: bool = True
    # Deferred to the end of the subscriber's quiet hours.
    quiet_hours: bool = True
    # Held for the subscriber's digest; digests go out on these, in registry order.
    digestible: bool = True
    # The template fields its rendering uses (a template version for it may set others).
    template_fields: tuple[str, ...] = TEMPLATE_FIELDS
    # The worker prefetch multiplier for its deliver queues (None: the global setting).
    # A worker consuming several queues takes the smallest.
    prefetch: int | None = None
    # What a recipient needs to be reachable on it (documentation and the contract test).
    needs: str = ""
    # Every send goes through one provider (an SMTP relay), not one per target: a success
    # means the provider is back, so the retries parked while it was down are due at once
    # instead of after their backoff (docs/concepts/crash-recovery.md).
    one_provider: bool = False
    # How many outcomes the deliver step may commit together (one statement and one commit
    # for the group instead of one per send). A worker killed mid-group sends those again
    # after their lease: more than 1 widens the window of at-least-once from the message in
    # flight to the group, in exchange for a commit per group (docs/concepts/crash-recovery.md).
    outcomes_per_commit: int = 1
    # Its settings, read from CLARION_<KEY>__<FIELD> (nested sections with "__") when a
    # worker builds it: "module:Class" of a pydantic-settings model, or None.
    settings: str | None = None
    # A subscriber address it sends to (a chat URL, a phone number), set through
    # /v1/subscribers/{id}/addresses/{key}: "module:function" taking (value, Settings) and
    # returning (the address to store, its masked form), raising ValueError (422) or
    # clarion.channels.outbound.AddressNotAllowed. None: the channel needs none.
    address: str | None = None

    def __post_init__(self) -> None:
        if not KEY.match(self.key) or self.key in RESERVED:
            raise ValueError(f"channel key {self.key!r} must match {KEY.pattern}, not {RESERVED}")
        if self.outcomes_per_commit < 1:
            raise ValueError(f"channel {self.key!r}: outcomes_per_commit must be at least 1")
        unknown = set(self.template_fields) - set(TEMPLATE_FIELDS)
        if unknown:
            raise ValueError(f"channel {self.key!r}: unknown template fields {sorted(unknown)}")

    @property
    def external(self) -> bool:
        """Sent by a worker from its own deliver queues (every channel but the inbox)."""
        return self.sender is not None

    @property
    def timed(self) -> bool:
        return self.quiet_hours or self.digestible

    def address_check(self) -> Any:
        """The channel's address validator, or None."""
        return _resolve(self.address) if self.address else None

    def settings_model(self) -> Any:
        """The channel's settings class, or None."""
        return _resolve(self.settings) if self.settings else None


def _resolve(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _spec_at(path: str) -> ChannelSpec:
    module, _, name = path.partition(":")
    found = getattr(importlib.import_module(module), name or "CHANNEL", None)
    if not isinstance(found, ChannelSpec):
        raise TypeError(f"{path}: no ChannelSpec named {name or 'CHANNEL'}")
    return found


@functools.cache
def specs() -> Mapping[str, ChannelSpec]:
    """Every channel of this installation by key: built-ins, then entry points by key."""
    found: dict[str, ChannelSpec] = {}
    plugins = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    for origin, spec in [
        *((path, _spec_at(path)) for path in BUILTIN),
        *((f"entry point {ep.name}", _spec_at(ep.value)) for ep in plugins),
    ]:
        if spec.key in found:
            raise ValueError(f"channel {spec.key!r} ({origin}) is registered twice")
        found[spec.key] = spec
    return found


def spec(key: str) -> ChannelSpec | None:
    return specs().get(key)


def names() -> tuple[str, ...]:
    return tuple(specs())


def inbox() -> str:
    """The key of the inbox channel (the one without a sender)."""
    [key] = [s.key for s in specs().values() if not s.external]
    return key


def external() -> tuple[str, ...]:
    """Channels sent by workers, each from its own deliver queues."""
    return tuple(k for k, s in specs().items() if s.external)


def subscriber_channels() -> tuple[str, ...]:
    """The channels a subscriber controls, in the order the API lists them."""
    return tuple(k for k, s in specs().items() if s.subscriber_controlled)


def address_channels() -> tuple[str, ...]:
    """Channels with a subscriber address (/v1/subscribers/{id}/addresses/{channel})."""
    return tuple(k for k, s in specs().items() if s.address)


def quiet_hours_channels() -> frozenset[str]:
    return frozenset(k for k, s in specs().items() if s.quiet_hours)


def digest_channels() -> tuple[str, ...]:
    """The channels digests hold and go out on, in registry order."""
    return tuple(k for k, s in specs().items() if s.digestible)


def literal(*keys_: str) -> Any:
    """A ``Literal`` of these keys (API schemas and OpenAPI enums)."""
    return Literal[keys_]


def unknown(names: object) -> list[str]:
    """The names among ``names`` that are no channel (for settings validation)."""
    return sorted({n for n in names if n not in specs()})  # type: ignore[attr-defined]
