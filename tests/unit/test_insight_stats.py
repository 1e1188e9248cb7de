"""The insight pack's statistics on synthetic series: what fires and what must not."""

from __future__ import annotations

import math
import random

import pytest

from clarion.engine.packs import stats

HOURS_PER_WEEK = 168
SPIKE = {"z": 4.5, "min_count": 30, "min_change": 0.5}  # the rules' defaults


def expected_visits(hour: int) -> float:
    """Busy afternoons, near-silent nights, quieter weekends: a weekly-seasonal shape."""
    hour_of_day, day = hour % 24, (hour // 24) % 7
    daily = 10 + 190 * max(0.0, math.sin(math.pi * (hour_of_day - 6) / 16))
    return daily * (0.45 if day >= 5 else 1.0)


def weekly_series(weeks: int, seed: int) -> dict[int, float]:
    """Hourly counts with Poisson-like noise (normal approximation, never negative)."""
    rng = random.Random(seed)
    return {
        h: max(0, round(rng.gauss(expected_visits(h), math.sqrt(expected_visits(h)))))
        for h in range(weeks * HOURS_PER_WEEK)
    }


def verdicts(series, hours, *, season=HOURS_PER_WEEK, seasons=4):
    fired = []
    for h in hours:
        score = stats.robust_z(
            series[h], stats.seasonal_history(series, h, season=season, seasons=seasons)
        )
        if stats.is_spike(score, **SPIKE):
            fired.append(("spike", h))
        if stats.is_drop(score, **SPIKE):
            fired.append(("drop", h))
    return fired


def test_median_and_mad():
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([4, 1, 3, 2]) == 2.5
    assert stats.mad([1, 1, 2, 2, 4, 6, 9]) == 1
    with pytest.raises(ValueError):
        stats.median([])


@pytest.mark.parametrize("seed", range(20))
def test_a_weekly_seasonal_series_never_fires_not_at_night_nor_at_the_weekend(seed):
    series = weekly_series(weeks=6, seed=seed)
    last_week = range(5 * HOURS_PER_WEEK, 6 * HOURS_PER_WEEK)

    assert verdicts(series, last_week) == []


def test_a_trailing_baseline_fires_every_day_which_is_why_the_baseline_is_seasonal():
    series = weekly_series(weeks=6, seed=1)
    last_week = range(5 * HOURS_PER_WEEK, 6 * HOURS_PER_WEEK)
    days_fired = set()
    for h in last_week:
        trailing = [series[h - k] for k in range(1, 7)]  # the previous six hours
        score = stats.robust_z(series[h], trailing)
        if stats.is_spike(score, **SPIKE) or stats.is_drop(score, **SPIKE):
            days_fired.add(h // 24)
    assert len(days_fired) == 7  # every morning's ramp "spikes"
    # Same hour of day over the previous days (season=24) still flags the weekend:
    daily = verdicts(series, last_week, season=24, seasons=14)
    assert daily and all(kind == "drop" and (h // 24) % 7 >= 5 for kind, h in daily)


def test_a_real_spike_and_a_real_drop_fire():
    series = weekly_series(weeks=6, seed=2)
    afternoon = 5 * HOURS_PER_WEEK + 2 * 24 + 14  # a Wednesday, 14:00
    night = afternoon + 12  # 02:00, quiet

    series[afternoon] *= 3
    assert verdicts(series, [afternoon]) == [("spike", afternoon)]
    series[afternoon] = 5
    assert verdicts(series, [afternoon]) == [("drop", afternoon)]
    # A night at 3x is still too small to matter (min_count), a night at 0 is not a drop.
    series[night] = 3 * series[night]
    assert verdicts(series, [night]) == []
    series[night] = 0
    assert verdicts(series, [night]) == []


def test_the_thresholds_are_inclusive_and_the_poisson_floor_applies():
    history = [100, 100, 100, 100]  # MAD 0: the scale is the widened Poisson floor
    floor = math.sqrt(100 * (1 + math.pi / 8))
    assert stats.robust_z(100 + 4 * floor, history).z == pytest.approx(4.0)
    rules = {"z": 4.0, "min_count": 20, "min_change": 0.3}
    assert stats.is_spike(stats.robust_z(148, history), **rules)  # z 4.07
    assert not stats.is_spike(stats.robust_z(147, history), **rules)  # z 3.98
    assert stats.is_drop(stats.robust_z(52, history), **rules)
    assert not stats.is_drop(stats.robust_z(53, history), **rules)
    exact = stats.robust_z(148, history)
    assert stats.is_spike(exact, **{**rules, "z": exact.z})
    # min_change is inclusive too, and binds where z does not.
    assert stats.is_spike(stats.robust_z(150, history), **{**rules, "min_change": 0.5})
    assert not stats.is_spike(stats.robust_z(149, history), **{**rules, "min_change": 0.5})
    # A big subject: significant, but under the minimum relative change.
    big = stats.robust_z(11_000, [10_000] * 4)
    assert big.z > 4 and not stats.is_spike(big, **{**rules, "min_change": 0.5})


def test_an_outlier_in_the_history_does_not_hide_a_spike():
    score = stats.robust_z(400, [100, 110, 95, 5_000])
    assert score.median == 105 and score.z > 20


def test_distribution_distances():
    base = stats.shares({"mobile": 60, "desktop": 40})
    same = stats.shares({"mobile": 600, "desktop": 400})
    shifted = stats.shares({"mobile": 90, "desktop": 10})
    assert stats.jensen_shannon(base, same) == pytest.approx(0.0, abs=1e-12)
    assert stats.total_variation(base, shifted) == pytest.approx(0.3)
    assert stats.jensen_shannon(base, shifted) == pytest.approx(0.0913, abs=1e-3)
    assert stats.jensen_shannon({"a": 1.0}, {"b": 1.0}) == pytest.approx(1.0)
    assert stats.shares({}) == {}


def test_two_proportion_z():
    # 5 % of 2000 against 10 % of 10000: a clear drop.
    assert stats.two_proportion_z(100, 2000, 1000, 10_000) == pytest.approx(-7.07, abs=0.01)
    assert stats.two_proportion_z(10, 100, 100, 1000) == pytest.approx(0.0)
    assert stats.two_proportion_z(0, 0, 5, 10) == 0.0
    assert stats.two_proportion_z(0, 10, 0, 10) == 0.0
