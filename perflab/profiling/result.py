"""ProfileResult: the figures a profiled block produced. A plain data type below both the
profiler that fills it and the checks (``perflab.profiling.rules``) that read it."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["ProfileResult"]


@dataclasses.dataclass(frozen=True, slots=True)
class ProfileResult:
    """What the profiled block cost. Times in seconds, memory in MiB, I/O in bytes.

    ``cpu_utilization`` is CPU time / wall time: 1.0 is one core busy all the time.
    ``io_*_bytes`` is what the process read and wrote through system calls (psutil's
    read_chars/write_chars, page cache included); ``disk_*_bytes`` what the OS charged to
    storage (on Linux writes are charged when pages are dirtied, reads only on real disk
    reads). ``loop_lag_*`` is how late a callback due every ``sample_interval`` ran;
    ``loop_stall_max_ms`` the longest gap between two of them, which bounds the longest
    blocking call B as B <= stall <= B + sample_interval. Loop fields are None outside
    ``async with``; ``py_alloc_peak_mb`` is None
    without ``trace_memory``; ``hot_spots`` is empty without ``deep``.
    """

    name: str
    wall_seconds: float
    cpu_user_seconds: float
    cpu_system_seconds: float
    cpu_utilization: float
    rss_start_mb: float
    rss_peak_mb: float
    rss_end_mb: float
    memory_growth_mb: float
    py_alloc_peak_mb: float | None
    io_read_bytes: int
    io_write_bytes: int
    disk_read_bytes: int
    disk_write_bytes: int
    io_read_count: int
    io_write_count: int
    ctx_switches: int
    ctx_switches_involuntary: int
    minor_faults: int
    major_faults: int
    loop_lag_p50_ms: float | None
    loop_lag_p99_ms: float | None
    loop_lag_max_ms: float | None
    loop_lag_samples: int
    loop_stall_max_ms: float | None
    tasks_peak: int | None
    peak_rss_method: str
    hot_spots: tuple[dict[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
