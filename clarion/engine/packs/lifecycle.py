"""Built-in rule pack: lifecycle — expiring and expired links and campaigns.

Reads a producer's database (``source_url``, read only) holding two tables; names of
tables and columns are configurable (``lifecycle_config.py``)::

    links(id, owner, url, expires_at, is_active, campaign_id)
    campaigns(id, owner, name, starts_at, ends_at, is_active)

``owner`` is the Clarion subscriber id notified. ``expires_at``/``ends_at`` may be NULL
(never ends); ``is_active`` false means switched off by its owner: such rows are never
reported, as the subject or as the other side of a link–campaign rule. Timestamps may be
``timestamptz`` or naive (wall-clock in ``source_timezone``).

Windows, with now = the run's clock (``as_of``), ``soon`` = ``expiring_within_hours`` and
``back`` = ``lookback_days``; both ends stated, so the boundaries are exact:

* expiring soon: ``now < t <= now + soon`` (fires *at* exactly now + soon);
* expired: ``now - back < t <= now`` (a link expiring exactly now is expired).

Each run re-selects its whole window and the create step skips the (owner, dedupe key)
pairs already stored, so a condition fires once however often the rule runs, and two
engines running at once still create it once. Dedupe keys hold the entity's id and the
date the condition is about: a link whose expiry moves to a new date fires again for it.

Cost: every condition is a range on ``expires_at``/``ends_at``, filtered in SQL and
streamed through a server-side cursor, so a run reads its window, not the history.
Indexes worth having on the source::

    CREATE INDEX ON links (expires_at);   -- both link windows
    CREATE INDEX ON links (campaign_id);  -- links of the campaigns that just ended
    CREATE INDEX ON campaigns (ends_at);  -- both campaign windows
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

from sqlalchemy import Select, func, null, select

from clarion.engine.packs.lifecycle_config import LifecycleConfig
from clarion.engine.packs.lifecycle_db import (
    Clock,
    Source,
    Window,
    is_active,
    read_connection,
    stream,
)
from clarion.engine.rules import Candidate, Rule, RunContext
from clarion.ids import as_utc

LINK_FIELDS = ("id", "owner", "url", "expires_at", "campaign_id")
CAMPAIGN_FIELDS = ("id", "owner", "name", "starts_at", "ends_at")
# Column limits of Clarion's notifications (dedupe key, recipient id, url); label length.
MAX_KEY, MAX_RECIPIENT, MAX_URL, LABEL = 255, 255, 2048, 120


def _links(src: Source) -> list:
    return [_label(src.link(f), f) for f in LINK_FIELDS]


def _campaigns(src: Source, prefix: str = "") -> list:
    return [_label(src.campaign(f), prefix + f) for f in CAMPAIGN_FIELDS]


def _label(column, name: str):
    return (null() if column is None else column).label(name)


def dedupe_key(rule: str, *parts: Any) -> str:
    """``lifecycle:<rule>:<part>:...``; hashed when ids make it longer than the column."""
    key = ":".join(["lifecycle", rule, *map(str, parts)])
    if len(key) <= MAX_KEY:
        return key
    return f"lifecycle:{rule}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def iso(instant: datetime | None) -> str | None:
    return None if instant is None else instant.isoformat().replace("+00:00", "Z")


def human(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%d %H:%M UTC")


def _short(text: str, limit: int = LABEL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(value: Any) -> Any:
    """Ids as JSON keeps them: numbers and strings as they are, anything else as text."""
    return value if isinstance(value, int | str) or value is None else str(value)


class LifecycleRule(Rule):
    """What the seven rules share: the source, the window, the shape of a candidate."""

    pack = "lifecycle"
    Config = LifecycleConfig
    every = 300.0
    category: ClassVar[str]
    severity: ClassVar[str]
    uses_campaigns: ClassVar[bool] = True
    config: LifecycleConfig

    def candidates(self, ctx: RunContext) -> Iterator[Candidate]:
        window = Window(self.config, as_utc(ctx.now))
        with read_connection(self.config) as conn:
            src = Source.reflect(conn, self.config, campaigns=self.uses_campaigns)
            for row in stream(conn, self.query(src, window), self.config):
                candidate = self.candidate(row, window.clock)
                if candidate is not None:
                    yield candidate

    @abstractmethod
    def query(self, src: Source, window: Window) -> Select:
        """The matching rows, selected with the labels ``candidate`` reads."""

    @abstractmethod
    def candidate(self, row: Any, clock: Clock) -> Candidate | None:
        """The notification for one row (None: the row has no usable owner)."""

    def make(self, owner: Any, key: tuple, data: dict, url: str | None, meta: dict):
        """The candidate, worded by the built-in template named after the rule (in the
        recipient's locale; see clarion/templates/*/lifecycle.toml for ``data``)."""
        recipient = "" if owner is None else str(owner)
        if not 0 < len(recipient) <= MAX_RECIPIENT:  # not a subscriber id: nobody to tell
            return None
        return Candidate(
            recipients=[recipient],
            category=self.category,
            type=self.key,
            severity=self.severity,
            template=self.key,
            data=data,
            url=url if url and len(url) <= MAX_URL else None,
            metadata=meta,
            dedupe_key=dedupe_key(self.key, *key),
        )

    # --- the two entities, as notifications show them ---------------------------------

    def link_texts(self, row: Any, clock: Clock) -> tuple[dict, str | None, dict, datetime]:
        """The link as templates show it (``link``, ``expires``), its page, metadata, expiry."""
        expires = clock.read(row.expires_at)
        shown = {
            "link": {"id": _plain(row.id), "label": _short(str(row.url)) if row.url else None},
            "expires": human(expires) if expires else None,
        }
        template = self.config.link_page_url
        url = template.replace("{id}", quote(str(row.id), safe="")) if template else row.url
        meta = {
            "link_id": _plain(row.id),
            "url": _short(str(row.url), 1000) if row.url else None,
            "expires_at": iso(expires),
            "campaign_id": _plain(row.campaign_id),
        }
        return shown, url, meta, expires  # type: ignore[return-value]

    def campaign_texts(self, row: Any, clock: Clock, prefix: str = ""):
        """The campaign as templates show it (``campaign``), its page, metadata, end."""
        cid, name = getattr(row, prefix + "id"), getattr(row, prefix + "name")
        ends = clock.read(getattr(row, prefix + "ends_at"))
        shown = {
            "campaign": {
                "id": _plain(cid),
                "name": _short(str(name)) if name else None,
                "ends": human(ends) if ends else None,
            }
        }
        template = self.config.campaign_page_url
        url = template.replace("{id}", quote(str(cid), safe="")) if template else None
        meta = {
            "campaign_id": _plain(cid),
            "campaign_name": _short(str(name), 500) if name else None,
            "campaign_starts_at": iso(clock.read(getattr(row, prefix + "starts_at"))),
            "campaign_ends_at": iso(ends),
        }
        return shown, url, meta, ends


class LinkExpiringSoon(LifecycleRule):
    """An active link expires within ``expiring_within_hours`` (``now < expires_at <= now +
    threshold``). Once per link and expiry date; medium."""

    key = "link_expiring_soon"
    description = "A link expires soon (within expiring_within_hours)."
    category, severity, uses_campaigns = "links", "medium", False

    def query(self, src, window):
        link = src.link
        return select(*_links(src)).where(
            is_active(link("is_active")), window.soon(link("expires_at"))
        )

    def candidate(self, row, clock):
        shown, url, meta, expires = self.link_texts(row, clock)
        return self.make(row.owner, (row.id, iso(expires)), shown, url, meta)


class LinkExpired(LifecycleRule):
    """An active link expired within the last ``lookback_days`` (``now - lookback <
    expires_at <= now``). Once per link and expiry date; high."""

    key = "link_expired"
    description = "A link expired (within the last lookback_days)."
    category, severity, uses_campaigns = "links", "high", False

    def query(self, src, window):
        link = src.link
        return select(*_links(src)).where(
            is_active(link("is_active")), window.expired(link("expires_at"))
        )

    def candidate(self, row, clock):
        shown, url, meta, expires = self.link_texts(row, clock)
        return self.make(row.owner, (row.id, iso(expires)), shown, url, meta)


class ExpiredLinkHasActiveCampaign(LifecycleRule):
    """A link expired within the lookback while its campaign is still active (not ended,
    or not started yet: it will send visitors to a dead link). Tells the link's owner,
    once per link, expiry date and campaign; high."""

    key = "expired_link_has_active_campaign"
    description = "An expired link belongs to a campaign that is still running."
    category, severity = "links", "high"

    def query(self, src, window):
        link, campaign = src.link, src.campaign
        joined = src.links.join(src.campaigns, link("campaign_id") == campaign("id"))
        return (
            select(*_links(src), *_campaigns(src, "c_"))
            .select_from(joined)
            .where(
                is_active(link("is_active")),
                window.expired(link("expires_at")),
                is_active(campaign("is_active")),
                window.not_over(campaign("ends_at")),
            )
        )

    def candidate(self, row, clock):
        shown, url, meta, expires = self.link_texts(row, clock)
        campaign, _, cmeta, _ = self.campaign_texts(row, clock, "c_")
        key = (row.id, iso(expires), row.c_id)
        return self.make(row.owner, key, {**shown, **campaign}, url, {**meta, **cmeta})


class ActiveLinkHasExpiredCampaign(LifecycleRule):
    """A campaign ended within the lookback but one of its links is still active and not
    expired. Tells the link's owner, once per link, campaign and campaign end date; low
    (often intended, worth a look)."""

    key = "active_link_has_expired_campaign"
    description = "A link is still live although its campaign has ended."
    category, severity = "links", "low"

    def query(self, src, window):
        link, campaign = src.link, src.campaign
        joined = src.campaigns.join(src.links, link("campaign_id") == campaign("id"))
        return (
            select(*_links(src), *_campaigns(src, "c_"))
            .select_from(joined)
            .where(
                is_active(campaign("is_active")),
                window.expired(campaign("ends_at")),
                is_active(link("is_active")),
                window.not_over(link("expires_at")),
            )
        )

    def candidate(self, row, clock):
        shown, url, meta, _ = self.link_texts(row, clock)
        campaign, _, cmeta, ends = self.campaign_texts(row, clock, "c_")
        key = (row.id, row.c_id, iso(ends))
        return self.make(row.owner, key, {**shown, **campaign}, url, {**meta, **cmeta})


class CampaignExpiringSoon(LifecycleRule):
    """An active campaign ends within ``expiring_within_hours`` (``now < ends_at <= now +
    threshold``). Once per campaign and end date; medium."""

    key = "campaign_expiring_soon"
    description = "A campaign ends soon (within expiring_within_hours)."
    category, severity = "campaigns", "medium"

    def query(self, src, window):
        campaign = src.campaign
        return select(*_campaigns(src)).where(
            is_active(campaign("is_active")), window.soon(campaign("ends_at"))
        )

    def candidate(self, row, clock):
        shown, url, meta, ends = self.campaign_texts(row, clock)
        return self.make(row.owner, (row.id, iso(ends)), shown, url, meta)


class CampaignExpired(LifecycleRule):
    """An active campaign ended within the last ``lookback_days`` (``now - lookback <
    ends_at <= now``). Once per campaign and end date; high."""

    key = "campaign_expired"
    description = "A campaign ended (within the last lookback_days)."
    category, severity = "campaigns", "high"

    def query(self, src, window):
        campaign = src.campaign
        return select(*_campaigns(src)).where(
            is_active(campaign("is_active")), window.expired(campaign("ends_at"))
        )

    def candidate(self, row, clock):
        shown, url, meta, ends = self.campaign_texts(row, clock)
        return self.make(row.owner, (row.id, iso(ends)), shown, url, meta)


class CampaignHasExpiredLinks(LifecycleRule):
    """An active campaign (not ended) has links that expired within the lookback. Tells
    the campaign's owner with the count, once per campaign and UTC day of its newest
    expiry: a link expiring on a later day fires again, more on the same day do not; high."""

    key = "campaign_has_expired_links"
    description = "A running campaign has links that expired."
    category, severity = "campaigns", "high"

    def query(self, src, window):
        link, campaign = src.link, src.campaign
        joined = src.campaigns.join(src.links, link("campaign_id") == campaign("id"))
        # Grouped by every campaign column selected: a key the source declares or not.
        grouped = [campaign(f) for f in CAMPAIGN_FIELDS if campaign(f) is not None]
        expires = link("expires_at")
        return (
            select(
                *_campaigns(src),
                func.count().label("expired_links"),
                func.min(expires).label("first_expired"),
                func.max(expires).label("last_expired"),
            )
            .select_from(joined)
            .where(
                is_active(campaign("is_active")),
                window.not_over(campaign("ends_at")),
                is_active(link("is_active")),
                window.expired(expires),
            )
            .group_by(*grouped)
        )

    def candidate(self, row, clock):
        shown, url, meta, _ = self.campaign_texts(row, clock)
        first, last = clock.read(row.first_expired), clock.read(row.last_expired)
        count = row.expired_links
        shown |= {"count": count, "first": human(first), "last": human(last)}
        meta |= {
            "expired_links": count,
            "first_expired_at": iso(first),
            "last_expired_at": iso(last),
        }
        key = (row.id, last.astimezone(UTC).date().isoformat())
        return self.make(row.owner, key, shown, url, meta)


RULES = [
    LinkExpiringSoon,
    LinkExpired,
    ExpiredLinkHasActiveCampaign,
    ActiveLinkHasExpiredCampaign,
    CampaignExpiringSoon,
    CampaignExpired,
    CampaignHasExpiredLinks,
]
