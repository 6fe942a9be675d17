"""Parameter sweeps: every point of a grid, repeated, as a tidy DataFrame.

``grid`` maps parameter names to lists of values (strings or numbers), asv-style.
``fn(**point)`` measures one point and returns a mapping of metric name to number (or an
awaitable of one). Repeats are interleaved by default (repeat 0 of every point, then
repeat 1, ...), so a drift in the machine's state spreads over all points instead of
biasing the last ones. ``seed_param="seed"`` passes the repeat number to ``fn`` as
``seed``, so a simulated workload draws new random numbers each repeat but the same ones
for every point of a repeat (common random numbers: differences between points are the
settings', not the draws'). The result has one row per (point, repeat): parameter
columns, ``repeat``, then metric columns; ``frame.attrs["perflab"]`` names which is which.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from numbers import Real
from typing import TYPE_CHECKING, Any, Literal

from perflab._validate import check_int

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["asweep", "grid_points", "sweep"]

Metrics = Mapping[str, float | int | bool | None]


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in order (the last name varies fastest)."""
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError("grid must be a non-empty mapping of parameter name to a list of values")
    for name, values in grid.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"grid parameter names must be identifiers, got {name!r}")
        if name == "repeat":
            raise ValueError("grid parameter 'repeat' is reserved for the repeat column")
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise TypeError(f"grid[{name!r}] must be a list of values, got {type(values).__name__}")
        if not values:
            raise ValueError(f"grid[{name!r}] is empty: give at least one value")
        for value in values:
            if not isinstance(value, str | Real) or (isinstance(value, float) and not math.isfinite(value)):
                raise TypeError(f"grid[{name!r}] values must be strings or finite numbers, got {value!r}")
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]


def _call_args(point: dict[str, Any], seed_param: str | None, repeat: int | None) -> dict[str, Any]:
    """The keyword arguments of one run; ``repeat`` None is a warm-up run."""
    if seed_param is None:
        return point
    if seed_param in point:
        raise ValueError(f"seed_param {seed_param!r} is also a grid parameter")
    # Warm-up runs use a seed no measured repeat uses.
    return {**point, seed_param: 10**6 if repeat is None else repeat}


class _Rows:
    """The measured rows; every point must return the same metric names, none of them a
    parameter's (the metric would silently overwrite the parameter column)."""

    def __init__(self, points: list[dict[str, Any]], seed_param: str | None) -> None:
        self.reserved = {*points[0], "repeat", *([seed_param] if seed_param else [])}
        self.metrics: list[str] | None = None
        self.first_point: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []

    def check(self, point: Mapping[str, Any], metrics: Any) -> dict[str, Any]:
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"fn({point}) must return a mapping of metric name to number, got {type(metrics).__name__}"
            )
        for name, value in metrics.items():
            if not isinstance(name, str):
                raise TypeError(f"fn({point}) returned a metric name that is not a string: {name!r}")
            if name in self.reserved:
                raise ValueError(
                    f"fn({point}) returned a metric named {name!r}, which is a parameter or "
                    "reserved column name: rename the metric"
                )
            if value is not None and not isinstance(value, Real):
                raise TypeError(f"fn({point}) returned a non-number for metric {name!r}: {value!r}")
        names = list(metrics)
        if self.metrics is None:
            self.metrics, self.first_point = names, dict(point)
        elif set(names) != set(self.metrics):
            missing = sorted(set(self.metrics) - set(names))
            extra = sorted(set(names) - set(self.metrics))
            raise ValueError(
                f"fn({point}) returned other metrics than fn({self.first_point}): "
                f"missing {missing}, extra {extra}; every point must return the same names "
                "(use None for a value that could not be measured)"
            )
        return dict(metrics)

    def add(self, point: dict[str, Any], repeat: int | None, outcome: Any) -> None:
        metrics = self.check(point, outcome)
        if repeat is not None:
            self.rows.append({**point, "repeat": repeat, **metrics})


def _plan(
    fn: Any, grid: Mapping[str, Sequence[Any]], repeat: int, warmup: int, order: str
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], int | None]]]:
    """Validate, then list every run: the warm-ups (repeat None), then the measured runs."""
    points = grid_points(grid)
    check_int("repeat", repeat, minimum=1)
    check_int("warmup", warmup, minimum=0)
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if order == "interleaved":
        measured = [(point, r) for r in range(repeat) for point in points]
    elif order == "grouped":
        measured = [(point, r) for point in points for r in range(repeat)]
    else:
        raise ValueError(f"order must be 'interleaved' or 'grouped', got {order!r}")
    warmups: list[tuple[dict[str, Any], int | None]] = [
        (point, None) for point in points for _ in range(warmup)
    ]
    return points, warmups + measured


def _frame(points: list[dict[str, Any]], rows: _Rows, name: str) -> pd.DataFrame:
    import pandas as pd

    parameters = list(points[0])
    metrics = rows.metrics or []  # every point returned these (checked as they came)
    frame = pd.DataFrame(rows.rows, columns=[*parameters, "repeat", *metrics])
    frame.attrs["perflab"] = {"name": name, "parameters": parameters, "metrics": metrics}
    return frame


def _progress(total: int, enabled: bool, name: str) -> Any:
    from tqdm.std import tqdm

    return tqdm(total=total, desc=name, unit="run", leave=False, mininterval=0.5, disable=not enabled)


def sweep(
    fn: Callable[..., Metrics | Awaitable[Metrics]],
    grid: Mapping[str, Sequence[Any]],
    *,
    repeat: int = 5,
    warmup: int = 1,
    progress: bool = True,
    order: Literal["interleaved", "grouped"] = "interleaved",
    name: str = "sweep",
    seed_param: str | None = None,
) -> pd.DataFrame:
    """Measure every point of ``grid`` ``repeat`` times (after ``warmup`` discarded runs
    per point). An async ``fn`` works when no loop is running; inside one (a notebook)
    use ``await asweep(...)``."""
    points, runs = _plan(fn, grid, repeat, warmup, order)
    if inspect.iscoroutinefunction(fn):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            run = asweep(
                fn,
                grid,
                repeat=repeat,
                warmup=warmup,
                progress=progress,
                order=order,
                name=name,
                seed_param=seed_param,
            )
            return asyncio.run(run)
        raise RuntimeError("sweep() of an async fn inside a running loop: use 'await asweep(...)'")
    rows = _Rows(points, seed_param)
    with _progress(len(runs), progress, name) as bar:
        for point, r in runs:
            rows.add(point, r, fn(**_call_args(point, seed_param, r)))
            bar.update()
    return _frame(points, rows, name)


async def asweep(
    fn: Callable[..., Metrics | Awaitable[Metrics]],
    grid: Mapping[str, Sequence[Any]],
    *,
    repeat: int = 5,
    warmup: int = 1,
    progress: bool = True,
    order: Literal["interleaved", "grouped"] = "interleaved",
    name: str = "sweep",
    seed_param: str | None = None,
) -> pd.DataFrame:
    """:func:`sweep` inside a running loop; ``fn`` may return metrics or an awaitable."""
    points, runs = _plan(fn, grid, repeat, warmup, order)
    rows = _Rows(points, seed_param)
    with _progress(len(runs), progress, name) as bar:
        for point, r in runs:
            outcome = fn(**_call_args(point, seed_param, r))
            if inspect.isawaitable(outcome):
                outcome = await outcome
            rows.add(point, r, outcome)
            bar.update()
    return _frame(points, rows, name)
