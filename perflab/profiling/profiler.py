"""PerformanceProfiler: what a block of code cost in CPU, memory, I/O and event-loop health.

The default mode reads cheap counters only, at start and stop: CPU times, RSS, I/O
counters (both what the process moved through system calls and what the OS charged to
storage), context switches and page faults. Peak RSS comes from the kernel's high-water
mark (reset at start through ``/proc/self/clear_refs``), so no sampler thread runs; where
that is not possible a thread samples RSS at 50 Hz. Inside ``async with`` a callback
scheduled every ``sample_interval`` seconds records how late it runs (event-loop lag), and
the number of tasks is sampled at most once a second (``asyncio.all_tasks()`` costs ~450 us
at 2,000 tasks).

Options with a price: ``trace_memory=True`` adds tracemalloc for the peak of Python
allocations (it slows allocation-heavy code by up to ~10x); ``deep=True`` adds
pyinstrument's call-stack sampler for hot spots (``pip install perflab[deep]``).
"""

from __future__ import annotations

import asyncio
import resource
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from perflab._validate import check_number
from perflab.measure.timing import BenchmarkResult, abenchmark, benchmark
from perflab.profiling.report import ProfileReport
from perflab.profiling.result import ProfileResult
from perflab.profiling.rules import AreaAnalysis, analyze

__all__ = ["PerformanceProfiler", "ProfileResult"]

_MB = 1024 * 1024
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")
_RSS_SAMPLER_HZ = 50
_TASK_SAMPLE_SECONDS = 1.0


class _Snapshot:
    """Counters read at one moment (one /proc pass via psutil's oneshot)."""

    __slots__ = ("wall", "user", "system", "rss", "io", "voluntary", "involuntary", "minflt", "majflt")

    def __init__(self, process: psutil.Process) -> None:
        with process.oneshot():
            cpu = process.cpu_times()
            self.rss = process.memory_info().rss
            self.io = process.io_counters() if hasattr(process, "io_counters") else None
            switches = process.num_ctx_switches()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.wall = time.perf_counter()
        self.user, self.system = cpu.user, cpu.system
        self.voluntary, self.involuntary = switches.voluntary, switches.involuntary
        self.minflt, self.majflt = usage.ru_minflt, usage.ru_majflt


def _high_water_mark() -> int | None:
    """The kernel's peak RSS of this process since the last reset (VmHWM), in bytes."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


class _PeakRss:
    """Peak RSS over a window. Uses the kernel's high-water mark, reset at start; the
    reset is process-wide, so every open window folds the old mark in before a reset."""

    _open: set[_PeakRss] = set()
    _lock = threading.Lock()

    def __init__(self, process: psutil.Process, start_rss: int) -> None:
        self.peak = start_rss
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.method = "kernel high-water mark"
        if not self._reset():
            self.method = f"sampled at {_RSS_SAMPLER_HZ} Hz"
            self._thread = threading.Thread(target=self._sample, args=(process,), daemon=True)
            self._thread.start()
        with _PeakRss._lock:
            _PeakRss._open.add(self)

    def _reset(self) -> bool:
        mark = _high_water_mark()
        if mark is None:
            return False
        with _PeakRss._lock:
            for window in _PeakRss._open:
                window.peak = max(window.peak, mark)
            try:
                _CLEAR_REFS.write_text("5")
            except OSError:
                return False
        return True

    def _sample(self, process: psutil.Process) -> None:
        while not self._stop.wait(1 / _RSS_SAMPLER_HZ):
            self.peak = max(self.peak, process.memory_info().rss)

    def finish(self, end_rss: int) -> int:
        with _PeakRss._lock:
            _PeakRss._open.discard(self)
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.peak = max(self.peak, _high_water_mark() or 0)
        return max(self.peak, end_rss)


class _LoopMonitor:
    """A callback re-armed every ``interval`` that records how late it runs."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.lags: list[float] = []
        # The longest gap between two ticks bounds the longest stall B from both sides:
        # B <= gap <= B + interval (lateness alone would read B - interval).
        self.max_gap = 0.0
        self.tasks_peak = len(asyncio.all_tasks(loop))
        self._last_tick = loop.time()
        self._next_task_sample = self._last_tick + _TASK_SAMPLE_SECONDS
        self._due = self._last_tick + interval
        self._handle: asyncio.TimerHandle | None = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self.loop.time()
        self.lags.append(now - self._due)
        self.max_gap = max(self.max_gap, now - self._last_tick)
        self._last_tick = now
        if now >= self._next_task_sample:
            self.tasks_peak = max(self.tasks_peak, len(asyncio.all_tasks(self.loop)))
            self._next_task_sample = now + _TASK_SAMPLE_SECONDS
        self._due = now + self.interval
        self._handle = self.loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        # The block may have ended while the loop was blocked: count that stall too.
        now = self.loop.time()
        if now > self._due:
            self.lags.append(now - self._due)
        self.max_gap = max(self.max_gap, now - self._last_tick)
        self.tasks_peak = max(self.tasks_peak, len(asyncio.all_tasks(self.loop)))


class PerformanceProfiler:
    """Measure a block: ``with`` for sync code, ``async with`` to add event-loop health.

    Usage::

        async with PerformanceProfiler("collector") as prof:
            await run_collector()
        prof.generate_report()   # recommendations quoting the measured figures
    """

    def __init__(
        self,
        name: str = "profile",
        *,
        trace_memory: bool = False,
        sample_interval: float = 0.01,
        deep: bool = False,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self.name = name
        self.trace_memory = bool(trace_memory)
        self.sample_interval = check_number("sample_interval", sample_interval, positive=True)
        self.deep = bool(deep)
        self._process = psutil.Process()
        self._start: _Snapshot | None = None
        self._peak: _PeakRss | None = None
        self._monitor: _LoopMonitor | None = None
        self._started_tracemalloc = False
        self._sampler: Any = None
        self._result: ProfileResult | None = None

    def __repr__(self) -> str:
        state = "running" if self._start else ("done" if self._result else "idle")
        return f"<PerformanceProfiler {self.name!r} {state}>"

    @property
    def running(self) -> bool:
        return self._start is not None

    @property
    def result(self) -> ProfileResult:
        if self._result is None:
            if self._start is not None:
                raise RuntimeError(f"profiler {self.name!r} is still running: stop_profiling() first")
            raise RuntimeError(f"profiler {self.name!r} has no result: it was never started")
        return self._result

    # ----------------------------------------------------------------- start and stop

    def start_profiling(self) -> None:
        """Start measuring (the loop-lag monitor too if called inside a running loop)."""
        if self._start is not None:
            raise RuntimeError(f"profiler {self.name!r} is already running")
        if self.deep:
            self._sampler = _start_deep()
        if self.trace_memory:
            self._started_tracemalloc = not tracemalloc.is_tracing()
            if self._started_tracemalloc:
                tracemalloc.start()
            tracemalloc.reset_peak()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self._start = snapshot = _Snapshot(self._process)
        self._peak = _PeakRss(self._process, snapshot.rss)
        self._monitor = _LoopMonitor(loop, self.sample_interval) if loop is not None else None

    def stop_profiling(self) -> ProfileResult:
        """Stop and return the :class:`ProfileResult` (also kept as ``.result``)."""
        start = self._start
        if start is None:
            if self._result is not None:
                raise RuntimeError(f"profiler {self.name!r} is already stopped")
            raise RuntimeError(f"profiler {self.name!r} was never started")
        end = _Snapshot(self._process)
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.stop()
        assert self._peak is not None
        peak_rss = self._peak.finish(end.rss)
        py_peak = None
        if self.trace_memory:
            py_peak = tracemalloc.get_traced_memory()[1] / _MB
            if self._started_tracemalloc:
                tracemalloc.stop()
        hot_spots = _stop_deep(self._sampler) if self._sampler is not None else ()
        self._sampler = None
        self._start = None
        self._result = _build_result(
            self.name, start, end, peak_rss, self._peak.method, py_peak, monitor, hot_spots
        )
        return self._result

    def __enter__(self) -> PerformanceProfiler:
        self.start_profiling()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop_profiling()

    async def __aenter__(self) -> PerformanceProfiler:
        self.start_profiling()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.stop_profiling()

    # ----------------------------------------------------------------- analysis

    def analyze_asyncio_performance(self) -> AreaAnalysis:
        """Event-loop lag and task counts, with their recommendations."""
        return analyze(self.result, "asyncio")

    def analyze_memory_efficiency(self) -> AreaAnalysis:
        """RSS start, peak, growth (and Python allocations), with their recommendations."""
        return analyze(self.result, "memory")

    def analyze_io_performance(self) -> AreaAnalysis:
        """Bytes and calls read and written, average sizes, with their recommendations."""
        return analyze(self.result, "io")

    def generate_report(self) -> ProfileReport:
        """Every measured figure and every recommendation, ready to render."""
        return ProfileReport.from_result(self.result)

    # ----------------------------------------------------------------- benchmarks

    def benchmark_operation(
        self,
        fn: Callable[..., Any],
        *args: Any,
        repeat: int = 7,
        warmup: int = 1,
        number: int | None = None,
        **kwargs: Any,
    ) -> BenchmarkResult:
        """Time a sync callable (or an async one when no loop is running)."""
        return benchmark(fn, *args, repeat=repeat, warmup=warmup, number=number, **kwargs)

    async def abenchmark_operation(
        self,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        repeat: int = 7,
        warmup: int = 1,
        number: int | None = None,
        **kwargs: Any,
    ) -> BenchmarkResult:
        """Time an async callable inside the running loop (a notebook's)."""
        return await abenchmark(fn, *args, repeat=repeat, warmup=warmup, number=number, **kwargs)


def _build_result(
    name: str,
    start: _Snapshot,
    end: _Snapshot,
    peak_rss: int,
    peak_method: str,
    py_peak: float | None,
    monitor: _LoopMonitor | None,
    hot_spots: tuple[dict[str, Any], ...],
) -> ProfileResult:
    wall = end.wall - start.wall
    user = end.user - start.user
    system = end.system - start.system
    io_start, io_end = start.io, end.io
    io = (
        (lambda field: getattr(io_end, field) - getattr(io_start, field))
        if io_start and io_end
        else (lambda _: 0)
    )
    lags_ms = np.asarray(monitor.lags) * 1e3 if monitor is not None and monitor.lags else None
    return ProfileResult(
        name=name,
        wall_seconds=wall,
        cpu_user_seconds=user,
        cpu_system_seconds=system,
        cpu_utilization=(user + system) / wall if wall > 0 else 0.0,
        rss_start_mb=start.rss / _MB,
        rss_peak_mb=peak_rss / _MB,
        rss_end_mb=end.rss / _MB,
        memory_growth_mb=(end.rss - start.rss) / _MB,
        py_alloc_peak_mb=py_peak,
        io_read_bytes=io("read_chars"),
        io_write_bytes=io("write_chars"),
        disk_read_bytes=io("read_bytes"),
        disk_write_bytes=io("write_bytes"),
        io_read_count=io("read_count"),
        io_write_count=io("write_count"),
        ctx_switches=(end.voluntary - start.voluntary) + (end.involuntary - start.involuntary),
        ctx_switches_involuntary=end.involuntary - start.involuntary,
        minor_faults=end.minflt - start.minflt,
        major_faults=end.majflt - start.majflt,
        loop_lag_p50_ms=float(np.percentile(lags_ms, 50)) if lags_ms is not None else None,
        loop_lag_p99_ms=float(np.percentile(lags_ms, 99)) if lags_ms is not None else None,
        loop_lag_max_ms=float(lags_ms.max()) if lags_ms is not None else None,
        loop_lag_samples=0 if lags_ms is None else int(lags_ms.size),
        loop_stall_max_ms=monitor.max_gap * 1e3 if monitor is not None else None,
        tasks_peak=monitor.tasks_peak if monitor is not None else None,
        peak_rss_method=peak_method,
        hot_spots=hot_spots,
    )


def _start_deep() -> Any:
    try:
        from pyinstrument import Profiler
    except ImportError:
        raise RuntimeError("deep=True needs pyinstrument: pip install 'perflab[deep]'") from None
    sampler = Profiler(interval=0.001)
    sampler.start()
    return sampler


def _stop_deep(sampler: Any, top: int = 10) -> tuple[dict[str, Any], ...]:
    """The frames with the most self time, from pyinstrument's call tree."""
    session = sampler.stop()
    root = session.root_frame()
    if root is None:
        return ()
    totals: dict[tuple[str, str, int | None], float] = {}
    stack = [root]
    while stack:
        frame = stack.pop()
        stack.extend(frame.children)
        # CPU spent in a function itself sits in its "[self]" child; "[await]" children
        # are time spent waiting, which is not a hot spot.
        self_time = sum(child.time for child in frame.children if child.identifier == "[self]")
        if self_time > 0 and not frame.is_synthetic:
            key = (frame.function, frame.file_path_short or "", frame.line_no)
            totals[key] = totals.get(key, 0.0) + self_time
    whole = root.time or 1.0
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)[:top]
    return tuple(
        {
            "function": function,
            "location": f"{path}:{line}",
            "self_seconds": seconds,
            "self_fraction": seconds / whole,
        }
        for (function, path, line), seconds in ranked
    )
