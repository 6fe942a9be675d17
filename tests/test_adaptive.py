"""The adaptive-concurrency bake-off on the virtual clock: the scenario's phases, what a
static pool and AIMD do against a cap that moves, and the per-phase measures."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from perflab.workbench.adaptive import (
    Phase,
    Trace,
    bakeoff,
    contender_code,
    contender_limit,
    converge_seconds,
    phase_summary,
    phase_table,
    run_contender,
    whole_runs,
)


def test_a_phase_parses_and_a_bad_one_names_its_token() -> None:
    phase = Phase.parse("seconds=2 cap=8 latency=lognormal:20:60 rate=100 burst=5")
    assert phase == Phase(2.0, 8, "lognormal:20:60", 100.0, 5.0)
    assert Phase.parse("seconds=1 cap=4").describe() == "cap 4, 20 ms"
    assert Phase(1, 10, "constant:20").best_goodput == pytest.approx(500)
    assert Phase(1, 10, "constant:20", rate=100).best_goodput == 100
    with pytest.raises(ValueError, match="'pool=3' is not one of"):
        Phase.parse("seconds=1 cap=4 pool=3")
    with pytest.raises(ValueError, match="needs seconds= and cap="):
        Phase.parse("cap=4")
    with pytest.raises(ValueError, match="cap must be >= 1"):
        Phase.parse("seconds=1 cap=0")
    with pytest.raises(ValueError, match="latency must be"):
        Phase(1, 4, "fast")


def test_contender_names() -> None:
    assert contender_limit("static:12") == (12, None)
    limit, throttle = contender_limit("aimd+throttle")
    assert limit.limit == 20 and throttle is not None
    with pytest.raises(ValueError, match="static needs a size"):
        contender_limit("static")
    with pytest.raises(ValueError, match="'cubic' is not one of"):
        contender_limit("cubic")


def test_a_static_pool_under_the_cap_is_never_refused_and_collects_pool_over_latency() -> None:
    trace = run_contender("static:4", ["seconds=1 cap=8 latency=constant:20"])
    ok = (trace.status == 200).sum()
    assert (trace.status != 200).sum() == 0
    assert 196 <= ok <= 204  # 4 calls per 20 ms, exactly, on the virtual clock (+ the last wave)
    assert trace.in_flight.max() == 4 and set(trace.limit) == {4}


def test_aimd_follows_a_cap_that_falls_and_rises() -> None:
    phases = [
        "seconds=3 cap=16 latency=constant:20",
        "seconds=3 cap=4 latency=constant:20",
        "seconds=3 cap=12 latency=constant:20",
    ]
    aimd = run_contender("aimd", phases)
    static = run_contender("static:16", phases)
    table = phase_table([aimd, static])
    row = table.set_index(["contender", "phase"])
    # The static pool of 16 hammers the cap of 4 with refusals; AIMD backs off to it.
    assert row.loc[("static:16", 2), "refused_share"] > 0.5
    assert row.loc[("aimd", 2), "refused_share"] < 0.2  # most of them in the change itself
    settled = (aimd.start >= 4.5) & (aimd.start < 6.0)  # the second half of the phase
    assert ((aimd.status[settled] == 503).sum() / settled.sum()) < 0.02
    fell = aimd.limit[(aimd.times > 5.0) & (aimd.times < 6.0)]
    assert fell.max() <= 5
    rose = aimd.limit[(aimd.times > 8.0) & (aimd.times < 9.0)]
    assert rose.max() >= 10  # grew back toward the new cap of 12
    # AIMD answers within 15% of what the server lets through in phase 2 (4 at a time),
    # its change included; the static pool gets all of it, at the price of its refusals.
    assert row.loc[("aimd", 2), "goodput"] == pytest.approx(200, rel=0.15)
    assert row.loc[("static:16", 2), "goodput"] == pytest.approx(200, rel=0.02)


def test_converge_seconds_finds_the_first_window_at_the_target() -> None:
    # Answers at 100/s for the first second, then 300/s.
    ends = np.concatenate([np.arange(0, 1, 0.01), np.arange(1, 2, 1 / 300)])
    trace = Trace(
        "x",
        0,
        (Phase(2, 4),),
        start=ends - 0.01,
        end=ends,
        status=np.full(ends.size, 200),
        times=np.array([0.0]),
        limit=np.array([4]),
        in_flight=np.array([0]),
    )
    assert converge_seconds(trace, 1, 90) == pytest.approx(0.5)
    assert 1.3 <= converge_seconds(trace, 1, 250) <= 1.5
    assert math.isnan(converge_seconds(trace, 1, 1000))


def test_the_bakeoff_runs_inside_a_running_loop_and_tables_its_runs() -> None:
    phases = ["seconds=1 cap=6 latency=constant:10", "seconds=1 cap=3 latency=constant:10"]

    async def main() -> list[Trace]:
        return await bakeoff(["static:3", "static:6", "aimd"], phases, repeat=2)

    traces = asyncio.run(main())
    assert [(t.contender, t.seed) for t in traces][:3] == [("static:3", 0), ("static:6", 0), ("aimd", 0)]
    table = phase_table(traces)
    assert set(table["phase"]) == {0, 1, 2}
    runs = whole_runs(table)
    assert list(runs.groupby("contender")["repeat"].max()) == [1, 1, 1]
    assert "converge_s" not in runs and "phase" not in runs
    summary = phase_summary(table)
    assert summary.loc[("2", "static:3"), "refused_share"].startswith("0.000")
    assert summary.loc[("overall", "aimd"), "converge_s"] == ""
    with pytest.raises(ValueError, match="contenders must name"):
        asyncio.run(bakeoff([], phases))


def test_each_contender_says_how_to_run_it() -> None:
    assert contender_code("static:12") == "TaskPool(max_concurrent=12)"
    assert "Throttle(k=2)" in contender_code("aimd+throttle")
    with pytest.raises(ValueError, match="'cubic' is not one of"):
        contender_code("cubic")
