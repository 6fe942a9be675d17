"""What every benchmark script shares: collect samples of a measurement, then report them
through perflab's own statistics: median [min-max] with pyperf's noise checks, and ratios
of medians with their bootstrap 95% CI (perflab.compare), measured in the same run."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence

from perflab import compare, sample_stats

#: Printed after a figure whose samples fail pyperf's stability checks (sample_stats).
NOISY = "!"


def repeat(measure: Callable[[], float], times: int, warmup: bool = True) -> list[float]:
    """Run ``measure`` (which returns one sample) ``times`` times after an optional warm-up,
    with a garbage collection before each sample."""
    if warmup:
        measure()
    samples = []
    for _ in range(times):
        gc.collect()
        samples.append(measure())
    return samples


def fmt(samples: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
    """``median [min-max]`` of the scaled samples, marked with NOISY when they fail
    pyperf's stability checks."""
    stats = sample_stats([s * scale for s in samples])
    flag = NOISY if stats.is_noisy else ""
    return f"{stats.median:.{digits}f} [{stats.min:.{digits}f}-{stats.max:.{digits}f}]{flag}"


def table(title: str, unit: str, rows: dict[str, dict[str, list[float]]], scale: float, digits: int) -> None:
    """Rows of labelled sample sets, one column per variant (e.g. event loop)."""
    print(f"\n{title}  ({unit}, median [min-max]; {NOISY} = noisy by pyperf's rules)")
    columns = list(next(iter(rows.values())))
    width = max(34, max(len(label) for label in rows) + 2)
    print(f"  {'':{width}s}" + "".join(f"{name:>28s}" for name in columns))
    for label, by_column in rows.items():
        print(f"  {label:{width}s}" + "".join(f"{fmt(by_column[c], scale, digits):>28s}" for c in columns))


def ratio(rows: dict[str, dict[str, list[float]]], num: str, den: str, column: str, digits: int = 2) -> str:
    """``num``'s median over ``den``'s with its bootstrap 95% CI, e.g. "1.23x (CI 1.20-1.26)"."""
    result = compare(rows[den][column], rows[num][column], min_effect=0.0)
    low, high = result.ci95
    return f"{result.ratio:.{digits}f}x (CI {low:.{digits}f}-{high:.{digits}f})"
