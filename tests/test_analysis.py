"""summarize, knee, pareto_front and compare_runs on hand-made data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perflab import Results
from perflab.measure.analysis import compare_runs, host_ratios, knee, pareto_front
from perflab.measure.results import summarize

from synthetic import pool_results


def pool_frame() -> pd.DataFrame:
    rows = []
    for pool, throughput in [(1, 50), (2, 100), (4, 190), (8, 300), (16, 320), (32, 324)]:
        for r, jitter in enumerate([-1.0, 0.0, 1.0]):
            rows.append({"pool": pool, "repeat": r, "throughput": throughput + jitter, "p99": 10.0 + pool})
    return pd.DataFrame(rows)


def test_summarize_gives_median_quartiles_and_ci_per_point() -> None:
    summary = summarize(pool_frame(), ["pool"])
    row = summary[(summary.pool == 8) & (summary.metric == "throughput")].iloc[0]
    assert (row["median"], row["min"], row["max"], row["n"]) == (300.0, 299.0, 301.0, 3)
    assert (row["q25"], row["q75"]) == (299.5, 300.5)
    assert set(summary.metric) == {"throughput", "p99"}


def test_knee_is_the_smallest_setting_within_the_fraction_of_the_best() -> None:
    summary = summarize(pool_frame(), ["pool"])
    found = knee(summary, "pool", "throughput", fraction=0.95)
    assert (found.x, found.best_x, found.best_y) == (16, 32, 324.0)  # 300 < 0.95 * 324 = 307.8 <= 320
    assert knee(summary, "pool", "throughput", fraction=0.9).x == 8
    lowest = knee(summary, "pool", "p99", fraction=0.5, higher_is_better=False)
    assert lowest.x == 1  # 11 ms is the best; anything <= 22 ms qualifies, pool 1 first
    with pytest.raises(ValueError, match="fraction must be in"):
        knee(summary, "pool", "throughput", fraction=0)
    with pytest.raises(ValueError, match="metric 'missing' is not in the summary"):
        knee(summary, "pool", "missing")


def test_pareto_front_keeps_only_undominated_rows() -> None:
    points = pd.DataFrame(
        {
            "name": ["a", "b", "c", "d", "e"],
            "throughput": [100, 200, 150, 200, 50],
            "p99": [10, 30, 40, 20, 5],
        }
    )
    front = pareto_front(points, {"throughput": "max", "p99": "min"})
    assert sorted(front.name) == ["a", "d", "e"]  # b loses to d; c loses to d
    with pytest.raises(ValueError, match="must be 'max' or 'min'"):
        pareto_front(points, {"throughput": "up"})


def run(scale: float, seed: int) -> Results:
    return pool_results(scale, seed, pools=(1, 4), repeats=9)


def test_compare_runs_calls_a_real_change_and_leaves_noise_alone() -> None:
    same = compare_runs(run(1.0, 1), run(1.0, 2))
    assert set(same.verdict) == {"no significant change"}
    slower = compare_runs(run(1.0, 1), run(0.8, 2))
    throughput = slower[slower.metric == "throughput"]
    assert set(throughput.verdict) == {"slower"}  # less throughput is worse
    assert throughput.ratio.between(0.78, 0.82).all()
    assert set(slower[slower.metric == "p99"].verdict) == {"no significant change"}
    with pytest.raises(ValueError, match="different parameters"):
        compare_runs(run(1.0, 1), Results.new("x", ["other"], ["throughput"], []))


def test_dominated_names_the_beaten_rows_with_a_noise_tolerance() -> None:
    from perflab.measure.analysis import dominated

    points = pd.DataFrame(
        {
            "codec": ["gzip-8", "gzip-9", "zstd-1", "zstd-3"],
            "saved": [73.41, 73.41, 75.5, 74.7],
            "speed": [34.3, 34.9, 600.0, 540.0],
        }
    )
    strict = dominated(points, {"saved": "max", "speed": "max"}, key="codec")
    assert dict(zip(strict.dominated, strict.by, strict=True)) == {
        "gzip-8": "zstd-1",
        "gzip-9": "zstd-1",
        "zstd-3": "zstd-1",
    }
    gzip = points[points.codec.str.startswith("gzip")]
    assert dominated(gzip, {"saved": "max", "speed": "max"}, key="codec").dominated.tolist() == ["gzip-8"]
    # Within 5% the speeds tie: neither gzip level beats the other.
    assert dominated(gzip, {"saved": "max", "speed": "max"}, key="codec", tolerance={"speed": 0.05}).empty


def on_hosts(speeds: dict[str, float], seed: int) -> Results:
    """A cluster run: every pool size measured on each host, hosts at different speeds."""
    rng = np.random.default_rng(seed)
    rows = [
        {"pool": pool, "repeat": r, "host": host, "throughput": pool * 100 * speed * rng.normal(1, 0.01)}
        for host, speed in speeds.items()
        for pool in (1, 4)
        for r in range(9)
    ]
    hosts = {host: f"host {host}" for host in speeds}
    return Results.new(
        "taskpool", ["pool"], ["throughput"], rows, hosts=hosts, higher_is_better={"throughput": True}
    )


def test_cluster_runs_are_compared_host_by_host_never_across() -> None:
    baseline = on_hosts({"a": 1.0, "b": 2.0}, seed=1)
    # The candidate ran on host b only, and is 10% slower there. Pooled, its median
    # (host b, 2x fast) would look far faster than the baseline's mix of a and b.
    candidate = on_hosts({"b": 1.8}, seed=2)
    table = compare_runs(baseline, candidate)
    assert set(table["host"]) == {"b"}
    assert set(table["verdict"]) == {"slower"} and table["ratio"].between(0.88, 0.92).all()
    # A local run counts as measured on its metadata's host.
    local = pool_results(1.0, 3, pools=(1, 4), repeats=9)
    assert compare_runs(local, candidate).empty  # this machine is neither a nor b


def test_summaries_of_a_cluster_run_are_per_host() -> None:
    run = on_hosts({"a": 1.0, "b": 2.0}, seed=4)
    summary = run.summarize()
    assert list(summary.columns[:3]) == ["pool", "host", "metric"]
    medians = summary.set_index(["pool", "host"])["median"]
    assert medians[(4, "b")] / medians[(4, "a")] == pytest.approx(2.0, rel=0.03)
    again = Results.from_dict(run.to_dict())
    assert again.hosts == {"a": "host a", "b": "host b"} and again.to_frame().equals(run.to_frame())
    with pytest.raises(ValueError, match=r"rows\[0\] lacks \['host'\]"):
        Results.new(
            "x", ["pool"], ["throughput"], [{"pool": 1, "repeat": 0, "throughput": 1.0}], hosts={"a": "A"}
        )


def test_host_ratios_pool_hosts_by_their_ratio_to_a_same_host_baseline() -> None:
    frame = on_hosts({"a": 1.0, "b": 3.0}, seed=5).to_frame()
    ratios = host_ratios(frame, ["pool"], "throughput", {"pool": 1}).set_index("pool")
    assert ratios.loc[4, "ratio"] == pytest.approx(4.0, rel=0.02)  # 4x on each host
    assert ratios.loc[4, "hosts"] == 2 and ratios.loc[1, "ratio"] == 1.0
    with pytest.raises(ValueError, match="baseline must give every parameter"):
        host_ratios(frame, ["pool"], "throughput", {"size": 1})
