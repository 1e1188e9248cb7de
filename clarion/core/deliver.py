"""The ``deliver`` step for external channels: a delivery row's state machine.

    pending ─claim─▶ sending ─▶ sent
                        │  └──▶ skipped (target gone, deactivated; or expired)
                        ├────▶ failed ─(backoff; countdown or sweeper)─▶ claim again
                        └────▶ dead ─▶ dead_letters row + message on the dead_letter queue

Every move is a conditional UPDATE on the expected current status (and, for the outcome,
on the attempt number), so a re-run of a task, or two workers racing on one delivery,
sends it once. The one window that cannot be closed is between the provider accepting a
message and our commit: a worker killed exactly there re-sends that one message when its
lease expires, with the same Message-ID / webhook-id, so receivers can drop it.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from clarion import channels as ch
from clarion import logs, metrics, telemetry
from clarion.core import provider
from clarion.core.lanes import NORMAL
from clarion.core.schemas import NotificationPublic
from clarion.core.templates import Renderer, TemplateError
from clarion.db import deliveries, outcomes
from clarion.db.session import transaction
from clarion.ids import utcnow
from clarion.settings import Settings

log = logging.getLogger(__name__)

# Deliveries claimed per statement, at most. A claim and its loads (notifications,
# targets) cost three statements, so a larger chunk makes them cheaper per delivery; a
# worker killed mid-chunk leaves the rest for the sweeper after the lease. The chunk is not
# bounded by lease / the channel's worst-case send any more: a send that could outlast the
# lease renews the rest's lease first (see _Run.send_all), so slow sends cost a statement
# only when they are actually slow.
CLAIM_CHUNK = 25
MAX_ERROR = 2000
MAX_RETRY_AFTER = 24 * 3600.0
EXPIRED = "expired"


class Scheduler(Protocol):
    """Where retries and dead letters go after commit (the Runtime, over Celery)."""

    def deliver(
        self, channel: str, delivery_ids: list[uuid.UUID], countdown: float = 0, lane: str = ...
    ) -> None: ...

    def dead_lettered(self, letter: dict[str, Any]) -> None: ...


@dataclass
class DeliverResult:
    sent: int = 0
    retried: int = 0
    dead: int = 0
    skipped: int = 0
    lost_lease: int = 0
    # Retries whose delay is too long for a broker countdown: the sweeper picks them up.
    parked: int = 0
    dead_letters: list[dict[str, Any]] = field(default_factory=list)


def backoff(settings: Settings, attempt: int, retry_after: float | None) -> float:
    """Full-jitter exponential backoff, or the provider's Retry-After when it gave one.

    Celery's get_exponential_backoff_interval does the same in whole seconds only; this
    keeps fractions, so a sub-second base works (and tests need no sleeping).
    """
    if retry_after is not None:
        # The provider knows best; a long hint is parked for the sweeper, not shortened.
        return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
    ceiling = min(
        settings.retry_backoff_max_seconds, settings.retry_backoff_seconds * 2 ** (attempt - 1)
    )
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ch.ChannelError) else str(exc)
    return text[:MAX_ERROR]


def _message(
    claimed: deliveries.Claimed, notification, subscriber, content: tuple = (None, None)
) -> ch.Message:
    public = NotificationPublic.model_validate(notification).model_dump(mode="json")
    public.update(recipient=notification.recipient_id, collapse_key=notification.collapse_key)
    recipient = {
        "id": subscriber.id,
        "email": subscriber.email,
        "name": subscriber.name,
        "locale": subscriber.locale,
        "timezone": subscriber.timezone,
    }
    return ch.Message(claimed.id, claimed.attempt, public, recipient, *content, event=claimed.event)


def _content(renderer: Renderer | None, channel: str, notification, subscriber) -> tuple:
    """(rendered content, error) of a notification sent by template, for this channel in
    the recipient's locale; (None, None) for one sent with a title and body."""
    if renderer is None or not notification.template:
        return None, None
    try:
        rendered = renderer.render(
            notification.template,
            channel,
            subscriber.locale,
            notification.template_data,
            share=notification.id,
        )
    except TemplateError as exc:
        return None, f"template {notification.template!r} ({channel}): {exc}"[:MAX_ERROR]
    spec = ch.registry.spec(channel)
    fields = spec.template_fields if spec else ch.registry.TEMPLATE_FIELDS
    # A channel sees the fields it declared (an SMS has no HTML), each possibly None.
    return {k: v for k, v in rendered.as_dict().items() if k in fields}, None


def _jobs(
    session: Session,
    channel: ch.Channel,
    claimed: list[deliveries.Claimed],
    requests: dict[uuid.UUID, uuid.UUID] | None = None,
) -> list:
    """Claimed deliveries with their message and target; missing ones come back as None.
    ``requests`` gets each notification's send request id (for the log lines)."""
    context = deliveries.contexts(
        session=session, notification_ids={c.notification_id for c in claimed}
    )
    targets = channel.load_targets(session=session, ids={c.target for c in claimed})
    keys = {n.template for n, _ in context.values() if n.template}
    renderer = (
        Renderer(session=session, keys=keys, default_locale=channel.settings.default_locale)
        if keys
        else None
    )
    jobs = []
    for c in claimed:
        found = context.get(c.notification_id)
        if found and requests is not None:
            requests[c.notification_id] = found[0].request_id
        content = _content(renderer, channel.key, *found) if found else (None, None)
        message = _message(c, *found, content) if found else None
        jobs.append((c, message, targets.get(c.target)))
    return jobs


class Outcome:
    """What one attempt came to, and the row it leaves."""

    def __init__(self, status: str, outcome: str, error: str | None = None, **extra) -> None:
        self.status, self.outcome, self.error = status, outcome, error
        self.provider_ref: str | None = extra.get("provider_ref")
        self.delay: float | None = extra.get("delay")


def expired(message: ch.Message, now: datetime) -> bool:
    """Past the notification's ``expires_at``: it must not reach anyone on any channel."""
    expires_at = message.notification.get("expires_at")
    return expires_at is not None and datetime.fromisoformat(expires_at) <= now


def attempt(
    channel: ch.Channel,
    message: ch.Message | None,
    target: dict | None,
    settings: Settings,
    now: datetime | None = None,
) -> Outcome:
    """Render and send one delivery; classify what happened. Never raises."""
    if message is None:
        return Outcome("skipped", "gone", "the notification no longer exists")
    if not message.event and expired(message, now or utcnow()):
        # Skipped is final: neither the sweeper nor a retry picks it up again. (A click's
        # event is the producer's feedback: it goes even after the notification expired.)
        return Outcome("skipped", "expired", EXPIRED)
    if target is None:
        return Outcome("skipped", "gone", "the target was removed or deactivated")
    try:
        with telemetry.sending(channel.key, message.delivery_id, message.attempt):
            with metrics.RENDER_DURATION.labels(channel.key).time():
                payload = channel.render(message, target)
            with metrics.SEND_DURATION.labels(channel.key).time():
                ref = channel.send(payload, target)
    except ch.TargetGoneError as exc:
        return Outcome("skipped", "gone", _error_text(exc))
    except ch.PermanentChannelError as exc:
        return Outcome("dead", "dead", _error_text(exc))
    except Exception as exc:  # Retryable, or anything unexpected: never lose it.
        if not isinstance(exc, ch.RetryableChannelError):
            log.exception("channel %s raised an unexpected error", channel.key)
        error = _error_text(exc)
        if message.attempt >= settings.max_attempts(channel.key):
            return Outcome("dead", "dead", f"gave up after {message.attempt} attempts: {error}")
        retry_after = getattr(exc, "retry_after", None)
        return Outcome(
            "failed", "retry", error, delay=backoff(settings, message.attempt, retry_after)
        )
    return Outcome("sent", "sent", provider_ref=ref[:255] if ref else None)


def _record(
    session: Session,
    channel: ch.Channel,
    claimed: deliveries.Claimed,
    outcome: Outcome,
    started_at: datetime,
) -> dict[str, Any] | None:
    """Store the outcome; returns the dead letter to announce, if any."""
    if outcome.outcome == "gone" and claimed.target:
        # Before the outcome: a crash in between leaves the delivery to be claimed again,
        # and its target is then gone, so it is skipped without a send.
        with session.begin():
            channel.deactivate(
                session=session, target_id=claimed.target, reason=outcome.error or ""
            )
    now = utcnow()
    due = now + timedelta(seconds=outcome.delay) if outcome.delay is not None else None
    finished = outcomes.Finished(
        outcome.status, outcome.outcome, outcome.error, outcome.provider_ref, due
    )
    owned, letter_id = outcomes.finish(
        session=session,
        claimed=claimed,
        outcome=finished,
        channel=channel.key,
        started_at=started_at,
        now=now,
    )
    if not owned:
        raise LostLease
    if letter_id is None:
        return None
    return {
        "id": letter_id,
        "delivery_id": str(claimed.id),
        "notification_id": str(claimed.notification_id),
        "channel": channel.key,
        "error": outcome.error or "",
        "attempts": claimed.attempt,
    }


class LostLease(Exception):
    """Another worker took the delivery over after this one's lease expired."""


# Retries are dispatched in groups whose delays are close: a retry waits at most this much
# longer than its own delay (times the ratio, plus the slack), so one task carries many
# retries and the full jitter still spreads them out.
RETRY_GROUP_RATIO = 1.25
RETRY_GROUP_SLACK = 0.05


def retry_groups(retries: list[tuple[float, uuid.UUID]]) -> list[tuple[float, list[uuid.UUID]]]:
    """(countdown, ids) per group of retries with close delays; each group goes at its
    longest delay, so none is claimed before its row is due."""
    groups: list[tuple[float, list[uuid.UUID]]] = []
    first = longest = 0.0
    ids: list[uuid.UUID] = []
    for delay, delivery_id in sorted(retries, key=lambda r: r[0]):
        if ids and delay > first * RETRY_GROUP_RATIO + RETRY_GROUP_SLACK:
            groups.append((longest, ids))
            ids = []
        if not ids:
            first = delay
        ids.append(delivery_id)
        longest = delay
    if ids:
        groups.append((longest, ids))
    return groups


@dataclass
class _Run:
    """One deliver task's sends: each outcome committed on its own; the retries dispatched
    together at the end (a crash before then leaves them to the sweeper, as they are due)."""

    sender: ch.Channel
    session: Session
    settings: Settings
    scheduler: Scheduler
    result: DeliverResult
    lane: str = NORMAL  # retries stay in the lane the delivery came on
    retries: list[tuple[float, uuid.UUID]] = field(default_factory=list)
    clock: Callable[[], datetime] = utcnow
    # Each claimed notification's send request id, for the log context.
    requests: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)

    def send_all(self, jobs: list, held_until: datetime) -> None:
        """Each claimed job in turn. A send starts only with its row's lease far enough
        ahead for the send to finish (its timeout, and the clock tolerance another worker's
        claim allows): else the lease of the rows left is renewed first, in one statement,
        and rows another worker has taken over meanwhile are not sent."""
        lease = timedelta(seconds=self.settings.lease_seconds(self.sender.send_timeout))
        margin = timedelta(seconds=self.sender.send_timeout) + deliveries.CLOCK_TOLERANCE
        fresh = True  # just claimed or renewed: renewing again would not buy more time
        lost: set[uuid.UUID] = set()
        for i, (claim, message, target) in enumerate(jobs):
            now = self.clock()
            if not fresh and now + margin > held_until:
                rest = [c.id for c, _, _ in jobs[i:]]
                with self.session.begin():
                    kept = deliveries.renew(
                        session=self.session, ids=rest, held_until=held_until, now=now, lease=lease
                    )
                held_until, fresh = now + lease, True
                lost.update(set(rest) - kept)
            if claim.id in lost:
                self.result.lost_lease += 1
                log.warning("delivery %s: lease lost to another worker; not sent", claim.id)
                continue
            self.one(claim, message, target)
            fresh = False

    def one(self, claim: deliveries.Claimed, message, target) -> None:
        with logs.about(
            self.requests.get(claim.notification_id),
            notification_id=claim.notification_id,
            delivery_id=claim.id,
            channel=self.sender.key,
        ):
            self._one(claim, message, target)

    def _one(self, claim: deliveries.Claimed, message, target) -> None:
        started = utcnow()
        outcome = attempt(self.sender, message, target, self.settings, now=started)
        log.debug("delivery %s: %s (attempt %d)", claim.id, outcome.outcome, claim.attempt)
        try:
            letter = _record(self.session, self.sender, claim, outcome, started)
        except LostLease:
            self.result.lost_lease += 1
            log.warning("delivery %s: lease lost to another worker; outcome dropped", claim.id)
            return
        field_name = COUNTED_AS[outcome.status]
        setattr(self.result, field_name, getattr(self.result, field_name) + 1)
        metrics.delivery_finished(
            self.sender.key,
            outcome.outcome,
            outcome.status,
            dead_lettered=letter is not None,
            latency=_since_accepted(message) if outcome.status == "sent" else None,
        )
        if outcome.status == "sent":
            provider.answered(self.session, self.sender.key, self.settings)
        if letter is not None:
            self.result.dead_letters.append(letter)
            self.scheduler.dead_lettered(letter)
        elif outcome.delay is None:
            return
        elif outcome.delay <= self.settings.broker_visibility_timeout / 2:
            self.retries.append((outcome.delay, claim.id))
        else:
            self.result.parked += 1  # the sweeper enqueues it when it is due

    def dispatch_retries(self) -> None:
        for countdown, ids in retry_groups(self.retries):
            self.scheduler.deliver(self.sender.key, ids, countdown=countdown, lane=self.lane)
        self.retries.clear()


def _since_accepted(message: ch.Message | None) -> float | None:
    """Seconds from the notification's acceptance (its created_at) to now; None for a
    click's event, which follows the user's click, not the notification's creation."""
    if message is None or message.event:
        return None
    created_at = message.notification.get("created_at")
    if not created_at:
        return None
    return (utcnow() - datetime.fromisoformat(created_at)).total_seconds()


COUNTED_AS = {"sent": "sent", "failed": "retried", "dead": "dead", "skipped": "skipped"}


def deliver(
    delivery_ids: list[uuid.UUID],
    *,
    channel: str,
    sessions: sessionmaker[Session],
    settings: Settings,
    channels: ch.Channels,
    scheduler: Scheduler,
    clock: Callable[[], datetime] = utcnow,
    lane: str = NORMAL,
) -> DeliverResult:
    """Send the deliverable ones among ``delivery_ids``; the rest are left as they are."""
    result = DeliverResult()
    sender = channels.get(channel)
    if isinstance(sender, str):
        with transaction(sessions) as session:
            result.skipped = deliveries.skip_pending(
                session=session, ids=delivery_ids, reason=sender, now=clock()
            )
        metrics.deliveries_skipped(channel, result.skipped)
        return result
    lease = timedelta(seconds=settings.lease_seconds(sender.send_timeout))
    with outcomes.held_session(
        sessions, synchronous_commit=settings.delivery_synchronous_commit
    ) as session:
        run = _Run(sender, session, settings, scheduler, result, lane, clock=clock)
        try:
            for start in range(0, len(delivery_ids), CLAIM_CHUNK):
                chunk = delivery_ids[start : start + CLAIM_CHUNK]
                with session.begin():
                    now = clock()
                    claimed = deliveries.claim(session=session, ids=chunk, now=now, lease=lease)
                    jobs = _jobs(session, sender, claimed, run.requests) if claimed else []
                run.send_all(jobs, held_until=now + lease)
        finally:
            run.dispatch_retries()
    return result
