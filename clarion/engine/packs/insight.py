"""Built-in rule pack: insight (see docs/rules.md).

Scan rules over a table of timestamped events (visits, conversions) with dimensions
(country, device) and a subject (a link, a page, a workspace). By default that table is
Clarion's own ``events``: ``occurred_at`` is the time, ``type`` the kind of event,
``subject`` the subject, and ``data`` holds the dimensions and the subject's owner. Any
other table, in this database or another (``source_url``), works by naming its columns;
``"data.country"`` means the key ``country`` of the JSON column ``data``.

Every rule asks the database for counts per (subject, period[, dimension]) in one
GROUP BY, so a month of raw events never leaves the database; the decisions are made on
those counts by the pure functions of :mod:`clarion.engine.packs.stats`.

Windows are aligned to UTC multiples of their length (the hour 13:00–14:00, the day
00:00–24:00), a rule looks at the last *complete* window, and the dedupe key names the
subject, the rule and the window's end: every run in the next hour sees the same window
and creates nothing new. A window no run looked at (beat down for longer than it) is not
looked at later.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from clarion.engine.packs import stats
from clarion.engine.packs.insight_config import (
    ConversionConfig,
    DeviceConfig,
    NewCountryConfig,
    TrafficConfig,
    WindowConfig,
)
from clarion.engine.packs.insight_source import (
    DAY,
    InsightConfig,
    Source,
    window_end,
)
from clarion.engine.rules import Candidate, Rule, RunContext


def _when(start: datetime, end: datetime) -> dict[str, Any]:
    """The window as templates word it: whole days from a midnight, or hours of a day."""
    days = (end - start).days if end - start >= timedelta(days=1) and start.hour == 0 else 0
    return {
        "date": f"{start:%Y-%m-%d}",
        "start": f"{start:%H:%M}",
        "end": f"{end:%H:%M}",
        "days": days,
    }


class _InsightRule(Rule):
    pack = "insight"
    Config = InsightConfig
    config: InsightConfig

    def candidates(self, ctx: RunContext) -> Iterable[Candidate]:
        """One connection per run: the rule's ``hits``, then the owners of those subjects."""
        source = Source(self.config)
        with source.connect(ctx.runtime) as conn:
            hits = list(self.hits(ctx, source, conn))
            owners = source.owners(conn, {h[0]: h[1] for h in hits}) if hits else {}
        for subject, _, window, content in hits:
            yield from self.candidate(subject, owners.get(subject), window, **content)

    def hits(self, ctx: RunContext, source: Source, conn: sa.Connection) -> Iterable[tuple]:
        """``(subject, (start, end) where its owner is found, window, content)`` for every
        subject the rule fires for."""
        raise NotImplementedError

    def candidate(
        self, subject: str, owner: str | None, window: tuple[datetime, datetime], **content: Any
    ) -> list[Candidate]:
        """The notification for one subject: to its owner and the configured recipients;
        none when the subject has no owner and no recipients are configured. Worded by
        the built-in template named after the rule (clarion/templates/*/insight.toml)
        from ``content["data"]``, to which the subject and the window are added."""
        recipients = list(dict.fromkeys([*([owner] if owner else []), *self.config.recipients]))
        if not recipients:
            return []
        start, end = window
        long = len(subject) > 160  # the key must stay within 255 characters
        name = "sha256-" + hashlib.sha256(subject.encode()).hexdigest() if long else subject
        where = {"start": start.isoformat(), "end": end.isoformat()}
        content["metadata"] = {"subject": subject, "window": where, **content["metadata"]}
        content["data"] = {"subject": subject, "window": _when(start, end), **content["data"]}
        template = self.config.url_template
        url = template.replace("{subject}", subject) if template else None
        key = f"insight:{self.key}:{name}:{end:%Y%m%dT%H%M}Z"
        return [
            Candidate(
                category="insight",
                type=self.key,
                template=self.key,
                recipients=recipients,
                url=url,
                dedupe_key=key,
                **content,
            )
        ]


class _Traffic(_InsightRule):
    Config = TrafficConfig
    config: TrafficConfig
    every = 900
    spike: bool

    def hits(self, ctx: RunContext, source: Source, conn: sa.Connection) -> Iterable[tuple]:
        c = self.config
        bucket, season = timedelta(seconds=c.bucket_seconds), timedelta(seconds=c.season_seconds)
        end = window_end(ctx.now, c.bucket_seconds)
        periods = [(k, end - bucket - k * season, end - k * season) for k in range(c.seasons + 1)]
        counts: dict[str, dict[int, int]] = defaultdict(dict)
        for subject, period, _, n in source.aggregate(conn, periods, kinds=c.visit_kinds):
            counts[subject][period] = n
        if not self.spike and counts and not any(by.get(0) for by in counts.values()):
            # Not one visit anywhere: the feed stopped, which is not a drop of every subject.
            ctx.log.warning("traffic_drop: no visits at all in %s; skipping the run", end)
            return
        test = stats.is_spike if self.spike else stats.is_drop
        for subject, by_period in sorted(counts.items()):
            # History starts at the oldest season with traffic: zeros before a subject
            # existed are not a baseline. A subject silent in every season has none.
            oldest = max((k for k, n in by_period.items() if k > 0 and n > 0), default=0)
            if oldest < c.min_history:
                continue
            history = [by_period.get(k, 0) for k in range(1, oldest + 1)]
            score = stats.robust_z(by_period.get(0, 0), history)
            if not test(score, z=c.z, min_count=c.min_count, min_change=c.min_change):
                continue
            window = (end - bucket, end)
            latest = periods[min(k for k, n in by_period.items() if n > 0)][1:]
            yield subject, latest, window, self._content(subject, score, history, window)

    def _content(self, subject, score: stats.Score, history, window) -> dict[str, Any]:
        c = self.config
        unit = {7 * DAY: "week", DAY: "day"}.get(c.season_seconds)
        return {
            "severity": "medium" if self.spike else "high",
            "data": {
                "observed": score.observed,
                "median": score.median,
                "history": history,
                "z": score.z,
                "threshold": c.z,
                "unit": unit,
            },
            "metadata": {
                "observed": score.observed,
                "baseline": {"median": score.median, "mad": score.mad, "history": history},
                "score": round(score.z, 3),
                "threshold": c.z,
                "change": None if score.change is None else round(score.change, 4),
                "season_seconds": c.season_seconds,
            },
        }


class TrafficSpike(_Traffic):
    """Visits in the last complete bucket (hour) far above the same bucket in past seasons.

    Robust z-score against the median of the same hour of the week over the previous
    ``seasons`` weeks (stats.robust_z); fires when z ≥ ``z``, at least ``min_count``
    visits, and at least ``min_change`` above the median.
    """

    key = "traffic_spike"
    description = "Visits in the last hour far above the same hour in past weeks."
    spike = True


class TrafficDrop(_Traffic):
    """Visits in the last complete bucket far below the same bucket in past seasons (a
    broken link, a lost campaign). Fires when z ≤ -``z``, the usual count is at least
    ``min_count`` (a quiet night is never a drop) and the fall is at least ``min_change``.

    When no subject at all has a visit in the bucket, nothing fires: the feed stopped,
    and telling every owner of a drop would be wrong (and a flood).
    """

    key = "traffic_drop"
    description = "Visits in the last hour far below the same hour in past weeks."
    spike = False


class _WindowRule(_InsightRule):
    """The last complete window against the ``baseline_days`` before it, per dimension."""

    Config = WindowConfig
    config: WindowConfig
    every = 3600

    def split(self, ctx: RunContext, source: Source, conn, dim: str, kinds: list[str]):
        """``(window, [(subject, (window counts, baseline counts))])`` for the subjects with
        events in the window."""
        c = self.config
        end = window_end(ctx.now, c.window_seconds)
        start = end - timedelta(seconds=c.window_seconds)
        periods = [(0, start, end), (1, start - timedelta(days=c.baseline_days), start)]
        seen: dict[str, tuple[Counter, Counter]] = defaultdict(lambda: (Counter(), Counter()))
        rows = source.aggregate(conn, periods, kinds=kinds, dim=dim, active_in=(start, end))
        for subject, period, value, n in rows:
            seen[subject][period][value] += n
        return (start, end), sorted(seen.items())

    @staticmethod
    def hit(subject: str, window: tuple[datetime, datetime], **content: Any) -> tuple:
        return subject, window, window, content  # the owner is read from the window


class NewCountry(_WindowRule):
    """A country with visits in the last complete window (hour) and none in the
    ``baseline_days`` before it, for a subject with at least ``min_history`` visits then.
    One notification per subject and window lists every new country."""

    key = "new_country_discovered"
    description = "A subject's first visits from a country."
    Config = NewCountryConfig
    config: NewCountryConfig
    every = 900

    def hits(self, ctx: RunContext, source: Source, conn: sa.Connection) -> Iterable[tuple]:
        c = self.config
        window, seen = self.split(ctx, source, conn, c.country_column, c.visit_kinds)
        for subject, (now, before) in seen:
            new = {k: n for k, n in now.items() if k not in before and n >= c.min_count}
            history = sum(before.values())
            if not new or history < c.min_history:
                continue
            ranked = sorted(new, key=lambda k: (-new[k], k))
            yield self.hit(
                subject,
                window,
                severity="low",
                data={
                    "countries": [{"code": k, "visits": new[k]} for k in ranked],
                    "baseline_days": c.baseline_days,
                    "baseline_visits": history,
                    "other_countries": len(before),
                },
                metadata={
                    "countries": new,
                    "baseline": {"visits": history, "countries": len(before)},
                    "baseline_days": c.baseline_days,
                },
            )


class DeviceShift(_WindowRule):
    """The device mix of the last complete window (day) far from the baseline's: the
    Jensen–Shannon divergence of the two shares (stats.jensen_shannon, 0..1 bit) is at
    least ``min_divergence``, with ``min_count`` visits in the window and ``min_baseline``
    in the baseline. 0.05 is about a fifth of the traffic moving between two devices."""

    key = "unusual_device_distribution"
    description = "A subject's device mix shifted against its baseline."
    Config = DeviceConfig
    config: DeviceConfig

    def hits(self, ctx: RunContext, source: Source, conn: sa.Connection) -> Iterable[tuple]:
        c = self.config
        window, seen = self.split(ctx, source, conn, c.device_column, c.visit_kinds)
        for subject, (now, before) in seen:
            total, base = sum(now.values()), sum(before.values())
            if total < c.min_count or base < c.min_baseline:
                continue
            p, q = stats.shares(now), stats.shares(before)
            score = stats.jensen_shannon(p, q)
            if score < c.min_divergence:
                continue
            # Largest change first; of two equal changes, the device that grew.
            moved = sorted(
                set(p) | set(q),
                key=lambda k: (-round(abs(p.get(k, 0) - q.get(k, 0)), 6), -p.get(k, 0), k),
            )
            mix = [{"device": k, "share": p.get(k, 0), "usual": q.get(k, 0)} for k in moved[:5]]
            tv = stats.total_variation(p, q)
            yield self.hit(
                subject,
                window,
                severity="medium",
                data={
                    "visits": total,
                    "devices": mix,
                    "score": score,
                    "threshold": c.min_divergence,
                    "total_variation": tv,
                },
                metadata={
                    "observed": {"visits": total, "shares": _rounded(p)},
                    "baseline": {"visits": base, "shares": _rounded(q)},
                    "score": round(score, 4),
                    "threshold": c.min_divergence,
                    "total_variation": round(tv, 4),
                    "baseline_days": c.baseline_days,
                },
            )


def _rounded(shares: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in sorted(shares.items())}


class ConversionAnomaly(_WindowRule):
    """Conversions / visits in the last complete window (day) against the baseline rate:
    a two-proportion z-test (stats.two_proportion_z) of at least ``z`` either way, with
    ``min_visits`` in the window and ``min_baseline_visits`` in the baseline. Rows whose
    kind is in ``visit_kinds`` are visits, in ``conversion_kinds`` conversions."""

    key = "conversion_rate_anomaly"
    description = "A subject's conversion rate far from its baseline rate."
    Config = ConversionConfig
    config: ConversionConfig

    def hits(self, ctx: RunContext, source: Source, conn: sa.Connection) -> Iterable[tuple]:
        c = self.config
        kinds = [*c.visit_kinds, *c.conversion_kinds]
        window, seen = self.split(ctx, source, conn, c.kind_column, kinds)
        for subject, (now, before) in seen:
            visits, base_visits = (sum(x[k] for k in c.visit_kinds) for x in (now, before))
            conv, base_conv = (sum(x[k] for k in c.conversion_kinds) for x in (now, before))
            if visits < c.min_visits or base_visits < c.min_baseline_visits:
                continue
            score = stats.two_proportion_z(conv, visits, base_conv, base_visits)
            if abs(score) < c.z:
                continue
            rate, base_rate = conv / visits, base_conv / base_visits
            yield self.hit(
                subject,
                window,
                severity="high" if score < 0 else "medium",
                data={
                    "conversions": conv,
                    "visits": visits,
                    "rate": rate,
                    "baseline_conversions": base_conv,
                    "baseline_visits": base_visits,
                    "baseline_rate": base_rate,
                    "baseline_days": c.baseline_days,
                    "z": score,
                    "threshold": c.z,
                },
                metadata={
                    "observed": {"visits": visits, "conversions": conv, "rate": round(rate, 6)},
                    "baseline": {
                        "visits": base_visits,
                        "conversions": base_conv,
                        "rate": round(base_rate, 6),
                    },
                    "score": round(score, 3),
                    "threshold": c.z,
                    "baseline_days": c.baseline_days,
                },
            )


RULES = [TrafficSpike, TrafficDrop, NewCountry, DeviceShift, ConversionAnomaly]
