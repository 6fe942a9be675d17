"""Recommendations from a ProfileResult: small pure checks with named thresholds, each
quoting the measured figure that triggered it and naming the perflab knob to turn.
Rendering them (markdown, JSON, DataFrame, HTML) is :mod:`perflab.profiling.report`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from perflab.profiling.result import ProfileResult

if TYPE_CHECKING:
    pass


__all__ = [
    "Analysis",
    "AreaAnalysis",
    "CHECKS",
    "Recommendation",
    "analyze",
    "recommend",
    "recommendation",
]

# Thresholds: a check fires when the measured figure reaches its threshold.
LOOP_BLOCKED_MS = 100.0  # longest gap between two event-loop ticks
LOOP_LAG_P99_MS = 20.0  # 99th percentile of event-loop lag
MIN_LAG_SAMPLES_FOR_P99 = 100  # fewer samples make p99 just the maximum
TASKS_PEAK = 1000  # tasks alive at once
CPU_BOUND_UTILIZATION = 0.9  # of one core
IO_WAIT_UTILIZATION = 0.25  # of one core, over at least MIN_WALL_SECONDS
MIN_WALL_SECONDS = 0.5
CONTENDED_SWITCHES_PER_SECOND = 200.0  # involuntary context switches
MEMORY_GROWTH_MB = 100.0
MEMORY_PEAK_ABOVE_START_MB = 500.0
SMALL_IO_BYTES = 4096  # average bytes per read/write call
MANY_IO_CALLS = 1000
MAJOR_FAULTS = 1000

SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}


@dataclasses.dataclass(frozen=True, slots=True)
class Recommendation:
    """One finding: what was measured against which threshold, and what to do."""

    area: str
    severity: str
    title: str
    metric: str
    observed: float
    threshold: float
    unit: str
    evidence: str
    advice: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def recommendation(
    area: str,
    severity: str,
    title: str,
    metric: str,
    observed: float,
    threshold: float,
    unit: str,
    advice: str,
) -> Recommendation:
    evidence = f"{metric} = {_number(observed)} {unit} (threshold {_number(threshold)} {unit})".replace(
        "  ", " "
    )
    return Recommendation(
        area, severity, title, metric, float(observed), float(threshold), unit, evidence, advice
    )


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) >= 10:
        return f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


# --------------------------------------------------------------------------- checks


def check_loop_blocked(r: ProfileResult) -> Recommendation | None:
    if r.loop_stall_max_ms is None or r.loop_stall_max_ms < LOOP_BLOCKED_MS:
        return None
    return recommendation(
        "asyncio",
        "high",
        f"Event loop blocked for {r.loop_stall_max_ms:,.0f} ms",
        "loop_stall_max_ms",
        r.loop_stall_max_ms,
        LOOP_BLOCKED_MS,
        "ms",
        f"something ran on the loop for up to {r.loop_stall_max_ms:,.0f} ms without awaiting, and every "
        "other request waited that long: move CPU-bound or blocking work to an executor "
        "(await asyncio.to_thread(fn, ...) or loop.run_in_executor) or split it with await asyncio.sleep(0)",
    )


def check_loop_lag(r: ProfileResult) -> Recommendation | None:
    if r.loop_lag_p99_ms is None or r.loop_lag_p99_ms < LOOP_LAG_P99_MS:
        return None
    if r.loop_lag_samples < MIN_LAG_SAMPLES_FOR_P99:
        return None
    return recommendation(
        "asyncio",
        "medium",
        f"Event-loop lag p99 {r.loop_lag_p99_ms:,.1f} ms",
        "loop_lag_p99_ms",
        r.loop_lag_p99_ms,
        LOOP_LAG_P99_MS,
        "ms",
        "callbacks often run long enough to delay timers and I/O: look for per-item CPU work "
        "(parsing, compression) on the loop; batch it (BatchProcessor) or run it in an executor",
    )


def check_tasks_peak(r: ProfileResult) -> Recommendation | None:
    if r.tasks_peak is None or r.tasks_peak < TASKS_PEAK:
        return None
    return recommendation(
        "asyncio",
        "medium",
        f"{r.tasks_peak:,} tasks alive at once",
        "tasks_peak",
        r.tasks_peak,
        TASKS_PEAK,
        "tasks",
        "an unbounded fan-out (asyncio.gather over everything) costs memory and scheduling and can "
        "overrun a server's limits: use TaskPool(max_concurrent=...), whose map() takes items lazily",
    )


def check_cpu_bound(r: ProfileResult) -> Recommendation | None:
    if r.wall_seconds < 0.1 or r.cpu_utilization < CPU_BOUND_UTILIZATION:
        return None
    return recommendation(
        "cpu",
        "medium",
        f"CPU-bound: {r.cpu_utilization:.2f} of one core",
        "cpu_utilization",
        r.cpu_utilization,
        CPU_BOUND_UTILIZATION,
        "cores",
        f"CPU utilization {r.cpu_utilization:.2f} of one core: the workload is CPU-bound and more "
        "concurrency (TaskPool max_concurrent, a higher rate) will not help; find the hot spots with "
        "PerformanceProfiler(deep=True), or move the work to a process pool",
    )


def check_mostly_waiting(r: ProfileResult) -> Recommendation | None:
    if r.wall_seconds < MIN_WALL_SECONDS or r.cpu_utilization > IO_WAIT_UTILIZATION:
        return None
    return recommendation(
        "cpu",
        "info",
        f"Mostly waiting: {r.cpu_utilization:.2f} of one core",
        "cpu_utilization",
        r.cpu_utilization,
        IO_WAIT_UTILIZATION,
        "cores",
        f"the CPU was busy {r.cpu_utilization:.0%} of {r.wall_seconds:.1f} s: the workload waits on I/O, "
        "so throughput grows with concurrency up to the server's limit; raise TaskPool max_concurrent "
        "or the limiter's rate (the task-pool notebook finds the knee)",
    )


def check_contention(r: ProfileResult) -> Recommendation | None:
    if r.wall_seconds <= 0:
        return None
    rate = r.ctx_switches_involuntary / r.wall_seconds
    if rate < CONTENDED_SWITCHES_PER_SECOND:
        return None
    return recommendation(
        "measurement",
        "info",
        f"CPU contention: {rate:,.0f} involuntary switches/s",
        "involuntary_switches_per_s",
        rate,
        CONTENDED_SWITCHES_PER_SECOND,
        "/s",
        "other processes took the CPU from this one: timings from this run are noisy; repeat the "
        "measurement and compare medians with their spread",
    )


def check_memory_growth(r: ProfileResult) -> Recommendation | None:
    if r.memory_growth_mb < MEMORY_GROWTH_MB:
        return None
    return recommendation(
        "memory",
        "medium",
        f"RSS grew by {r.memory_growth_mb:,.0f} MB",
        "memory_growth_mb",
        r.memory_growth_mb,
        MEMORY_GROWTH_MB,
        "MB",
        "memory was taken and not given back: a cache, a results list or queued items that keep "
        "growing? Stream results instead of collecting them, bound queues (TaskPool max_queue), and "
        "look with trace_memory=True",
    )


def check_memory_peak(r: ProfileResult) -> Recommendation | None:
    above = r.rss_peak_mb - r.rss_start_mb
    if above < MEMORY_PEAK_ABOVE_START_MB:
        return None
    return recommendation(
        "memory",
        "low",
        f"Peak RSS {above:,.0f} MB above the start",
        "rss_peak_above_start_mb",
        above,
        MEMORY_PEAK_ABOVE_START_MB,
        "MB",
        "a transient peak: something was materialized whole; feed TaskPool.map a generator, use a "
        "smaller BatchProcessor batch_size or read with MemoryMappedReader instead of loading files",
    )


def check_small_writes(r: ProfileResult) -> Recommendation | None:
    if r.io_write_count < MANY_IO_CALLS:
        return None
    average = r.io_write_bytes / r.io_write_count
    if average >= SMALL_IO_BYTES:
        return None
    return recommendation(
        "io",
        "medium",
        f"{r.io_write_count:,} writes averaging {average:,.0f} B",
        "bytes_per_write",
        average,
        SMALL_IO_BYTES,
        "B",
        f"{r.io_write_count:,} writes averaging {average:,.0f} B: each is a system call; use "
        "BufferedWriter (or CompressedWriter) with buffer_size >= 64 KiB",
    )


def check_small_reads(r: ProfileResult) -> Recommendation | None:
    if r.io_read_count < MANY_IO_CALLS:
        return None
    average = r.io_read_bytes / r.io_read_count
    if average >= SMALL_IO_BYTES:
        return None
    return recommendation(
        "io",
        "low",
        f"{r.io_read_count:,} reads averaging {average:,.0f} B",
        "bytes_per_read",
        average,
        SMALL_IO_BYTES,
        "B",
        "many small reads: read JSON lines with MemoryMappedReader or read_jsonl (1 MiB chunks)",
    )


def check_major_faults(r: ProfileResult) -> Recommendation | None:
    if r.major_faults < MAJOR_FAULTS:
        return None
    return recommendation(
        "io",
        "low",
        f"{r.major_faults:,} major page faults",
        "major_faults",
        r.major_faults,
        MAJOR_FAULTS,
        "faults",
        "pages were read from disk on access (cold files or memory pressure): expect this on a first "
        "read of a mapped file; if it repeats, the machine is short of memory",
    )


CHECKS: dict[str, tuple[Callable[[ProfileResult], Recommendation | None], ...]] = {
    "asyncio": (check_loop_blocked, check_loop_lag, check_tasks_peak),
    "cpu": (check_cpu_bound, check_mostly_waiting),
    "memory": (check_memory_growth, check_memory_peak),
    "io": (check_small_writes, check_small_reads, check_major_faults),
    "measurement": (check_contention,),
}

_AREA_METRICS = {
    "asyncio": (
        "loop_lag_p50_ms",
        "loop_lag_p99_ms",
        "loop_lag_max_ms",
        "loop_stall_max_ms",
        "loop_lag_samples",
        "tasks_peak",
    ),
    "cpu": ("wall_seconds", "cpu_user_seconds", "cpu_system_seconds", "cpu_utilization"),
    "memory": ("rss_start_mb", "rss_peak_mb", "rss_end_mb", "memory_growth_mb", "py_alloc_peak_mb"),
    "io": (
        "io_read_bytes",
        "io_write_bytes",
        "disk_read_bytes",
        "disk_write_bytes",
        "io_read_count",
        "io_write_count",
        "minor_faults",
        "major_faults",
    ),
    "measurement": ("ctx_switches", "ctx_switches_involuntary", "peak_rss_method"),
}


def recommend(result: ProfileResult, areas: tuple[str, ...] | None = None) -> tuple[Recommendation, ...]:
    """Every check's finding for ``result``, most severe first."""
    found = [
        finding
        for area in areas or tuple(CHECKS)
        for check in CHECKS[area]
        if (finding := check(result)) is not None
    ]
    return tuple(sorted(found, key=lambda f: SEVERITY_ORDER[f.severity]))


@dataclasses.dataclass(frozen=True, slots=True)
class AreaAnalysis:
    """One area's measured figures and the recommendations they trigger."""

    area: str
    metrics: dict[str, Any]
    recommendations: tuple[Recommendation, ...]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def analyze(result: ProfileResult, area: str) -> AreaAnalysis:
    if area not in CHECKS:
        raise ValueError(f"area must be one of {sorted(CHECKS)}, got {area!r}")
    metrics = {name: getattr(result, name) for name in _AREA_METRICS[area]}
    if area == "io":
        metrics["bytes_per_write"] = (
            result.io_write_bytes / result.io_write_count if result.io_write_count else None
        )
        metrics["bytes_per_read"] = (
            result.io_read_bytes / result.io_read_count if result.io_read_count else None
        )
    return AreaAnalysis(area, metrics, recommend(result, (area,)))


#: The name ``perflab`` exports (its ``__all__`` is pinned); ``AreaAnalysis`` says what it is.
Analysis = AreaAnalysis
