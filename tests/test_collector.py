"""The simulated collector: planted problems show up, the fixes remove them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from perflab import PerformanceProfiler, read_jsonl
from perflab.profiling.rules import recommend
from perflab.workbench.collector import CollectorConfig, ServiceConfig, run_collector
from perflab.workbench.dataset import generate_records
from perflab.workbench.tuning import (
    SearchResult,
    apply_advice,
    codec_costs,
    collector_recommendations,
    measure_runs,
    search_cheapest,
)

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


def test_measure_runs_keeps_every_cycle_raw(tmp_path: Path) -> None:
    config = CollectorConfig(symbols=200, pool_size=10, rate=4000)
    runs = run_on(VirtualClockLoop, measure_runs(config, SERVICE, log_dir=tmp_path, repeats=3))
    assert len(runs) == 3
    assert all(run["cycle_s"] > 0 and run["ok_per_cycle"] == 200 for run in runs)


def model(cap: int = 20, rate_floor: float = 0.0):
    """A fake collector: a cycle of 1,000 symbols at 20 ms each takes 20 s / pool (up to
    the cap) or 1,000 / rate, whichever is longer; the clock never runs."""
    calls: list[tuple[int, float, int, int]] = []

    async def evaluate(pool: int, rate: float, repeats: int, seed: int) -> list[dict[str, float]]:
        calls.append((pool, rate, repeats, seed))
        cycle = max(20.0 / min(pool, cap), 1000 / rate, rate_floor)
        return [{"cycle_s": cycle * (1 + 0.01 * r), "failed_per_cycle": 0.0} for r in range(repeats)]

    return evaluate, calls


def test_the_search_bisects_to_the_smallest_pool_that_meets_the_budget() -> None:
    evaluate, calls = model()
    result = asyncio.run(
        search_cheapest(
            evaluate,
            coarse_pools=[8, 32, 64],
            rates=[2000.0, 4000.0],
            budget_s=1.2,
            confirm_repeat=3,
            pool_step=1,
        )
    )
    # 20 s / pool <= 1.2 s from pool 17 on (the worst of 3 repeats, 2% slower, still fits).
    assert isinstance(result, SearchResult)
    assert result.chosen is not None
    assert result.chosen["pool_size"] == 17 and result.chosen["repeats"] == 3
    # The gentler rate (0.5 s a cycle) still holds at that size, so it is chosen.
    assert result.chosen["rate"] == 2000.0
    stages = [row["stage"] for row in result.rows]
    assert stages.count("coarse") == 6 and "refine" in stages
    assert {(p, r) for p, r, n, _ in calls if n == 3} == {(17, 4000.0), (17, 2000.0)}
    assert result.chosen["cycle_worst_s"] == max(
        row["cycle_s"]
        for row in result.rows
        if row["stage"] == "confirm" and row["pool_size"] == 17 and row["rate"] == 2000.0
    )
    # In steps of 4 workers the answer is the next multiple of 4, and only those were tried.
    stepped = asyncio.run(
        search_cheapest(
            model()[0], coarse_pools=[8, 32], rates=[4000.0], budget_s=1.2, confirm_repeat=3, pool_step=4
        )
    )
    assert stepped.chosen is not None and stepped.chosen["pool_size"] == 20
    assert all(row["pool_size"] % 4 == 0 for row in stepped.rows)


def test_the_search_reports_nothing_when_no_setting_meets_the_budget() -> None:
    evaluate, _ = model(rate_floor=5.0)
    result = asyncio.run(
        search_cheapest(evaluate, coarse_pools=[8, 32], rates=[4000.0], budget_s=1.0, confirm_repeat=2)
    )
    assert result.chosen is None
    assert len(result.rows) == 2


def test_a_lost_symbol_fails_a_setting_whatever_its_speed() -> None:
    async def lossy(pool: int, rate: float, repeats: int, seed: int) -> list[dict[str, float]]:
        return [{"cycle_s": 0.1, "failed_per_cycle": 1.0 if pool < 32 else 0.0}] * repeats

    result = asyncio.run(
        search_cheapest(lossy, coarse_pools=[16, 32], rates=[4000.0], budget_s=1.0, confirm_repeat=2)
    )
    assert result.chosen is not None and result.chosen["pool_size"] >= 30


def test_apply_advice_changes_only_what_the_findings_name(tmp_path: Path) -> None:
    planted = CollectorConfig(
        symbols=200, pool_size=64, blocking_ms=5, blocking_every=50, per_record_writes=True, codec="zstd-1"
    )
    run = run_on(VirtualClockLoop, run_collector(planted, SERVICE, log_dir=tmp_path))
    problems = collector_recommendations(run, planted, SERVICE)
    after, recommended = apply_advice(planted, problems, SERVICE)
    assert after.pool_size == SERVICE.max_concurrency and recommended["max_concurrent"] == 20
    assert after.per_record_writes and not after.blocking_in_thread  # nothing fired for them
    stall = recommend_one("loop_stall_max_ms")
    small = recommend_one("bytes_per_write")
    after, recommended = apply_advice(planted, [stall, small], SERVICE)
    assert after.blocking_in_thread and not after.per_record_writes and after.pool_size == 64
    assert recommended == {
        "max_concurrent": 64,
        "blocking work": "asyncio.to_thread",
        "log writer": "CompressedWriter(zstd-1), buffer_size=65,536",
    }


def recommend_one(metric: str):
    from perflab.profiling.rules import recommendation

    return recommendation("x", "high", metric, metric, 1.0, 0.0, "", "")


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


def test_the_confirmed_decision_takes_the_smallest_pool_whose_every_cycle_fits() -> None:
    import pandas as pd

    from perflab.workbench.tuning import confirmed_decision

    rows = [
        {
            "stage": "confirm",
            "pool_size": pool,
            "rate": 4000.0,
            "repeat": r,
            "cycle_s": cycle,
            "failed_per_cycle": 0.0,
        }
        for pool, cycles in ((16, (0.90, 0.99, 0.91)), (20, (0.80, 0.82, 0.81)), (24, (0.7, 0.7, 0.7)))
        for r, cycle in enumerate(cycles)
    ]
    decision = confirmed_decision(pd.DataFrame(rows), budget_s=0.95)
    # 16's median fits; one of its cycles did not, and every cycle must.
    assert decision.chosen == {"pool_size": 20, "rate": 4000.0}
    assert decision.verdict({"pool_size": 16, "rate": 4000.0}).reason == (
        "cycle_s 0.99 in a repeat (needs max(cycle_s) <= 0.95)"
    )
    assert decision.settled
    # With the server modelled: a pool past its cap or a rate past its rate limit is out.
    capped = confirmed_decision(pd.DataFrame(rows), budget_s=0.95, server_cap=16, server_rate=4000.0)
    assert capped.chosen is None  # 16 misses the budget once; 20 and 24 exceed the cap
    assert capped.verdict({"pool_size": 24, "rate": 4000.0}).status == "infeasible"
    slower = confirmed_decision(pd.DataFrame(rows), budget_s=0.95, server_rate=3000.0)
    assert slower.chosen is None and "rate" in slower.verdict({"pool_size": 20, "rate": 4000.0}).reason


def test_pool_candidates_surround_the_guess_and_keep_the_current_pool() -> None:
    from perflab.workbench.tuning import pool_candidates

    assert pool_candidates(12, 32) == [6, 9, 11, 12, 13, 15, 32]
    assert pool_candidates(1, 1) == [1, 2]
    with pytest.raises(ValueError, match="estimate"):
        pool_candidates(0, 4)


def test_confirming_pool_sizes_decides_the_cap_and_rules_out_the_pools_above_it(tmp_path: Path) -> None:
    from perflab.workbench.notebook import decisions_of
    from perflab.workbench.tuning import confirm_pool_sizes

    service = ServiceConfig(latency="constant:20", rate_limit=5000, rate_burst=100, max_concurrency=8)
    config = CollectorConfig(symbols=160, pool_size=32, rate=4000)
    frame = run_on(
        VirtualClockLoop,
        confirm_pool_sizes(config, service, [4, 8, 10, 32], repeat=3, log_dir=tmp_path),
    )
    decision = decisions_of(frame)[""]
    # On the virtual clock: 4 takes twice 8's cycle; 10 and 32 draw 429s in every run.
    assert decision.chosen == {"pool_size": 8} and decision.settled
    assert decision.verdict({"pool_size": 4}).status == "worse"
    for pool in (10, 32):
        assert decision.verdict({"pool_size": pool}).status == "infeasible"
    with pytest.raises(ValueError, match="pools"):
        run_on(VirtualClockLoop, confirm_pool_sizes(config, service, [], repeat=3, log_dir=tmp_path))


def test_supported_pool_is_littles_law_over_the_answered_calls_after_the_incident() -> None:
    import pandas as pd

    from perflab.workbench.monitoring import supported_pool

    side = pd.DataFrame(
        [
            {"metric": "calls_ok_per_s", "baseline_median": 1200.0, "candidate_median": 590.0},
            {"metric": "call_ms", "baseline_median": 20.0, "candidate_median": 20.2},
        ]
    )
    assert supported_pool(side) == 12  # 590/s x 0.0202 s = 11.9 in flight
