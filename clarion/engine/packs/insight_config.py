"""The insight pack's rule configs: thresholds and windows, validated when a rule is built.

Split from :mod:`clarion.engine.packs.insight` (the rules) as the lifecycle pack is."""

from __future__ import annotations

from pydantic import Field, model_validator

from clarion.engine.packs.insight_source import DAY, InsightConfig


class TrafficConfig(InsightConfig):
    bucket_seconds: int = Field(default=3600, ge=60)
    # Compare with the same bucket one season earlier, `seasons` times: a week by default,
    # so a night is compared with nights and a Sunday with Sundays.
    season_seconds: int = Field(default=7 * DAY, ge=60)
    seasons: int = Field(default=4, ge=2, le=60)
    min_history: int = Field(default=3, ge=2)  # seasons since the subject's first traffic
    z: float = Field(default=4.5, gt=0)
    min_count: float = Field(default=30, ge=0)  # spike: observed ≥; drop: usual count ≥
    min_change: float = Field(default=0.5, ge=0, lt=1)

    @model_validator(mode="after")
    def _consistent(self):
        if self.season_seconds < self.bucket_seconds or self.min_history > self.seasons:
            raise ValueError("need season_seconds ≥ bucket_seconds and min_history ≤ seasons")
        return self


class WindowConfig(InsightConfig):
    window_seconds: int = Field(default=DAY, ge=60)
    baseline_days: float = Field(default=28, gt=0)  # the baseline: the days before the window


class NewCountryConfig(WindowConfig):
    window_seconds: int = Field(default=3600, ge=60)
    baseline_days: float = Field(default=30, gt=0)
    min_count: int = Field(default=1, ge=1)  # visits from the new country in the window
    min_history: int = Field(default=50, ge=0)  # baseline visits: a new subject is not news


class DeviceConfig(WindowConfig):
    min_count: int = Field(default=100, ge=1)  # visits in the window
    min_baseline: int = Field(default=500, ge=1)  # visits in the baseline
    min_divergence: float = Field(default=0.05, gt=0, le=1)  # Jensen–Shannon, bits


class ConversionConfig(WindowConfig):
    z: float = Field(default=3.0, gt=0)  # |two-proportion z| at least this
    min_visits: int = Field(default=200, ge=1)  # in the window
    min_baseline_visits: int = Field(default=1000, ge=1)

    @model_validator(mode="after")
    def _needs_kinds(self):
        if self.enabled and self.kind_column is None:
            raise ValueError(
                "conversion_rate_anomaly needs kind_column to tell conversions from "
                'visits (or disable it: {"conversion_rate_anomaly": {"enabled": false}})'
            )
        return self
