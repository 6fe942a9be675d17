"""Honest statistics for repeated measurements, shared by the profiler, sweeps and reports.

Raw samples are kept; statistics are computed from them: median, mean, standard deviation,
MAD, IQR, min, max, a distribution-free 95% confidence interval for the median, relative
noise (MAD / median) and pyperf's stability checks, each a reason string quoting the
measured number. ``compare`` says whether two sample sets differ: the ratio of medians with
a bootstrap CI, a Mann-Whitney U test and a minimum effect size, so that comparing a thing
with itself is called "no significant change" at least 95% of the time. Timing a
callable lives in :mod:`perflab.measure.timing`.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from perflab._validate import check_number

__all__ = [
    "Comparison",
    "SampleStats",
    "compare",
    "compare_difference",
    "format_summary",
    "mann_whitney_p",
    "median_ci",
    "noise_reasons",
    "sample_stats",
]

#: pyperf's stability rules, as named thresholds.
#: Samples as a sequence of numbers or a 1-D numpy array.
Samples = Sequence[float] | np.ndarray

NOISY_STDEV_FRACTION = 0.10  # stdev >= 10% of the mean
NOISY_OUTLIER_FRACTION = 0.50  # min or max >= 50% away from the mean
MIN_RAW_SAMPLE_SECONDS = 0.001  # a sample's raw timing (all its loops) under 1 ms
MIN_SAMPLES = 5  # fewer samples than this cannot show their spread
#: compare(): a change smaller than this is "no significant change" whatever the p-value.
MIN_EFFECT = 0.03
SIGNIFICANCE_LEVEL = 0.05
_BOOTSTRAP_RESAMPLES = 2000
_BOOTSTRAP_SEED = 20261127


@dataclasses.dataclass(frozen=True, slots=True)
class SampleStats:
    """Statistics of one sample set (any metric, not only times)."""

    n: int
    median: float
    mean: float
    stdev: float
    mad: float
    iqr: float
    min: float
    max: float
    ci95: tuple[float, float]
    rel_noise: float
    noise_reasons: tuple[str, ...]

    @property
    def is_noisy(self) -> bool:
        return bool(self.noise_reasons)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "is_noisy": self.is_noisy}


def _values(samples: Samples, name: str = "samples") -> np.ndarray:
    values = np.asarray(samples, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty sequence of numbers, got {len(values)} values")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be finite numbers")
    return values


def median_ci(samples: Samples, confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free CI for the median from order statistics (binomial).

    With fewer than 6 samples no pair of order statistics reaches 95%; the interval is
    then (min, max), which covers ``1 - 2 / 2**n`` of the time (93.8% for n = 5).
    """
    values = np.sort(_values(samples))
    n = values.size
    alpha = 1 - confidence
    # Largest k with P(Binomial(n, 1/2) <= k - 1) <= alpha / 2: the CI is [x_(k), x_(n-k+1)].
    k = 0
    cumulative = 0.0
    while k < n // 2:
        cumulative += math.comb(n, k) / 2**n
        if cumulative > alpha / 2:
            break
        k += 1
    k = max(k, 1)
    return float(values[k - 1]), float(values[n - k])


def noise_reasons(
    samples: Samples, *, loops: int | None = None, min_samples: int = MIN_SAMPLES
) -> tuple[str, ...]:
    """pyperf's stability checks; each failed check is a reason quoting the number.

    ``loops`` (the loops per sample) marks the samples as timings in seconds per loop, which
    turns on the check that a sample's raw timing is at least 1 ms.
    """
    values = _values(samples)
    reasons = []
    n = values.size
    if n < min_samples:
        reasons.append(f"only {n} sample(s) (at least {min_samples} needed to see the spread)")
    mean = float(values.mean())
    if n >= 2 and mean != 0:
        stdev = float(values.std(ddof=1))
        if stdev >= NOISY_STDEV_FRACTION * abs(mean):
            reasons.append(
                f"stdev is {stdev / abs(mean):.1%} of the mean (threshold {NOISY_STDEV_FRACTION:.0%})"
            )
        for label, value in (("min", float(values.min())), ("max", float(values.max()))):
            away = abs(value - mean) / abs(mean)
            if away >= NOISY_OUTLIER_FRACTION:
                reasons.append(
                    f"{label} is {away:.0%} away from the mean (threshold {NOISY_OUTLIER_FRACTION:.0%})"
                )
    if loops is not None:
        raw = float(values.min()) * loops
        if raw < MIN_RAW_SAMPLE_SECONDS:
            threshold_ms = MIN_RAW_SAMPLE_SECONDS * 1e3
            reasons.append(
                f"a sample's raw timing is {raw * 1e3:.3f} ms (threshold {threshold_ms:g} ms): use more loops"
            )
    return tuple(reasons)


def sample_stats(samples: Sequence[float], *, loops: int | None = None) -> SampleStats:
    """Statistics of ``samples`` (see :func:`noise_reasons` for ``loops``)."""
    values = _values(samples)
    median = float(np.median(values))
    q25, q75 = np.percentile(values, [25, 75])
    mad = float(np.median(np.abs(values - median)))
    return SampleStats(
        n=int(values.size),
        median=median,
        mean=float(values.mean()),
        stdev=float(values.std(ddof=1)) if values.size > 1 else 0.0,
        mad=mad,
        iqr=float(q75 - q25),
        min=float(values.min()),
        max=float(values.max()),
        ci95=median_ci(values),
        rel_noise=mad / abs(median) if median else math.inf if mad else 0.0,
        noise_reasons=noise_reasons(values, loops=loops),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Comparison:
    """How ``candidate`` compares with ``baseline``.

    ``ratio`` is median(candidate) / median(baseline) and ``ci95`` its bootstrap interval.
    The change is significant when the rank test gives ``p_value < 0.05`` AND the ratio is
    at least ``min_effect`` away from 1. ``verdict`` is "faster", "slower", "no
    significant change", or "too few samples" when the sample sizes cannot reach
    significance at all (3 against 3 cannot: take 4 or more a side); for a metric where
    higher is better (throughput) a higher candidate is "faster".
    """

    baseline_median: float
    candidate_median: float
    ratio: float
    ci95: tuple[float, float]
    p_value: float
    min_effect: float
    significant: bool
    verdict: str
    #: "ratio", or "difference" for a signed metric (an error in percent, a margin): then
    #: ``ratio`` is NaN and ``ci95`` is the interval of ``difference``, in the metric's unit.
    kind: str = "ratio"
    difference: float | None = None

    @property
    def change(self) -> float:
        """Relative change of the median: +0.10 means 10% higher (NaN for a difference)."""
        return self.ratio - 1

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def mann_whitney_p(a: Samples, b: Samples) -> float:
    """Two-sided p-value of the Mann-Whitney U test (exact for small samples without ties)."""
    from scipy.stats import mannwhitneyu

    first, second = _values(a, "baseline"), _values(b, "candidate")
    if np.ptp(np.concatenate([first, second])) == 0:
        return 1.0  # all equal: no evidence of any difference
    return float(mannwhitneyu(first, second, alternative="two-sided", method="auto").pvalue)


def compare(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    higher_is_better: bool = False,
    min_effect: float = MIN_EFFECT,
    alpha: float = SIGNIFICANCE_LEVEL,
) -> Comparison:
    """Compare two sample sets of the same metric (e.g. seconds per call)."""
    check_number("min_effect", min_effect, minimum=0)
    check_number("alpha", alpha, positive=True, maximum=1)
    a, b = _values(baseline, "baseline"), _values(candidate, "candidate")
    for name, values in (("baseline", a), ("candidate", b)):
        if np.any(values < 0):
            raise ValueError(
                f"{name} holds negative values ({values.min():g}): a ratio of medians needs "
                "non-negative measurements such as seconds or records per second; compare a "
                "signed metric with compare_difference()"
            )
    a_median, b_median = float(np.median(a)), float(np.median(b))
    if a_median == 0:
        raise ValueError("baseline median is 0: a ratio cannot be formed")
    rng = np.random.default_rng(_BOOTSTRAP_SEED)
    a_boot = np.median(rng.choice(a, (_BOOTSTRAP_RESAMPLES, a.size)), axis=1)
    b_boot = np.median(rng.choice(b, (_BOOTSTRAP_RESAMPLES, b.size)), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = b_boot / a_boot
    low, high = np.nanpercentile(ratios, [2.5, 97.5])
    ratio = b_median / a_median
    p_value = mann_whitney_p(a, b)
    significant = p_value < alpha and abs(ratio - 1) >= min_effect
    # The smallest p-value the exact rank test can give for these sample sizes: with 3
    # samples a side it is 0.1, so no difference could ever be called significant.
    reachable = 2 / math.comb(a.size + b.size, a.size) < alpha
    if not reachable:
        verdict = "too few samples"
    elif not significant:
        verdict = "no significant change"
    elif (ratio > 1) == higher_is_better:
        verdict = "faster"
    else:
        verdict = "slower"
    return Comparison(
        a_median, b_median, ratio, (float(low), float(high)), p_value, min_effect, significant, verdict
    )


def compare_difference(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    higher_is_better: bool | None = None,
    alpha: float = SIGNIFICANCE_LEVEL,
) -> Comparison:
    """Compare a signed metric (where a ratio means nothing: an error that may be negative,
    a margin, a median of 0) by the difference of medians, with a bootstrap 95% CI and the
    same rank test. ``verdict``: "faster"/"slower" when the direction is known, "higher"/
    "lower" when it is not (``higher_is_better=None``), else as :func:`compare`."""
    check_number("alpha", alpha, positive=True, maximum=1)
    a, b = _values(baseline, "baseline"), _values(candidate, "candidate")
    a_median, b_median = float(np.median(a)), float(np.median(b))
    rng = np.random.default_rng(_BOOTSTRAP_SEED)
    a_boot = np.median(rng.choice(a, (_BOOTSTRAP_RESAMPLES, a.size)), axis=1)
    b_boot = np.median(rng.choice(b, (_BOOTSTRAP_RESAMPLES, b.size)), axis=1)
    low, high = np.percentile(b_boot - a_boot, [2.5, 97.5])
    difference = b_median - a_median
    p_value = mann_whitney_p(a, b)
    significant = p_value < alpha and difference != 0
    if not 2 / math.comb(a.size + b.size, a.size) < alpha:
        verdict = "too few samples"
    elif not significant:
        verdict = "no significant change"
    elif higher_is_better is None:
        verdict = "higher" if difference > 0 else "lower"
    else:
        verdict = "faster" if (difference > 0) == higher_is_better else "slower"
    return Comparison(
        a_median,
        b_median,
        math.nan,
        (float(low), float(high)),
        p_value,
        0.0,
        significant,
        verdict,
        kind="difference",
        difference=difference,
    )


def format_summary(samples: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
    """``median [min-max]``, the way every perflab table prints a figure."""
    values = [s * scale for s in samples]
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"
