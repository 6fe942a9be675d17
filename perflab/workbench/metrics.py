"""The one registry of the metrics the workbench measures: each name's unit and which way
is better. ``publish`` reads units and directions from here, so every notebook, the saved
results and ``perflab compare`` agree on them, and a metric nobody registered is refused
instead of being saved without a unit."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Literal

__all__ = ["METRICS", "Metric", "directions", "units"]

Better = Literal["higher", "lower", "neither"]


@dataclasses.dataclass(frozen=True, slots=True)
class Metric:
    """A measured quantity: its unit ("" for a share or a count) and which way is better
    ("neither" for a count that describes the run, such as calls made)."""

    unit: str
    better: Better

    @property
    def higher_is_better(self) -> bool | None:
        return None if self.better == "neither" else self.better == "higher"


def _many(unit: str, better: Better, *names: str) -> dict[str, Metric]:
    return {name: Metric(unit, better) for name in names}


METRICS: dict[str, Metric] = {
    # asyncio experiments: task pool, rate limiter, batching
    **_many("/s", "higher", "throughput"),
    "ok_rate": Metric("req/s", "higher"),
    "achieved_rate": Metric("tokens/s", "higher"),
    **_many("ms", "lower", "p50_ms", "p99_ms", "wait_p50_ms", "wait_p99_ms", "item_p50_ms", "item_p99_ms"),
    "cpu_us_per_call": Metric("us", "lower"),
    "rejected_per_s": Metric("/s", "lower"),
    "rejected_share": Metric("", "lower"),
    "rate_error_pct": Metric("%", "neither"),  # signed: 0 is best, either side is off
    "sink_calls_per_s": Metric("calls/s", "lower"),
    **_many("", "neither", "calls", "grants", "mean_batch"),
    # I/O experiments: writes, compression, reading
    "seconds": Metric("s", "lower"),
    **_many("MB/s", "higher", "mb_per_s", "compress_mb_s", "decompress_mb_s"),
    "records_per_s": Metric("/s", "higher"),
    "of_floor": Metric("x floor", "higher"),  # the writer's speed as a share of the floor's, same run
    "per_s": Metric("/s", "higher"),
    "write_calls": Metric("", "lower"),
    "minor_faults": Metric("", "lower"),
    "peak_rss_mb": Metric("MiB", "lower"),
    "cpu_seconds": Metric("s", "lower"),
    "saved_pct": Metric("%", "higher"),
    "ratio": Metric("", "lower"),
    "size_mb": Metric("MB", "lower"),
    # the simulated collector
    **_many("s", "lower", "cycle_s", "cycle_mean_s", "cycle_worst_s", "cycle_median_s"),
    "ok_per_cycle": Metric("", "higher"),
    **_many("", "lower", "retries_per_cycle", "failed_per_cycle", "sink_calls_per_cycle"),
    "cpu_ms_per_cycle": Metric("ms", "lower"),
    "log_kb_per_cycle": Metric("KiB", "lower"),
    "loop_stall_ms": Metric("ms", "lower"),
    # live monitoring (scraped)
    "collected_per_s": Metric("/s", "higher"),
    "refused_share": Metric("", "lower"),
    "slot_usage": Metric("", "neither"),
    "gaps": Metric("", "lower"),
    "calls_ok_per_s": Metric("/s", "higher"),
    "call_ms": Metric("ms", "lower"),
    "loop_lag_ms": Metric("ms", "lower"),
    # adaptive concurrency (the bake-off)
    "goodput": Metric("/s", "higher"),
    "throttled_share": Metric("", "lower"),
    "converge_s": Metric("s", "lower"),
    "complexity": Metric("", "lower"),
}


def _known(names: Iterable[str]) -> list[str]:
    names = list(names)
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"metrics {unknown} are not in perflab.workbench.metrics.METRICS: register them")
    return names


def units(names: Iterable[str]) -> dict[str, str]:
    """Each metric's unit."""
    return {name: METRICS[name].unit for name in _known(names)}


def directions(names: Iterable[str]) -> dict[str, bool]:
    """Whether higher is better, for the metrics that have a better direction."""
    return {name: better for name in _known(names) if (better := METRICS[name].higher_is_better) is not None}
