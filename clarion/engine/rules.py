"""What a rule is: a key, a description, a config model, a trigger, and candidates."""

from __future__ import annotations

import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, ClassVar, Protocol

from celery import Celery
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from clarion.core.pipeline import Pipeline
from clarion.core.schemas import NotificationContent, SubscriberId
from clarion.settings import Settings


class RuleRuntime(Protocol):
    """What a rule may use of its process (``ctx.runtime``): a :class:`clarion.runtime.Runtime`
    satisfies it. A protocol, not the Runtime itself, because the runtime sits above the
    engine (it builds the rules, and the Celery app whose tasks run them)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def sessions(self) -> sessionmaker[Session]: ...
    @property
    def celery(self) -> Celery: ...
    @property
    def pipeline(self) -> Pipeline: ...


class RuleConfig(BaseModel):
    """Every rule's config has these; a rule's own Config model adds its thresholds."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # Scan rules: seconds between runs on beat (default: the rule's own ``every``).
    every_seconds: float | None = Field(default=None, gt=0)


class Candidate(NotificationContent):
    """A notification a rule wants to exist, for one or many recipients."""

    recipients: list[SubscriberId] = Field(min_length=1)
    # Required here: it is what makes a rule safe to run again.
    dedupe_key: Annotated[str, StringConstraints(min_length=1, max_length=255)]


class EventIn(BaseModel):
    """An event as event rules see it (``POST /v1/events``)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    type: str
    subject: str | None = None
    actor: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    occurred_at: datetime


@dataclass
class RunContext:
    """What a rule may use while it runs. ``now`` is the rule's clock (injectable)."""

    now: datetime
    runtime: RuleRuntime
    event: EventIn | None = None
    # A dry run must have no side effects either (no probes sent, nothing written).
    dry_run: bool = False
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("clarion.engine"))

    def trigger(self) -> EventIn:
        """The event an event rule runs on (a scan rule has none)."""
        if self.event is None:
            raise TypeError("a scan rule has no event")
        return self.event


class Rule(ABC):
    """A rule. Subclasses set ``key``, ``description``, ``pack``, ``Config`` and either
    ``every`` (a scan rule) or ``event_type`` (an event rule), and yield candidates."""

    key: ClassVar[str]
    description: ClassVar[str]
    # Rules of one pack share the pack's config section (CLARION_RULES={"<pack>": {...}}).
    pack: ClassVar[str] = "custom"
    Config: ClassVar[type[RuleConfig]] = RuleConfig
    every: ClassVar[float | None] = None
    event_type: ClassVar[str | None] = None

    def __init__(self, config: RuleConfig) -> None:
        self.config = config

    @property
    def schedule_seconds(self) -> float | None:
        return self.config.every_seconds or self.every if self.event_type is None else None

    @abstractmethod
    def candidates(self, ctx: RunContext) -> Iterable[Candidate]:
        """The notifications that should exist now; yielded lazily, in any batch size."""
