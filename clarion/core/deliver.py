"""The ``deliver`` step for external channels: a delivery row's state machine.

    pending ─claim─▶ sending ─▶ sent
                        │  └──▶ skipped (target gone, deactivated; or expired)
                        ├────▶ failed ─(backoff; countdown or sweeper)─▶ claim again
                        └────▶ dead ─▶ dead_letters row + message on the dead_letter queue

Every move is a conditional UPDATE on the expected current status (and, for the outcome,
on the attempt number), so a re-run of a task, or two workers racing on one delivery,
sends it once. The one window that cannot be closed is between the provider accepting a
message and our commit: a worker killed exactly there re-sends that one message when its
lease expires, with the same Message-ID / webhook-id, so receivers can drop it. A channel
whose outcomes are committed in groups (``ChannelSpec.outcomes_per_commit``) re-sends the
uncommitted part of its group instead (at most that many, at most ``GROUP_SECONDS`` old).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from clarion import channels as ch
from clarion import logs, metrics, telemetry
from clarion.core import deliver_jobs, provider
from clarion.core.lanes import NORMAL
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
MAX_ERROR = deliver_jobs.MAX_ERROR
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


def _done(claimed: deliveries.Claimed, outcome: Outcome, started_at: datetime, now: datetime):
    due = now + timedelta(seconds=outcome.delay) if outcome.delay is not None else None
    finished = outcomes.Finished(
        outcome.status, outcome.outcome, outcome.error, outcome.provider_ref, due
    )
    return outcomes.Done(claimed, finished, started_at)


def _letter(channel: str, claimed: deliveries.Claimed, outcome: Outcome, letter_id: int):
    """The dead letter to announce."""
    return {
        "id": letter_id,
        "delivery_id": str(claimed.id),
        "notification_id": str(claimed.notification_id),
        "channel": channel,
        "error": outcome.error or "",
        "attempts": claimed.attempt,
    }


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


# A group of outcomes is committed at the latest this long after its first send, however
# few it holds (a slow provider): the resend window after a crash stays short in time too.
GROUP_SECONDS = 1.0


@dataclass
class _Run:
    """One deliver task's sends: the outcomes committed one by one, or in groups of up to
    the channel's ``outcomes_per_commit``, always before the task returns (and so before
    its message is acked); the retries dispatched together at the end (a crash before then
    leaves them to the sweeper, as they are due)."""

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
    group: int = 1
    # Sent, not yet recorded: (claim, message, outcome, started); the first one's time.
    pending: list[tuple] = field(default_factory=list)
    pending_since: float = 0.0

    def send_all(self, jobs: list, held_until: datetime) -> None:
        """Each claimed job in turn, every outcome recorded before it returns. A send starts
        only with its row's lease far enough ahead for the send to finish (its timeout,
        and the clock tolerance another worker's claim allows): else the outcomes waiting
        are recorded and the lease of the rows left is renewed first, and rows another
        worker has taken over meanwhile are not sent."""
        lease = timedelta(seconds=self.settings.lease_seconds(self.sender.send_timeout))
        margin = timedelta(seconds=self.sender.send_timeout) + deliveries.CLOCK_TOLERANCE
        fresh = True  # just claimed or renewed: renewing again would not buy more time
        lost: set[uuid.UUID] = set()
        try:
            for i, (claim, message, target) in enumerate(jobs):
                now = self.clock()
                if not fresh and now + margin > held_until:
                    self.record()  # while their lease holds: nobody else can send them
                    rest = [c.id for c, _, _ in jobs[i:]]
                    with self.session.begin():
                        kept = deliveries.renew(
                            session=self.session,
                            ids=rest,
                            held_until=held_until,
                            now=now,
                            lease=lease,
                        )
                    held_until, fresh = now + lease, True
                    lost.update(set(rest) - kept)
                if claim.id in lost:
                    self.result.lost_lease += 1
                    log.warning("delivery %s: lease lost to another worker; not sent", claim.id)
                    continue
                self.one(claim, message, target)
                fresh = False
        finally:
            self.record()

    def one(self, claim: deliveries.Claimed, message, target) -> None:
        with self._about(claim):
            started = utcnow()
            outcome = attempt(self.sender, message, target, self.settings, now=started)
            log.debug("delivery %s: %s (attempt %d)", claim.id, outcome.outcome, claim.attempt)
            if outcome.outcome == "gone" and claim.target:
                # Before the outcome: a crash in between leaves the delivery to be claimed
                # again, and its target is then gone, so it is skipped without a send.
                with self.session.begin():
                    self.sender.deactivate(
                        session=self.session, target_id=claim.target, reason=outcome.error or ""
                    )
        if not self.pending:
            self.pending_since = time.monotonic()
        self.pending.append((claim, message, outcome, started))
        full = len(self.pending) >= self.group
        if full or time.monotonic() - self.pending_since > GROUP_SECONDS:
            self.record()

    def _about(self, claim: deliveries.Claimed):
        return logs.about(
            self.requests.get(claim.notification_id),
            notification_id=claim.notification_id,
            delivery_id=claim.id,
            channel=self.sender.key,
        )

    def record(self) -> None:
        """Commit the outcomes waiting, in one statement; then count them, announce the
        dead letters and keep the retries for dispatch."""
        if not self.pending:
            return
        group, self.pending = self.pending, []
        now = utcnow()
        done = [_done(claim, outcome, started, now) for claim, _, outcome, started in group]
        written = outcomes.finish(session=self.session, done=done, channel=self.sender.key, now=now)
        any_sent = False
        for claim, message, outcome, _ in group:
            if claim.id not in written:
                self.result.lost_lease += 1
                with self._about(claim):
                    log.warning(
                        "delivery %s: lease lost to another worker; outcome dropped", claim.id
                    )
                continue
            self._count(claim, message, outcome, written[claim.id])
            any_sent = any_sent or outcome.status == "sent"
        if any_sent:
            provider.answered(self.session, self.sender.key, self.settings)

    def _count(self, claim, message, outcome: Outcome, letter_id: int | None) -> None:
        field_name = COUNTED_AS[outcome.status]
        setattr(self.result, field_name, getattr(self.result, field_name) + 1)
        metrics.delivery_finished(
            self.sender.key,
            outcome.outcome,
            outcome.status,
            dead_lettered=letter_id is not None,
            latency=_since_accepted(message) if outcome.status == "sent" else None,
        )
        if letter_id is not None:
            letter = _letter(self.sender.key, claim, outcome, letter_id)
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
        spec = ch.registry.spec(channel)
        run = _Run(sender, session, settings, scheduler, result, lane, clock=clock)
        run.group = min(spec.outcomes_per_commit if spec else 1, CLAIM_CHUNK)
        try:
            for start in range(0, len(delivery_ids), CLAIM_CHUNK):
                chunk = delivery_ids[start : start + CLAIM_CHUNK]
                with session.begin():
                    now = clock()
                    claimed = deliveries.claim(session=session, ids=chunk, now=now, lease=lease)
                    jobs = (
                        deliver_jobs.load_jobs(session, sender, claimed, run.requests)
                        if claimed
                        else []
                    )
                run.send_all(jobs, held_until=now + lease)
        finally:
            run.dispatch_retries()
    return result
