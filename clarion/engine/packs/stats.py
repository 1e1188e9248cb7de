"""Pure statistics for the insight pack: no database, no clock, no I/O.

Every function takes plain numbers and returns plain numbers, so the decisions the
insight rules make (is this hour a spike? did the device mix shift?) are unit-tested on
synthetic series without PostgreSQL.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Scales a median absolute deviation to a standard deviation for normal data.
MAD_TO_SIGMA = 1.4826


def median(values: Sequence[float]) -> float:
    """The middle value (the mean of the two middle ones for an even count)."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    mid = len(ordered) // 2
    return float(ordered[mid]) if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def mad(values: Sequence[float]) -> float:
    """Median absolute deviation from the median: a spread one outlier cannot inflate."""
    centre = median(values)
    return median([abs(v - centre) for v in values])


@dataclass(frozen=True)
class Score:
    """How far ``observed`` is from its history, in robust standard deviations."""

    observed: float
    median: float
    mad: float
    scale: float
    z: float

    @property
    def change(self) -> float | None:
        """Relative change against the median (``None`` when the median is zero)."""
        return (self.observed - self.median) / self.median if self.median else None


def robust_z(observed: float, history: Sequence[float]) -> Score:
    """Robust z-score of a count against the same season's past counts.

    The scale is the larger of the MAD (as a standard deviation) and the Poisson noise of
    a count of that size, ``sqrt(median)``: identical history (MAD 0) would otherwise make
    any difference infinitely significant, and a count of 4 against 2 is not news. The
    Poisson floor is widened by ``sqrt(1 + pi / 2n)`` because the median of n past counts
    is noisy too (its variance is about pi / 2n times one count's); without it, four
    weeks of history fire on noise a few times a year per subject.
    """
    centre = median(history)
    spread = mad(history)
    poisson = math.sqrt(max(centre, 1.0) * (1 + math.pi / (2 * len(history))))
    scale = max(MAD_TO_SIGMA * spread, poisson)
    return Score(observed, centre, spread, scale, (observed - centre) / scale)


def is_spike(score: Score, *, z: float, min_count: float, min_change: float) -> bool:
    """A spike: at least ``z`` robust deviations up, ``min_count`` events, and at least
    ``min_change`` (0.5 = 50 %) above the median, so big subjects need a real jump."""
    if score.observed < min_count or score.z < z:
        return False
    return score.observed >= score.median * (1 + min_change)


def is_drop(score: Score, *, z: float, min_count: float, min_change: float) -> bool:
    """A drop: at least ``z`` robust deviations down from a median of at least
    ``min_count`` (a quiet hour of a quiet subject is not news), and ``min_change`` below."""
    if score.median < min_count or -score.z < z:
        return False
    return score.observed <= score.median * (1 - min_change)


def seasonal_history(
    series: Mapping[int, float], at: int, *, season: int, seasons: int
) -> list[float]:
    """The values at ``at - k * season`` for k = 1..seasons (missing buckets count 0).

    With hourly buckets, ``season=168`` compares an hour with the same hour of the week
    in the previous weeks: a night, or a Sunday, is compared with nights and Sundays.
    """
    return [float(series.get(at - k * season, 0)) for k in range(1, seasons + 1)]


def shares(counts: Mapping[str, float]) -> dict[str, float]:
    """Counts → proportions that sum to 1 (empty for no counts)."""
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {}


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Half the L1 distance between two distributions: the share of traffic that moved."""
    keys = set(p) | set(q)
    return sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys) / 2


def jensen_shannon(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen–Shannon divergence in bits, in [0, 1]; symmetric, and finite when one side
    has a category the other never saw (unlike Kullback–Leibler)."""

    def kl(a: Mapping[str, float], m: Mapping[str, float]) -> float:
        return sum(v * math.log2(v / m[k]) for k, v in a.items() if v > 0)

    keys = set(p) | set(q)
    m = {k: (p.get(k, 0.0) + q.get(k, 0.0)) / 2 for k in keys}
    return max(0.0, (kl(p, m) + kl(q, m)) / 2)


def two_proportion_z(successes: int, trials: int, base_successes: int, base_trials: int) -> float:
    """z of the difference between two rates under the pooled null hypothesis.

    Positive when the first rate is higher. 0 when there is nothing to compare (no
    trials, or a pooled rate of exactly 0 or 1).
    """
    if trials <= 0 or base_trials <= 0:
        return 0.0
    pooled = (successes + base_successes) / (trials + base_trials)
    variance = pooled * (1 - pooled) * (1 / trials + 1 / base_trials)
    if variance <= 0:
        return 0.0
    return (successes / trials - base_successes / base_trials) / math.sqrt(variance)
