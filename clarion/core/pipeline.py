"""The create step's collaborators, as one typed object (``Runtime.pipeline``).

``create_notifications`` and the tasks that feed ``persist`` (scheduled release, digests,
the rule engine) take them as keyword arguments: ``f(..., **pipeline.kwargs())``, which
a type checker matches against each signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from sqlalchemy.orm import Session, sessionmaker

from clarion.channels import Channels
from clarion.core.create import Dispatcher, Publisher
from clarion.settings import Settings


class PipelineArgs(TypedDict):
    sessions: sessionmaker[Session]
    settings: Settings
    publisher: Publisher
    dispatcher: Dispatcher
    channels: Channels


@dataclass(frozen=True, slots=True)
class Pipeline:
    sessions: sessionmaker[Session]
    settings: Settings
    # Announces inbox rows on pub/sub after commit.
    publisher: Publisher
    # Sends the external deliveries' tasks after commit (the Runtime).
    dispatcher: Dispatcher
    channels: Channels

    def kwargs(self) -> PipelineArgs:
        return PipelineArgs(
            sessions=self.sessions,
            settings=self.settings,
            publisher=self.publisher,
            dispatcher=self.dispatcher,
            channels=self.channels,
        )
