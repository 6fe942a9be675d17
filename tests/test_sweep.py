"""sweep()/asweep(): grids, tidy output, order, seeds and validation."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle

import pandas as pd
import pytest

from perflab.measure.sweep import SweepFacts, SweepInterrupted, asweep, facts_of, grid_points, sweep


def test_grid_points_are_every_combination_in_order() -> None:
    assert grid_points({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]


@pytest.mark.parametrize(
    ("grid", "error", "message"),
    [
        ({}, ValueError, "grid must be a non-empty mapping"),
        ({"a": []}, ValueError, r"grid\['a'\] is empty"),
        ({"a": "123"}, TypeError, r"grid\['a'\] must be a list of values, got str"),
        ({"a": [None]}, TypeError, r"grid\['a'\] values must be strings or finite numbers, got None"),
        ({"a": [float("nan")]}, TypeError, "finite numbers"),
        ({"repeat": [1]}, ValueError, "'repeat' is reserved"),
        ({"not valid": [1]}, ValueError, "must be identifiers"),
    ],
)
def test_bad_grids_fail_before_any_work(grid, error, message) -> None:
    calls = []
    with pytest.raises(error, match=message):
        sweep(lambda **p: calls.append(p) or {"m": 1}, grid)
    assert calls == []


def test_the_result_is_tidy_and_interleaved() -> None:
    calls = []

    def measure(size: int, codec: str) -> dict[str, float]:
        calls.append((size, codec))
        return {"throughput": size * 10.0, "ratio": 0.5}

    frame = sweep(measure, {"size": [1, 2], "codec": ["gz"]}, repeat=3, warmup=1, progress=False)
    assert list(frame.columns) == ["size", "codec", "repeat", "throughput", "ratio"]
    assert len(frame) == 6
    assert facts_of(frame).parameters == ("size", "codec")
    # One warm-up per point, then repeat 0 of every point, then repeat 1, ...
    assert calls == [(1, "gz"), (2, "gz")] + [(1, "gz"), (2, "gz")] * 3
    assert frame.groupby("size")["throughput"].median().to_dict() == {1: 10.0, 2: 20.0}


def test_the_facts_are_typed_kept_by_pickle_and_dropped_by_derived_frames() -> None:
    frame = sweep(lambda n: {"m": float(n)}, {"n": [1, 2]}, repeat=2, progress=False, name="s")
    facts = facts_of(frame)
    assert facts == SweepFacts(name="s", parameters=("n",), metrics=("m",))
    assert isinstance(frame, pd.DataFrame)
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.name = "other"  # type: ignore[misc]
    assert facts_of(pickle.loads(pickle.dumps(frame))) == facts
    # A filtered or copied frame no longer is the sweep: its facts would be wrong.
    assert facts_of(frame[frame["n"] == 1]) is None
    assert facts_of(frame.copy()) is None
    # A column named "facts" is not mistaken for them.
    assert facts_of(pd.DataFrame({"facts": [1]})) is None


def test_grouped_order_and_seeds_per_repeat() -> None:
    seen = []
    frame = sweep(
        lambda n, seed: seen.append((n, seed)) or {"m": seed},
        {"n": [1, 2]},
        repeat=2,
        warmup=0,
        progress=False,
        order="grouped",
        seed_param="seed",
    )
    assert seen == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert frame["m"].tolist() == [0, 1, 0, 1]


def test_metrics_must_be_numbers() -> None:
    with pytest.raises(TypeError, match=r"returned a non-number for metric 'm': 'fast'"):
        sweep(lambda n: {"m": "fast"}, {"n": [1]}, progress=False)
    with pytest.raises(TypeError, match="must return a mapping of metric name to number, got float"):
        sweep(lambda n: 1.0, {"n": [1]}, progress=False)


def test_an_async_fn_runs_outside_a_loop_and_with_await_inside_one() -> None:
    async def measure(n: int) -> dict[str, float]:
        await asyncio.sleep(0)
        return {"m": n * 2.0}

    assert sweep(measure, {"n": [1, 2]}, repeat=2, progress=False)["m"].tolist() == [2.0, 4.0, 2.0, 4.0]

    async def inside() -> list[float]:
        with pytest.raises(RuntimeError, match="use 'await asweep"):
            sweep(measure, {"n": [1]})
        frame = await asweep(measure, {"n": [3]}, repeat=2, warmup=0, progress=False)
        return frame["m"].tolist()

    assert asyncio.run(inside()) == [6.0, 6.0]


def test_repeat_and_warmup_are_validated() -> None:
    with pytest.raises(ValueError, match="repeat must be >= 1, got 0"):
        sweep(lambda n: {"m": 1}, {"n": [1]}, repeat=0)
    with pytest.raises(ValueError, match="order must be 'interleaved' or 'grouped'"):
        sweep(lambda n: {"m": 1}, {"n": [1]}, order="random", progress=False)


def test_ctrl_c_keeps_the_runs_that_finished() -> None:
    calls = []

    def measure(size: int) -> dict[str, float]:
        calls.append(size)
        if len(calls) == 7:  # the user presses Ctrl-C during the 7th run
            raise KeyboardInterrupt
        return {"value": float(size)}

    with pytest.raises(SweepInterrupted) as stop:
        sweep(measure, {"size": [1, 2, 3]}, repeat=4, warmup=1, progress=False)
    frame = stop.value.frame
    # 3 warm-ups, then repeat 0 of every point, then the first point of repeat 1.
    assert frame[["size", "repeat"]].values.tolist() == [[1, 0], [2, 0], [3, 0]]
    assert isinstance(stop.value, KeyboardInterrupt) and "after 3 measured runs" in str(stop.value)


def test_parse_literal_types_text_and_strict_refuses_what_is_not_one() -> None:
    from perflab._validate import parse_literal

    assert parse_literal("[1, 2]") == [1, 2]
    assert parse_literal("0.5") == 0.5
    assert parse_literal("zstd-3") == "zstd-3"
    with pytest.raises(ValueError, match="default 'Path' is not a Python literal"):
        parse_literal("Path", name="default", strict=True)
    with pytest.raises(ValueError, match="is not a valid literal"):
        parse_literal("{[1]: 2}")
