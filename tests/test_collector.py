"""The simulated collector: planted problems show up, the fixes remove them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from perflab import PerformanceProfiler, read_jsonl
from perflab.advice import recommend
from perflab.workbench.collector import (
    CollectorConfig,
    ServiceConfig,
    codec_costs,
    collector_recommendations,
    measure_config,
    run_collector,
)
from perflab.workbench.dataset import generate_records

from loops import VirtualClockLoop, run_on

SERVICE = ServiceConfig(latency="constant:20", rate_limit=5000, rate_burst=100, max_concurrency=20)


def test_a_cycle_polls_every_symbol_once_and_logs_each_answer(tmp_path: Path) -> None:
    config = CollectorConfig(symbols=400, pool_size=20, rate=4000, codec="zstd-3")
    run = run_on(VirtualClockLoop, run_collector(config, SERVICE, log_dir=tmp_path, cycles=2))
    assert run.ok == 800 and run.rejected == 0 and run.failed == 0
    # 400 calls of 20 ms through 20 slots: 20 rounds of 20 ms (the clock is virtual: exact).
    assert run.cycle_seconds == pytest.approx((0.4, 0.4), abs=0.005)
    (log,) = tmp_path.glob("collector-0*")
    records = list(read_jsonl(log))
    assert len(records) == 800 == run.log_records
    assert {r["track"] for r in records} == {"A", "B"}


def test_an_oversized_pool_draws_429s_and_a_recommendation(tmp_path: Path) -> None:
    config = CollectorConfig(symbols=400, pool_size=80, rate=4000)
    run = run_on(VirtualClockLoop, run_collector(config, SERVICE, log_dir=tmp_path))
    assert run.rejected_share > 0.05 and run.retries > 0
    (finding,) = collector_recommendations(run, config, SERVICE)
    assert finding.area == "api" and "TaskPool(max_concurrent=<= 20)" in finding.advice
    assert collector_recommendations(run, CollectorConfig(pool_size=20), SERVICE)  # judged on the run


@pytest.mark.slow
def test_the_planted_problems_show_in_the_profile_and_the_fixes_remove_them(tmp_path: Path) -> None:
    planted = CollectorConfig(
        symbols=1200, pool_size=20, rate=4000, blocking_ms=120, blocking_every=700, per_record_writes=True
    )
    fixed = CollectorConfig(
        symbols=1200, pool_size=20, rate=4000, blocking_ms=120, blocking_every=700, blocking_in_thread=True
    )

    async def profile(config: CollectorConfig) -> set[str]:
        async with PerformanceProfiler() as profiler:
            await run_collector(config, SERVICE, log_dir=tmp_path)
        return {f.metric for f in recommend(profiler.result)}

    before = asyncio.run(profile(planted))
    after = asyncio.run(profile(fixed))
    assert {"loop_stall_max_ms", "bytes_per_write"} <= before
    assert not {"loop_stall_max_ms", "bytes_per_write"} & after


def test_measure_config_reports_the_worst_cycle(tmp_path: Path) -> None:
    config = CollectorConfig(symbols=200, pool_size=10, rate=4000)
    result = run_on(VirtualClockLoop, measure_config(config, SERVICE, log_dir=tmp_path, repeats=3))
    assert result["repeats"] == 3
    assert result["cycle_worst_s"] >= result["cycle_median_s"] > 0


def test_codec_costs_measure_every_codec(tmp_path: Path) -> None:
    table = codec_costs(
        list(generate_records(2000)), ["plain", "zstd-1", "gzip-6"], log_dir=tmp_path, repeat=2
    )
    sizes = table.set_index("codec").log_kb_per_cycle
    assert sizes["zstd-1"] < sizes["plain"] / 3 and sizes["gzip-6"] < sizes["plain"] / 3
    assert list(tmp_path.iterdir()) == []


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="codec must be 'plain' or CODEC-LEVEL"):
        CollectorConfig(codec="zstd")
    with pytest.raises(ValueError, match="pool_size must be >= 1, got 0"):
        CollectorConfig(pool_size=0)
