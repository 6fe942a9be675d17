"""The recommendation checks: pure functions of a ProfileResult with named thresholds."""

from __future__ import annotations

import dataclasses
import time

import pytest

from perflab import ProfileReport, ProfileResult
from perflab.profiling import rules as advice
from perflab.profiling.rules import analyze, recommend

QUIET = ProfileResult(
    name="quiet",
    wall_seconds=1.0,
    cpu_user_seconds=0.4,
    cpu_system_seconds=0.1,
    cpu_utilization=0.5,
    rss_start_mb=50.0,
    rss_peak_mb=60.0,
    rss_end_mb=52.0,
    memory_growth_mb=2.0,
    py_alloc_peak_mb=None,
    io_read_bytes=10_000,
    io_write_bytes=1_000_000,
    disk_read_bytes=0,
    disk_write_bytes=1_000_000,
    io_read_count=3,
    io_write_count=15,
    ctx_switches=50,
    ctx_switches_involuntary=5,
    minor_faults=100,
    major_faults=0,
    loop_lag_p50_ms=0.2,
    loop_lag_p99_ms=1.5,
    loop_lag_max_ms=2.0,
    loop_lag_samples=100,
    loop_stall_max_ms=12.0,
    tasks_peak=12,
    peak_rss_method="kernel high-water mark",
)


def with_(**changes) -> ProfileResult:
    return dataclasses.replace(QUIET, **changes)


def test_a_quiet_profile_triggers_nothing() -> None:
    assert recommend(QUIET) == ()


@pytest.mark.parametrize(
    ("changes", "area", "title", "evidence"),
    [
        (
            {"loop_stall_max_ms": 212.0},
            "asyncio",
            "Event loop blocked for 212 ms",
            "loop_stall_max_ms = 212 ms",
        ),
        (
            {"loop_lag_p99_ms": 35.0},
            "asyncio",
            "Event-loop lag p99 35.0 ms",
            "loop_lag_p99_ms = 35 ms (threshold 20 ms)",
        ),
        ({"tasks_peak": 2345}, "asyncio", "2,345 tasks alive at once", "tasks_peak = 2,345 tasks"),
        ({"cpu_utilization": 0.97}, "cpu", "CPU-bound: 0.97 of one core", "cpu_utilization = 0.97 cores"),
        ({"cpu_utilization": 0.05, "wall_seconds": 3.2}, "cpu", "Mostly waiting: 0.05 of one core", "0.05"),
        ({"memory_growth_mb": 312.0}, "memory", "RSS grew by 312 MB", "memory_growth_mb = 312 MB"),
        ({"rss_peak_mb": 900.0}, "memory", "Peak RSS 850 MB above the start", "(threshold 500 MB)"),
        ({"io_write_count": 1000, "io_write_bytes": 180_000}, "io", "1,000 writes averaging 180 B", "180"),
        ({"io_read_count": 5000, "io_read_bytes": 500_000}, "io", "5,000 reads averaging 100 B", "100"),
        ({"major_faults": 4000}, "io", "4,000 major page faults", "major_faults = 4,000 faults"),
        (
            {"ctx_switches_involuntary": 900},
            "measurement",
            "CPU contention: 900 involuntary switches/s",
            "900",
        ),
    ],
)
def test_each_check_fires_with_the_measured_figure(changes, area, title, evidence) -> None:
    (finding,) = recommend(with_(**changes))
    assert (finding.area, finding.title) == (area, title)
    assert evidence in finding.evidence
    assert finding.advice


def test_checks_stay_quiet_just_below_their_thresholds() -> None:
    below = with_(
        loop_stall_max_ms=advice.LOOP_BLOCKED_MS - 0.1,
        loop_lag_p99_ms=advice.LOOP_LAG_P99_MS - 0.1,
        tasks_peak=advice.TASKS_PEAK - 1,
        cpu_utilization=advice.CPU_BOUND_UTILIZATION - 0.01,
        memory_growth_mb=advice.MEMORY_GROWTH_MB - 0.1,
        io_write_count=advice.MANY_IO_CALLS - 1,
        io_write_bytes=10,
    )
    assert recommend(below) == ()


def test_p99_needs_enough_samples_to_mean_anything() -> None:
    assert recommend(with_(loop_lag_p99_ms=50.0, loop_lag_samples=10)) == ()


def test_the_advice_names_the_perflab_knob() -> None:
    (writes,) = recommend(with_(io_write_count=1000, io_write_bytes=180_000))
    assert "BufferedWriter" in writes.advice and "buffer_size >= 64 KiB" in writes.advice
    (cpu,) = recommend(with_(cpu_utilization=0.97))
    assert "more concurrency" in cpu.advice and "will not help" in cpu.advice
    (tasks,) = recommend(with_(tasks_peak=5000))
    assert "TaskPool(max_concurrent=...)" in tasks.advice


def test_findings_come_most_severe_first_and_fast() -> None:
    busy = with_(
        loop_stall_max_ms=500.0,
        tasks_peak=5000,
        io_write_count=2000,
        io_write_bytes=2000,
        cpu_utilization=0.1,
    )
    started = time.perf_counter()
    findings = recommend(busy)
    assert time.perf_counter() - started < 0.05
    severities = [f.severity for f in findings]
    assert severities == sorted(severities, key=advice.SEVERITY_ORDER.__getitem__)
    assert severities[0] == "high"
    report = ProfileReport.from_result(busy)
    assert report.recommendations == findings
    assert ProfileReport.from_dict(report.to_dict()) == report


def test_analyze_gives_an_area_and_refuses_unknown_ones() -> None:
    analysis = analyze(with_(tasks_peak=5000), "asyncio")
    assert analysis.metrics["tasks_peak"] == 5000 and len(analysis.recommendations) == 1
    with pytest.raises(ValueError, match="area must be one of"):
        analyze(QUIET, "gpu")
