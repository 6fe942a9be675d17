"""A fixed-bucket histogram cheap enough for the primitives' rare paths (a limiter wait, a
queued call), so an exporter can publish distributions, not only means and maxima.

``observe`` is one ``bisect`` and two additions; buckets are Prometheus-style upper
bounds (a value lands in the first bucket whose bound is >= it, the last bucket is +Inf).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Sequence

__all__ = ["WAIT_BUCKETS", "Histogram", "HistogramSnapshot"]

#: Upper bounds (seconds) for waits: 0.5 ms to 10 s, about 2.5x apart.
WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclasses.dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Counts per bucket at one moment. ``cumulative`` pairs each upper bound (the last
    is +inf) with the number of observations at or below it, as Prometheus exposes them."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float
    count: int

    @property
    def cumulative(self) -> list[tuple[float, int]]:
        running, out = 0, []
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def quantile(self, q: float) -> float:
        """The ``q`` quantile by linear interpolation inside its bucket (as PromQL's
        ``histogram_quantile``); NaN when empty."""
        if not 0 <= q <= 1:
            raise ValueError(f"q must be in [0, 1], got {q}")
        if self.count == 0:
            return math.nan
        rank = q * self.count
        lower, below = 0.0, 0
        for bound, cumulative in self.cumulative:
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
            lower, below = bound, cumulative
        return lower


class Histogram:
    """Counts of observations per bucket, their sum and number."""

    __slots__ = ("bounds", "_counts", "_sum", "_count")

    def __init__(self, bounds: Sequence[float] = WAIT_BUCKETS) -> None:
        bounds = tuple(float(b) for b in bounds)
        if not bounds or any(b <= a for a, b in zip(bounds, bounds[1:], strict=False)):
            raise ValueError(f"bounds must be a non-empty increasing sequence, got {bounds}")
        if not all(math.isfinite(b) for b in bounds):
            raise ValueError("bounds must be finite (the +Inf bucket is implied)")
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._count = 0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self._sum += value
        self._count += 1

    def snapshot(self) -> HistogramSnapshot:
        # The count is the counts' total, so a scrape from another thread that lands between
        # an observation's updates still sees buckets that add up.
        counts = tuple(self._counts)
        return HistogramSnapshot(self.bounds, counts, self._sum, sum(counts))

    def __repr__(self) -> str:
        return f"<Histogram count={self._count} sum={self._sum:g}>"
