"""Change detection over a history of runs: steps (a change point, found with PELT from
``ruptures``) and slow drifts (a Kendall trend test), each kept only when it is larger than
the run-to-run noise and than a minimum effect.

The input is one median per run, in time order. The noise is estimated robustly from
run-to-run differences (a step moves one difference, not their median), so the penalty
adapts to how noisy the machine is.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from perflab._validate import check_number

__all__ = ["Change", "MIN_RUNS", "detect_changes", "run_noise"]

#: Fewer runs than this cannot show a change against noise.
MIN_RUNS = 5
#: The penalty per change point, in units of the noise variance times log(runs) (BIC-like;
#: calibrated so that pure noise shows no change in >= 95% of histories, see the tests).
PENALTY = 6.0
#: A step or drift must also be this many noise standard deviations large.
NOISE_MULTIPLE = 3.0
#: Significance of the Kendall trend test for a drift.
DRIFT_ALPHA = 0.01


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """A step at run ``at`` (the first run after it), or a drift over ``start..at``:
    ``before`` and ``after`` are the medians on each side (the drift's first and last
    fitted values), ``ratio`` after / before."""

    kind: Literal["step", "drift"]
    start: int
    at: int
    before: float
    after: float

    @property
    def ratio(self) -> float:
        return self.after / self.before if self.before else math.inf

    def worse(self, higher_is_better: bool) -> bool:
        return self.after < self.before if higher_is_better else self.after > self.before


def run_noise(medians: Sequence[float] | np.ndarray) -> float:
    """A robust standard deviation of one run's median: 1.4826 x the median absolute
    run-to-run difference / sqrt(2)."""
    values = np.asarray(medians, dtype=float)
    if values.size < 2:
        return 0.0
    return float(1.4826 * np.median(np.abs(np.diff(values))) / math.sqrt(2))


def detect_changes(medians: Sequence[float], *, min_effect: float = 0.03) -> list[Change]:
    """The steps and drifts in a series of per-run medians (see the module docstring)."""
    import ruptures
    from scipy.stats import kendalltau

    check_number("min_effect", min_effect, minimum=0)
    values = np.asarray(medians, dtype=float)
    if values.ndim != 1 or not np.all(np.isfinite(values)):
        raise ValueError("medians must be a sequence of finite numbers")
    n = values.size
    if n < MIN_RUNS:
        return []
    sigma = run_noise(values)
    scale = float(np.median(np.abs(values))) or 1.0
    floor = max(min_effect * scale, NOISE_MULTIPLE * sigma)
    steps: list[Change] = []
    step_fit = np.full(n, float(np.median(values)))
    if sigma > 0:
        pen = PENALTY * sigma**2 * math.log(n)
        cuts = ruptures.Pelt(model="l2", min_size=2, jump=1).fit(values.reshape(-1, 1)).predict(pen=pen)
        bounds = [0, *cuts]
        for left, right in zip(bounds, bounds[1:], strict=False):
            step_fit[left:right] = np.median(values[left:right])
        for left, cut, right in zip(bounds, bounds[1:], bounds[2:], strict=False):
            before = float(np.median(values[left:cut]))
            after = float(np.median(values[cut:right]))
            if abs(after - before) >= floor:
                steps.append(Change("step", left, cut, before, after))
    _, p = kendalltau(np.arange(n), values)
    slope, intercept = np.polyfit(np.arange(n), values, 1)
    line = intercept + slope * np.arange(n)
    first, last = float(line[0]), float(line[-1])
    if p < DRIFT_ALPHA and abs(last - first) >= floor:
        # A trend that a straight line explains at least as well as the steps is a drift.
        if not steps or np.sum((values - line) ** 2) <= np.sum((values - step_fit) ** 2):
            return [Change("drift", 0, n - 1, first, last)]
    return steps
