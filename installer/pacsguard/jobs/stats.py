"""The statistics a baseline holds, computed from one user's active buckets.

Pure functions, so the thresholds can be checked without a cluster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

HOUR, DAY = 3600, 86400


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: always a value the user really reached.

    With few samples an interpolated percentile invents in-between values; the
    nearest rank stays honest (4 single exports -> p95 = 1).
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[rank - 1])


@dataclass(frozen=True)
class Baseline:
    samples: int        # active buckets (hours or days with activity)
    total: float
    mean_per_unit: float  # over the whole window, idle buckets included
    hourly_mean: float
    daily_mean: float
    p95: float          # over active buckets only
    p99: float
    max: float
    threshold: float


def baseline(active: Sequence[float], unit_seconds: int, window_seconds: int,
             multiplier: float, floor: float) -> Baseline:
    """Statistics of one user's series, and the rule threshold derived from them.

    The threshold is max(floor, multiplier x p95 of active buckets): the p95 of
    *active* buckets describes how much the user does when they do it at all
    (a mean over 720 mostly idle hours would be ~0 and meaningless), and the
    floor keeps a user with tiny habits from alerting on a handful of studies.
    """
    values = [v for v in active if v > 0]
    total = float(sum(values))
    p95 = percentile(values, 95)
    return Baseline(
        samples=len(values),
        total=total,
        mean_per_unit=total / (window_seconds / unit_seconds),
        hourly_mean=total / (window_seconds / HOUR),
        daily_mean=total / (window_seconds / DAY),
        p95=p95,
        p99=percentile(values, 99),
        max=max(values, default=0.0),
        threshold=max(float(floor), multiplier * p95),
    )
