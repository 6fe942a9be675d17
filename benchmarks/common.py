"""What every benchmark script shares: repeat a measurement, print median [min-max] tables."""

from __future__ import annotations

import gc
import statistics
from collections.abc import Callable

from perflab.measure import format_summary as fmt


def repeat(measure: Callable[[], float], times: int, warmup: bool = True) -> list[float]:
    """Run ``measure`` (which returns one sample) ``times`` times after an optional warm-up."""
    if warmup:
        measure()
    samples = []
    for _ in range(times):
        gc.collect()
        samples.append(measure())
    return samples


def table(title: str, unit: str, rows: dict[str, dict[str, list[float]]], scale: float, digits: int) -> None:
    """Rows of labelled sample sets, one column per variant (e.g. event loop)."""
    print(f"\n{title}  ({unit}, median [min-max])")
    columns = list(next(iter(rows.values())))
    width = max(34, max(len(label) for label in rows) + 2)
    print(f"  {'':{width}s}" + "".join(f"{name:>28s}" for name in columns))
    for label, by_column in rows.items():
        print(f"  {label:{width}s}" + "".join(f"{fmt(by_column[c], scale, digits):>28s}" for c in columns))


def ratio(rows: dict[str, dict[str, list[float]]], num: str, den: str, column: str) -> float:
    return statistics.median(rows[num][column]) / statistics.median(rows[den][column])
