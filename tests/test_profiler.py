"""PerformanceProfiler with real counters: I/O, memory, event-loop lag, misuse."""

from __future__ import annotations

import asyncio
import json
import mmap
import time
import tracemalloc
from pathlib import Path

import pytest

from perflab import PerformanceProfiler, ProfileReport


def test_a_40_mb_write_shows_in_the_io_counters(tmp_path: Path) -> None:
    block = b"x" * (1 << 20)
    with PerformanceProfiler("write") as prof, open(tmp_path / "big.bin", "wb", buffering=0) as f:
        for _ in range(40):
            f.write(block)
    result = prof.result
    assert result.io_write_bytes >= 40 << 20
    assert 40 <= result.io_write_count < 100
    # Linux charges a write to storage when it dirties the page cache; tmpfs never does.
    assert result.disk_write_bytes >= 40 << 20 or filesystem(tmp_path) in ("tmpfs", "ramfs")


def filesystem(path: Path) -> str:
    import psutil

    mounts = [p for p in psutil.disk_partitions(all=True) if str(path).startswith(p.mountpoint)]
    return max(mounts, key=lambda p: len(p.mountpoint)).fstype if mounts else "unknown"


def touch_fresh_memory(megabytes: int) -> None:
    """Make ``megabytes`` of new pages resident, then give them back to the kernel.

    A private anonymous mapping, not ``bytearray``: malloc may serve a large block from
    freed heap memory that is still resident (a test worker's earlier tests leave some),
    and then RSS does not move at all.
    """
    size = megabytes << 20
    with mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as block:
        for offset in range(0, size, mmap.PAGESIZE):
            block[offset] = 1


def test_a_transient_300_mb_allocation_shows_in_peak_rss() -> None:
    with PerformanceProfiler("alloc") as prof:
        touch_fresh_memory(300)
    result = prof.result
    assert result.rss_peak_mb - result.rss_start_mb >= 250
    assert result.rss_end_mb - result.rss_start_mb < 100
    assert result.peak_rss_method


def test_nested_profilers_keep_the_outer_peak() -> None:
    with PerformanceProfiler("outer") as outer:
        touch_fresh_memory(200)
        with PerformanceProfiler("inner"):  # resets the kernel's high-water mark
            pass
    assert outer.result.rss_peak_mb - outer.result.rss_start_mb >= 150


async def test_a_200_ms_blocking_call_shows_as_loop_lag_and_a_recommendation() -> None:
    async with PerformanceProfiler("blocked") as prof:
        await asyncio.sleep(0.03)
        time.sleep(0.2)  # noqa: ASYNC251 - the point of the test
        await asyncio.sleep(0.03)
    result = prof.result
    assert result.loop_lag_max_ms >= 150
    assert 200 <= result.loop_stall_max_ms < 1000
    assert result.loop_lag_samples >= 2
    assert result.tasks_peak >= 1
    findings = prof.analyze_asyncio_performance().recommendations
    assert findings and findings[0].severity == "high"
    assert findings[0].title.startswith("Event loop blocked for")
    assert "executor" in findings[0].advice


def test_sync_profiling_has_no_loop_figures() -> None:
    with PerformanceProfiler() as prof:
        sum(range(1000))
    assert prof.result.loop_lag_max_ms is None and prof.result.tasks_peak is None
    assert prof.result.py_alloc_peak_mb is None


def test_trace_memory_reports_the_python_allocation_peak() -> None:
    was_tracing = tracemalloc.is_tracing()
    with PerformanceProfiler(trace_memory=True) as prof:
        data = [str(i) for i in range(300_000)]
        del data
    assert prof.result.py_alloc_peak_mb >= 10
    assert tracemalloc.is_tracing() == was_tracing


def test_deep_mode_names_the_hot_spot() -> None:
    def hot_loop() -> int:
        total = 0
        for i in range(2_000_000):
            total += i * i
        return total

    with PerformanceProfiler(deep=True) as prof:
        hot_loop()
    spots = prof.result.hot_spots
    assert spots and spots[0]["function"] == "hot_loop"
    assert 0 < spots[0]["self_fraction"] <= 1


def test_misuse_raises_runtime_error_for_the_state() -> None:
    prof = PerformanceProfiler("p")
    with pytest.raises(RuntimeError, match="was never started"):
        prof.stop_profiling()
    with pytest.raises(RuntimeError, match="has no result: it was never started"):
        _ = prof.result
    prof.start_profiling()
    with pytest.raises(RuntimeError, match="is already running"):
        prof.start_profiling()
    with pytest.raises(RuntimeError, match="still running"):
        _ = prof.result
    prof.stop_profiling()
    with pytest.raises(RuntimeError, match="is already stopped"):
        prof.stop_profiling()
    with pytest.raises(ValueError, match="sample_interval must be > 0"):
        PerformanceProfiler(sample_interval=0)


def test_the_report_round_trips_through_json_and_renders(tmp_path: Path) -> None:
    with PerformanceProfiler("render") as prof, open(tmp_path / "small.txt", "w", buffering=1) as f:
        for _ in range(1500):
            f.write("x" * 40 + "\n")  # line-buffered: one write call per line
    report = prof.generate_report()
    path = tmp_path / "report.json"
    report.to_json(path)
    assert ProfileReport.from_json(path) == report
    assert json.loads(path.read_text())["recommendations"][0]["area"] == "io"
    with pytest.raises(FileExistsError):
        report.to_json(path)
    markdown = report.to_markdown()
    assert "writes averaging 41 B" in markdown and "BufferedWriter" in markdown
    frame = report.to_frame()
    assert {"area", "severity", "title", "evidence", "advice"} <= set(frame.columns)
    assert "<table>" in report._repr_html_()
    assert "bytes_per_write" in prof.analyze_io_performance().metrics
    assert prof.analyze_memory_efficiency().area == "memory"


def test_benchmark_operations_from_the_profiler() -> None:
    prof = PerformanceProfiler()
    result = prof.benchmark_operation(sorted, [3, 1, 2], repeat=3, number=10)
    assert len(result.samples) == 3

    async def inside() -> int:
        async def noop() -> None:
            await asyncio.sleep(0)

        return len((await prof.abenchmark_operation(noop, repeat=4, number=5)).samples)

    assert asyncio.run(inside()) == 4
