"""What a Clarion process holds: settings, the database engine, the broker and pub/sub.

Built once per process (API app factory, Celery app factory, CLI) and passed down, so
nothing reads global state.
"""

from __future__ import annotations

import uuid
from functools import cached_property

from celery import Celery

from clarion import logs, telemetry
from clarion.channels import check_settings
from clarion.core import idempotency, pubsub, queues
from clarion.core.lanes import NORMAL
from clarion.core.pipeline import Pipeline
from clarion.db.session import make_engine, make_sessionmaker
from clarion.settings import Settings

DELIVER_BATCH = 100


class Runtime:
    def __init__(self, settings: Settings, celery: Celery | None = None) -> None:
        logs.install()  # every Clarion process has a runtime: none logs a secret
        check_settings(settings)  # unknown channel names, a channel's own wrong settings
        self.settings = settings
        self.engine = make_engine(settings.database_url)
        telemetry.track_engine(self.engine)  # traced once tracing starts (clarion.telemetry)
        self.sessions = make_sessionmaker(self.engine)
        self._celery = celery

    @cached_property
    def celery(self) -> Celery:
        if self._celery is None:
            from clarion.workers.app import create_celery

            self._celery = create_celery(self.settings, runtime=self)
        return self._celery

    @cached_property
    def pubsub(self) -> pubsub.PubSub:
        return pubsub.from_url(self.settings.redis_url)

    @cached_property
    def idempotency(self) -> idempotency.IdempotencyStore:
        return idempotency.from_url(self.settings.redis_url, self.settings.idempotency_ttl_seconds)

    @cached_property
    def limits(self):
        """Rate-limit counters (API limits, the routing throttle), shared through Redis."""
        from clarion.core.ratelimits import Limits

        return Limits(self.settings.redis_url)

    @cached_property
    def api_keys(self):
        from clarion.core.auth import ApiKeyVerifier

        return ApiKeyVerifier(self.sessions, self.settings.api_key_cache_seconds)

    @cached_property
    def rules(self):
        from clarion.engine.registry import Rules

        return Rules(self.settings)

    @cached_property
    def templates(self):
        """The active template versions as this process validates sends against (cached)."""
        from clarion.core.template_store import TemplateCatalog

        return TemplateCatalog(
            self.sessions, self.settings.default_locale, self.settings.template_cache_seconds
        )

    @cached_property
    def channels(self):
        from clarion.channels import Channels

        return Channels(self.settings)

    @property
    def pipeline(self) -> Pipeline:
        """The create step's collaborators (``create_notifications`` and the tasks that
        feed ``persist``: scheduled release, digests, rules)."""
        return Pipeline(
            sessions=self.sessions,
            settings=self.settings,
            publisher=self.pubsub,
            dispatcher=self,
            channels=self.channels,
        )

    def deliver(
        self,
        channel: str,
        delivery_ids: list[uuid.UUID],
        countdown: float = 0,
        lane: str = NORMAL,
    ) -> None:
        """Dispatch deliver tasks, batched, to the channel's own queue in the given lane."""
        for start in range(0, len(delivery_ids), DELIVER_BATCH):
            batch = [str(i) for i in delivery_ids[start : start + DELIVER_BATCH]]
            self.celery.send_task(
                "clarion.deliver",
                args=[channel, batch, lane],
                queue=queues.deliver_queue(channel, lane),
                countdown=countdown or None,
            )

    def dead_lettered(self, letter: dict) -> None:
        """Announce a dead letter on the dead_letter queue, for whoever consumes it."""
        self.celery.send_task("clarion.dead_letter", args=[letter], queue=queues.DEAD_LETTER)

    def close(self) -> None:
        if "channels" in self.__dict__:
            self.channels.close()
        if "pubsub" in self.__dict__:
            self.pubsub.close()
        self.engine.dispose()
