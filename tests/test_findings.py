"""Conclusions are computed from the data: the same notebook says different things when
the measurements differ, and never claims what they do not show."""

from __future__ import annotations

import pandas as pd
import pytest

from perflab import UntilDecided, decide, rate_with_headroom, summarize
from perflab.measure.analysis import compare_groups
from perflab.workbench import findings
from perflab.workbench.io_experiments import reader_ratios


def pool_frame(throughput: dict[int, float], rejected: dict[int, float]) -> pd.DataFrame:
    rows = []
    for size, value in throughput.items():
        for r in range(3):
            rows.append(
                {
                    "max_concurrent": size,
                    "latency": "constant:20",
                    "repeat": r,
                    "throughput": value * (1 + 0.001 * r),
                    "rejected_per_s": rejected[size],
                    "cpu_us_per_call": 40.0 + size,
                }
            )
    return pd.DataFrame(rows)


BASELINES = pd.DataFrame(
    [{"baseline": "sequential", "latency": "constant:20", "repeat": r, "throughput": 50.0} for r in range(3)]
)


def taskpool_finding(
    throughput: dict[int, float], rejected: dict[int, float], **limits: float | None
) -> findings.Finding:
    frame = pool_frame(throughput, rejected)
    summary = summarize(frame, ["max_concurrent", "latency"])
    rule = UntilDecided("throughput:max", ["rejected_per_s==0", "max_concurrent<=8"], by=["latency"])
    decisions = rule.decisions(frame, ["max_concurrent", "latency"])
    return findings.taskpool(summary, BASELINES, decisions, server_cap=8, **limits)  # type: ignore[arg-type]


def test_taskpool_recommends_the_smallest_pool_near_the_best_that_draws_no_429() -> None:
    flat = taskpool_finding({4: 200.0, 8: 400.0, 16: 401.0, 32: 402.0}, {4: 0, 8: 0, 16: 30, 32: 1200})
    assert flat.recommended == {"max_concurrent": 8}
    assert (
        "The server (cap 8) refused calls (429, 503) in a repeat at pool sizes "
        "16 (median 30.0/s, max 30.0/s), 32 (median 1,200/s, max 1,200/s)." in flat.conclusion
    )
    assert "max_concurrent=16: rejected_per_s 30 in a repeat (needs rejected_per_s == 0)" in flat.conclusion
    assert "The nearest cheaper setting, max_concurrent=4, is 50% lower on throughput" in flat.conclusion
    assert flat.key_value is not None and flat.key_value.value == pytest.approx(400.4, rel=1e-3)
    assert flat.decision is not None and flat.decision["chosen"] == {"max_concurrent": 8}


def test_taskpool_never_recommends_a_pool_that_drew_a_429() -> None:
    rising = taskpool_finding({4: 200.0, 8: 300.0, 16: 400.0, 32: 800.0}, {4: 0, 8: 5, 16: 30, 32: 90})
    assert rising.recommended == {"max_concurrent": 4}
    assert "max_concurrent=8: rejected_per_s 5 in a repeat" in rising.conclusion
    quiet = taskpool_finding({4: 200.0, 8: 400.0}, {4: 0, 8: 0})
    assert "No setting drew a refusal (429, 503) from the server (cap 8) in any repeat" in quiet.conclusion
    broken = taskpool_finding({4: 200.0, 8: 400.0}, {4: 1, 8: 3})
    assert broken.recommended == {}
    assert broken.conclusion.startswith("With latency `constant:20`: No recommendation: no setting meets")


def test_taskpool_names_a_refusal_drawn_in_one_repeat_only() -> None:
    frame = pool_frame({4: 200.0, 8: 400.0}, {4: 0.0, 8: 0.0})
    frame.loc[(frame["max_concurrent"] == 8) & (frame["repeat"] == 0), "rejected_per_s"] = 6.5
    summary = summarize(frame, ["max_concurrent", "latency"])
    rule = UntilDecided("throughput:max", ["rejected_per_s==0"], by=["latency"])
    decisions = rule.decisions(frame, ["max_concurrent", "latency"])
    finding = findings.taskpool(summary, BASELINES, decisions, server_cap=8)
    assert finding.recommended == {"max_concurrent": 4}
    assert (
        "refused calls (429, 503) in a repeat at pool sizes 8 (median 0.0/s, max 6.5/s)."
        in finding.conclusion
    )


def test_taskpool_says_the_rate_its_pools_were_paced_at() -> None:
    sizes = ({4: 150.0, 8: 150.0}, {4: 0, 8: 0})
    ceiling = rate_with_headroom(200.0, 1, 0.002)
    paced = taskpool_finding(*sizes, server_rate=200.0, client_rate=ceiling, send_jitter_ms=2.0)
    assert (
        "Every pool sent through a limiter at 142.9/s, 28.6% under the server's 200/s: the headroom "
        "2.00 ms of send jitter needs with a burst of 1." in paced.conclusion
    )
    exact = taskpool_finding(*sizes, server_rate=200.0, server_burst=10)
    assert "limiter at 200.0/s (the server's rate limit 200/s, burst 10)" in exact.conclusion
    assert "limiter" not in taskpool_finding(*sizes).conclusion


def rate_finding(rejected: dict[tuple[float, int], float]) -> findings.Finding:
    rows = [
        {
            "rate": rate,
            "burst": burst,
            "repeat": r,
            "achieved_rate": rate * (1 - 0.001 * r),
            "rejected_per_s": value,
            "rate_error_pct": -0.5,
        }
        for (rate, burst), value in rejected.items()
        for r in range(3)
    ]
    frame = pd.DataFrame(rows)
    decision = decide(
        frame, ["rate", "burst"], objective="achieved_rate:max", constraints=["rejected_per_s==0"]
    )
    summary = summarize(frame, ["rate", "burst"])
    return findings.ratelimit(summary, decision, server_rate=300, server_burst=10)


def test_ratelimit_recommends_the_fastest_rate_that_drew_no_429_and_names_those_above_the_limit() -> None:
    every = rate_finding({(100.0, 1): 0, (400.0, 1): 50, (400.0, 20): 60})
    assert "Every rate above the server's 300/s drew 429s with every burst measured" in every.conclusion
    assert every.recommended == {"rate": 100.0, "burst_size": 1, "spacing": "average"}
    spared = rate_finding({(100.0, 1): 0, (400.0, 1): 0, (400.0, 20): 60})
    assert "these drew no 429 in any run: 400/s burst 1" in spared.conclusion
    assert spared.recommended == {"rate": 400.0, "burst_size": 1, "spacing": "average"}
    # The same rate with a smaller burst is as fast: the tie goes to the smaller burst.
    tie = rate_finding({(200.0, 1): 0, (200.0, 5): 0})
    assert tie.recommended == {"rate": 200.0, "burst_size": 1, "spacing": "average"}


def test_ratelimit_states_the_headroom_the_send_jitter_costs() -> None:
    rows = [
        {
            "rate": rate,
            "burst": 1,
            "achieved_rate": rate,
            "rate_error_pct": 0.0,
            "rejected_per_s": 0,
            "run": r,
        }
        for rate in (150.0, 180.0)
        for r in range(3)
    ]
    frame = pd.DataFrame(rows)
    ceiling = rate_with_headroom(200, 1, 0.001)  # 166.7/s
    decision = decide(
        frame,
        ["rate", "burst"],
        objective="achieved_rate:max",
        constraints=["rejected_per_s==0", f"rate<={ceiling}"],
    )
    finding = findings.ratelimit(
        summarize(frame, ["rate", "burst"]),
        decision,
        server_rate=200,
        server_burst=1,
        rate_ceiling=ceiling,
        send_jitter_ms=1.0,
    )
    assert "up to 1.00 ms late" in finding.conclusion and "need 16.7% headroom" in finding.conclusion
    assert "no rate above 166.7/s" in finding.conclusion
    assert finding.recommended["rate"] == 150.0  # 180/s drew no 429 here, but a late send would
    absorbed = findings.ratelimit(
        summarize(frame, ["rate", "burst"]),
        decision,
        server_rate=200,
        server_burst=11,
        rate_ceiling=rate_with_headroom(200, 11, 0.001),
        send_jitter_ms=1.0,
    )
    assert "absorbed by the server's burst of 11: no headroom" in absorbed.conclusion


def modes(frame_cost: float, large_cost: float) -> pd.DataFrame:
    rows = []
    for codec in ("gzip-6", "zstd-3"):
        for buffer, cost in ((65536, frame_cost), (1048576, large_cost)):
            rows += [
                {"codec": codec, "buffer": buffer, "mode": "frame", "saved_pct": 70.0 - cost},
                {"codec": codec, "buffer": buffer, "mode": "sync", "saved_pct": 70.0},
                {"codec": codec, "buffer": buffer, "mode": "stream", "saved_pct": 70.5},
            ]
    return pd.DataFrame(rows)


POINTS = pd.DataFrame(
    [
        {"codec": "zstd-3", "saved_pct": 74.0, "compress_mb_s": 300.0},
        {"codec": "gzip-6", "saved_pct": 72.0, "compress_mb_s": 40.0},
    ]
)


@pytest.mark.parametrize(
    ("frame_cost", "large_cost", "mode", "trend"),
    [(1.0, 0.2, "frame", "less"), (8.0, 9.0, "sync", "no less")],
)
def test_compression_chooses_the_flush_mode_from_its_measured_cost(
    frame_cost: float, large_cost: float, mode: str, trend: str
) -> None:
    frame = pd.DataFrame([{**row, "repeat": r} for row in POINTS.to_dict("records") for r in range(3)])
    decision = decide(
        frame,
        ["codec"],
        objective="saved_pct:max",
        constraints=["compress_mb_s>=100"],
        cheaper=["compress_mb_s:desc"],
        zone=0.02,
    )
    result = findings.compression(
        POINTS,
        POINTS.iloc[:1],
        decision,
        pd.DataFrame(columns=["dominated", "by"]),
        modes(frame_cost, large_cost),
        {"4 KiB windows": [80.0, 82.0], "64 KiB windows": [75.0, 76.0]},
        whole_saved=74.0,
        repetitive_saved=91.0,
        min_compress_mb_s=100.0,
        max_frame_cost=5.0,
    )
    assert result.recommended == {"codec": "zstd", "compression_level": 3, "flush_mode": mode}
    assert f"({trend})" in result.conclusion
    assert "4 KiB windows promise 81.0%" in result.conclusion
    assert "codec=gzip-6: compress_mb_s 40 (needs compress_mb_s >= 100)" in result.conclusion


def test_reading_recommends_the_fastest_way_measured_for_each_task() -> None:
    speeds = {
        "open lines": 9.0,
        "mmap lines": 10.0,
        "json.loads records": 1.0,
        "mmap records": 3.0,
        "read_jsonl records": 3.5,
        "python index + seek": 5.0,
        "mmap line(i)": 4.0,
    }
    rows = []
    for size, scale in ((100, 1.0), (1000, 2.0)):
        for repeat, noise in enumerate((1.0, 1.1, 0.9)):
            rows += [
                {"records": size, "how": how, "repeat": repeat, "seconds": scale * noise / value}
                for how, value in speeds.items()
            ]
            rows[-1]["seconds"] *= noise  # only line(i) varies within a pair
    frame = pd.DataFrame(rows)
    frame["per_s"] = frame["records"] / frame["seconds"]
    table = pd.DataFrame([{"records": 1000, "how": how, "per_s": value} for how, value in speeds.items()])
    ratios = reader_ratios(frame)
    decisions = findings.read_decisions(frame, records=1000)
    result = findings.reading(table, pd.DataFrame(), ratios, decisions, records=1000)
    assert result.recommended == {
        "lines": "mmap lines",
        "whole logs": "read_jsonl records",
        "random access": "python index + seek",
    }
    # Paired per repeat: baseline seconds / ours, so noise common to a pair cancels.
    lookups = ratios[ratios["ratio"].str.startswith("line(i)")].set_index("records")
    assert lookups.loc[1000, ["min", "median", "max"]].round(3).tolist() == [0.727, 0.8, 0.889]
    assert ratios[ratios["ratio"].str.startswith("iter_lines")]["median"].round(6).tolist() == [1.111111] * 2
    assert "line(i) 0.8x a Python index" in result.key_figure
    assert "at 100 lines iter_lines 1.11x [1.11-1.11]" in result.conclusion
    assert "line(i) + index 0.80x [0.73-0.89]" in result.conclusion
    # The usual way stays unless another is more than 5% faster: open() is 10% slower here.
    assert "for lines, **mmap lines**" in result.conclusion and "open lines -10%" in result.conclusion


def test_profiler_quotes_the_comparison_it_is_given() -> None:
    frame = pd.DataFrame(
        [
            {"version": v, "repeat": r, "cycle_s": base + 0.01 * r}
            for r in range(5)
            for v, base in (("before", 2.0), ("after", 1.0))
        ]
    )
    side = compare_groups(
        frame, "version", "before", "after", ["cycle_s"], higher_is_better={"cycle_s": False}
    )
    result = findings.profiler(side, ["Event loop blocked for 120 ms"], {"max_concurrent": 16}, symbols=100)
    assert "takes 1.02 s instead of 2.02 s (-49.5%" in result.conclusion
    assert "faster" in result.conclusion
    assert result.recommended == {"max_concurrent": 16}


def test_a_user_sweep_on_two_hosts_ranks_by_same_host_ratios() -> None:
    # Host "slow" takes 3x as long at every setting: pooled, its samples would bury the
    # ranking; relative to max_concurrent=1 on the same host both say 4 is 0.5x.
    rows = [
        {"max_concurrent": mc, "repeat": r, "host": host, "seconds": speed * base * (1 + 0.001 * r)}
        for host, speed in (("fast", 1.0), ("slow", 3.0))
        for mc, base in ((1, 1.0), (4, 0.5), (16, 0.6))
        for r in range(6)
    ]
    frame = pd.DataFrame(rows)
    summary = summarize(frame, ["max_concurrent"])
    result = findings.user_sweep(summary, frame, ["max_concurrent"], target="mod:fn")
    assert result.recommended == {"max_concurrent": 4}
    assert result.key_figure == (
        "max_concurrent=4: the fastest on 2 hosts; max_concurrent=16 takes 1.20x its time"
    )
    assert "at 0.5x (hosts 0.5x-0.5x)" in result.conclusion
    assert "fast 0.83x (faster); slow 0.83x (faster)" in result.conclusion
    assert result.key_value.point == {"max_concurrent": 4, "host": "fast"}
    assert result.key_value.value == 0.50125


def test_batching_recommends_the_smallest_batch_with_the_fewest_calls_within_the_budget() -> None:
    # (batch_size, flush_interval) -> (throughput, p99 ms, sink calls/s)
    truth = {
        (1, 0.02): (450.0, 360.0, 450.0),  # falls behind
        (50, 0.005): (1000.0, 8.0, 200.0),
        (50, 0.02): (1000.0, 25.0, 50.0),
        (200, 0.02): (1000.0, 25.0, 50.0),  # as few calls as 50 / 0.02: the tie goes to 50
        (200, 0.1): (1000.0, 110.0, 10.0),  # fewest calls, past the 50 ms budget
    }
    rows = [
        {
            "batch_size": b,
            "flush_interval": f,
            "repeat": r,
            "throughput": t,
            "item_p99_ms": p,
            "sink_calls_per_s": c * (1 + 0.001 * r),
        }
        for (b, f), (t, p, c) in truth.items()
        for r in range(4)
    ]
    frame = pd.DataFrame(rows)
    decision = decide(
        frame,
        ["batch_size", "flush_interval"],
        objective="sink_calls_per_s:min",
        constraints=["throughput>=950", "item_p99_ms<=50"],
        cheaper=["batch_size:asc", "flush_interval:asc"],
    )
    points = frame.groupby(["batch_size", "flush_interval"], as_index=False).median()
    result = findings.batching(points, points.iloc[:2], decision, arrival_rate=1000, latency_budget_ms=50)
    assert result.recommended == {"batch_size": 50, "flush_interval": 0.02}
    assert "It could not be told apart from batch_size=200, flush_interval=0.02" in result.conclusion
    assert (
        "batch_size=200, flush_interval=0.1: item_p99_ms 110 (needs item_p99_ms <= 50)" in result.conclusion
    )
    assert "Batches of 1 land 450 items/s against 1,000 arriving" in result.conclusion
