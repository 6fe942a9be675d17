"""Your own workload: `perflab sweep` on a sync and an async function, typed grid values,
adaptive repeats that stop where points are clearly apart, and the A/A detectable effect
that `perflab compare` prints beside every verdict."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import orjson
import pytest

from perflab import Results, read_jsonl, summarize
from perflab.measure.analysis import aa_effects, compare_runs
from perflab.measure.sweep import Adaptive, facts_of, sweep
from perflab.workbench.cli import main
from perflab.workbench.report import run_report
from perflab.workbench.user_sweep import load_target, parse_grid

WORKLOAD = """
import asyncio
import time


async def fetch(max_concurrent, items=40):
    gate = asyncio.Semaphore(max_concurrent)

    async def one():
        async with gate:
            await asyncio.sleep(0.002)

    await asyncio.gather(*(one() for _ in range(items)))
    return {"items_per_call": items, "label": "not a number: left out"}


async def send(max_concurrent, items=40):
    # A server capped at 8 concurrent calls: more are rejected (429) but finish sooner.
    rejected = max(0, max_concurrent - 8) * 2
    await asyncio.sleep(0.002 * items / max_concurrent)
    return {"rejected": rejected}


def parse(records, codec):
    assert isinstance(records, int) and isinstance(codec, str)
    sum(range(records))
"""


@pytest.fixture
def workload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "userwork.py").write_text(WORKLOAD)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("userwork", None)


def test_grid_values_are_typed_from_their_literals() -> None:
    grid = parse_grid(["max_concurrent=1,4,16", "rate=0.5,2", "codec=zstd-3,gzip-6", "flag=True"])
    assert grid == {
        "max_concurrent": [1, 4, 16],
        "rate": [0.5, 2],
        "codec": ["zstd-3", "gzip-6"],
        "flag": [True],
    }
    for bad, message in [
        (["x"], "--grid takes NAME=V1,V2"),
        (["1x=2"], "--grid takes NAME=V1,V2"),
        (["x=1", "x=2"], "names 'x' twice"),
        (["x="], "has no values"),
        ([], "at least one --grid"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_grid(bad)


def test_a_target_that_is_not_there_is_named(workload: Path) -> None:
    with pytest.raises(ValueError, match="must be MODULE:FUNCTION"):
        load_target("userwork")
    with pytest.raises(ValueError, match="cannot import 'nosuchmodule'"):
        load_target("nosuchmodule:fetch")
    with pytest.raises(ValueError, match="userwork has no 'missing'"):
        load_target("userwork:missing")
    with pytest.raises(TypeError, match="is a str, not a function"):
        load_target("userwork:__name__")


@pytest.mark.slow
def test_the_cli_sweeps_an_async_function_into_a_report(workload: Path, capsys) -> None:
    out = workload / "report"
    assert (
        main(["sweep", "userwork:fetch", "--grid", "max_concurrent=1,8", "--repeat", "6", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "max_concurrent=8: the cheapest setting within 5% of the best" in printed
    assert "index.html" in printed
    results = Results.load(out / "fetch" / "results.json")
    assert results.parameters == ("max_concurrent",)
    assert set(results.metrics) == {"seconds", "items_per_call"}
    assert results.units["seconds"] == "s" and results.higher_is_better["seconds"] is False
    summary = orjson.loads((out / "fetch" / "summary.json").read_bytes())
    assert summary["recommended"] == {"max_concurrent": 8}
    assert summary["key_value"]["point"] == {"max_concurrent": 8}
    assert (out / "index.html").read_text().count('class="card ok"') == 1
    assert (out / "fetch" / "figures" / "sweep.png").stat().st_size > 1000
    # 1 vs 8 concurrent is 8x apart: adaptive repeats stop at five each, and say so.
    assert results.extra["repeats"] == {"max_concurrent=1": 5, "max_concurrent=8": 5}
    assert (
        "The repeats followed the decision: 10 runs where a fixed count would take 12 (17% saved)"
        in summary["conclusion"]
    )
    assert main(["sweep", "userwork:fetch", "--grid", "max_concurrent=1", "--out", str(out)]) == 2
    assert "exists and is not empty: pass --force" in capsys.readouterr().err


@pytest.mark.slow
def test_the_cli_recommends_the_fastest_setting_that_meets_the_constraints(workload: Path, capsys) -> None:
    out = workload / "limits"
    argv = ["sweep", "userwork:send", "--grid", "max_concurrent=2,8,16", "--repeat", "5"]
    options = ["--constraint", "rejected==0", "--order", "grouped", "--cooldown", "0.001"]
    assert main([*argv, *options, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # 16 is the fastest, and draws rejections: the fastest feasible one is recommended.
    chosen = (
        "max_concurrent=8: the cheapest setting within 5% of the best on seconds (min) while rejected == 0"
    )
    assert chosen in printed
    assert "max_concurrent=16: rejected 16 in a repeat (needs rejected == 0)" in printed
    summary = orjson.loads((out / "send" / "summary.json").read_bytes())
    assert summary["recommended"] == {"max_concurrent": 8}
    assert summary["decision"]["chosen"] == {"max_concurrent": 8} and summary["decision"]["settled"]
    results = Results.load(out / "send" / "results.json")
    assert results.extra["plan"]["constraints"] == ["rejected==0"]
    assert results.extra["decision"]["chosen"] == {"max_concurrent": 8}
    # Grouped: each point's first repeats ran back to back.
    runs = read_jsonl(out / "send" / "runs.jsonl")
    logged = [row["max_concurrent"] for row in runs if row["repeat"] is not None]
    assert logged[:10] == [2] * 5 + [8] * 5
    # The sweep's page plots every metric the function returned.
    assert (out / "send" / "figures" / "sweep.png").stat().st_size > 1000
    for bad, message in [
        (["--constraint", "rejected=0"], "must be METRIC OP NUMBER"),
        (["--cheaper", "size"], "--cheaper 'size' is not a parameter of the grid"),
        (["--objective", "seconds:fast"], "direction must be 'min' or 'max'"),
    ]:
        assert main([*argv, *bad, "--out", str(workload / "bad")]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--cooldown", "-1", "--out", str(workload / "bad")])
    assert "argument --cooldown: must be >= 0, got -1" in capsys.readouterr().err
    assert not (workload / "bad").exists()


@pytest.mark.slow
def test_the_cli_sweeps_a_sync_function_with_fixed_repeats(workload: Path) -> None:
    out = workload / "sync"
    argv = [
        "sweep",
        "userwork:parse",
        "--grid",
        "records=10,100000",
        "--grid",
        "codec=zstd-3",
        "--repeat",
        "3",
    ]
    assert main([*argv, "--fixed", "--out", str(out)]) == 0
    results = Results.load(out / "parse" / "results.json")
    assert results.parameters == ("records", "codec") and results.metrics == ("seconds",)
    assert len(results.rows) == 2 * 3
    assert {row["records"] for row in results.rows} == {10, 100000}


def test_adaptive_repeats_go_where_points_are_close() -> None:
    means = {1: 10.0, 2: 5.0, 3: 5.1, 4: 1.0}

    def measure(x: int, seed: int) -> dict[str, float]:
        rng = random.Random(seed * 100 + x)
        return {"seconds": means[x] * (1 + rng.gauss(0, 0.05))}

    frame = sweep(
        measure,
        {"x": [1, 2, 3, 4]},
        repeat=15,
        progress=False,
        seed_param="seed",
        adaptive=Adaptive("seconds"),
    )
    repeats = facts_of(frame).repeats
    assert repeats["x=1"] == repeats["x=4"] == 3  # far from every other point: settled at once
    assert repeats["x=2"] > 3 and repeats["x=3"] > 3  # 2% apart under 5% noise: kept measuring
    assert len(frame) == sum(repeats.values())
    with pytest.raises(ValueError, match="adaptive metric 'latency' is not one fn returns"):
        sweep(
            measure, {"x": [1, 2]}, repeat=5, progress=False, seed_param="seed", adaptive=Adaptive("latency")
        )
    with pytest.raises(ValueError, match="min_repeat \\(3\\) must be <= repeat \\(2\\)"):
        sweep(measure, {"x": [1]}, repeat=2, progress=False, seed_param="seed", adaptive=Adaptive("seconds"))


def test_a_parameter_named_like_a_summary_column_is_refused_not_overwritten() -> None:
    frame = sweep(lambda n: {"v": float(n)}, {"n": [1, 2]}, progress=False, repeat=2)
    with pytest.raises(ValueError, match=r"parameters \['n'\] clash with summary columns"):
        summarize(frame, ["n"])
    with pytest.raises(ValueError, match="--grid n: the name is taken by the summary's columns"):
        parse_grid(["n=1,2"])


def noisy_results(seed: int, noise: float) -> Results:
    rng = random.Random(seed)
    rows = [
        {"pool": pool, "repeat": r, "throughput": pool * 100 * rng.gauss(1, noise)}
        for pool in (1, 2, 4, 8)
        for r in range(8)
    ]
    return Results.new("taskpool", ["pool"], ["throughput"], rows, higher_is_better={"throughput": True})


def test_the_aa_effect_reflects_the_noise_and_compare_prints_it(tmp_path: Path, capsys) -> None:
    quiet = noisy_results(seed=1, noise=0.01)
    noisy = noisy_results(seed=2, noise=0.2)
    small = aa_effects(quiet.to_frame(), quiet.parameters, quiet.metrics)["throughput"]
    large = aa_effects(noisy.to_frame(), noisy.parameters, noisy.metrics)["throughput"]
    assert small is not None and large is not None and small < large
    for name, results in (("a", quiet), ("b", noisy)):
        results.extra["min_detectable_effect"] = aa_effects(
            results.to_frame(), results.parameters, results.metrics
        )
        results.dump(tmp_path / f"{name}.json")
    table = compare_runs(quiet, noisy)
    assert (table["detectable"] == large).all()  # the larger of the two runs' A/A effects
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert f"±{large:.1%}" in capsys.readouterr().out


def test_a_sweep_parameter_of_the_wrong_kind_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="parameter repeat of sweep must be a number like its default 10"):
        run_report(only=["sweep"], out=tmp_path / "run", parameters={"repeat": "abc"}, log=lambda *_: None)
    assert not (tmp_path / "run").exists()
