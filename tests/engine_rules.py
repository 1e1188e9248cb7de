"""Rules used by the engine's framework tests (loaded with CLARION_RULE_MODULES)."""

from __future__ import annotations

from datetime import datetime, timedelta

from clarion.engine import Candidate, Rule, RuleConfig

# The "source" the test rule scans: (id, owner, expires_at); tests set it.
ENTITIES: list[tuple[str, str, datetime]] = []


class ExpiringConfig(RuleConfig):
    threshold_hours: float = 24


class Expiring(Rule):
    """Fires once per entity expiring within the threshold (inclusive)."""

    key = "test_expiring"
    description = "An entity expires soon"
    pack = "testpack"
    Config = ExpiringConfig
    every = 60

    def candidates(self, ctx):
        horizon = ctx.now + timedelta(hours=self.config.threshold_hours)
        for entity_id, owner, expires_at in ENTITIES:
            if ctx.now < expires_at <= horizon:
                yield Candidate(
                    recipients=[owner],
                    category="links",
                    type="test_expiring",
                    title=f"{entity_id} expires at {expires_at:%Y-%m-%d %H:%M}",
                    dedupe_key=f"test_expiring:{entity_id}:{expires_at.isoformat()}",
                )


class Broken(Rule):
    """Always fails after yielding one candidate."""

    key = "test_broken"
    description = "A rule with a bug"
    pack = "testpack"
    Config = ExpiringConfig
    every = 60

    def candidates(self, ctx):
        raise RuntimeError("the source is on fire")
        yield  # pragma: no cover


class Invited(Rule):
    """member.invited → the invitee."""

    key = "test_invited"
    description = "Someone was invited"
    pack = "testpack"
    Config = ExpiringConfig
    event_type = "test.invited"

    def candidates(self, ctx):
        invitee = ctx.event.data.get("invitee")
        if invitee:
            yield Candidate(
                recipients=[invitee],
                category="activities",
                type="member_invited",
                title=f"{ctx.event.actor} invited you",
                dedupe_key=f"test_invited:{ctx.event.id}",
            )


RULES = [Expiring, Broken, Invited]
