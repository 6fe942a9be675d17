"""Your own workload in the workbench: ``perflab sweep MODULE:FUNCTION --grid name=v1,v2``
and the ``sweep`` template notebook sweep a sync or async callable of yours.

Each call is timed (``seconds``, wall clock); a call that returns a mapping of numbers adds
those as metrics too (e.g. ``{"ok_share": 0.97}``). Async callables run on one event loop
of their own (asyncio, or uvloop when asked). Grid values are typed from the literals given
(``1`` an int, ``0.5`` a float, ``zstd-3`` a string).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import importlib
import importlib.metadata
import inspect
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from perflab._validate import check_int, check_str
from perflab.results import SUMMARY_COLUMNS, Results, metric_columns, summarize
from perflab.sweep import Adaptive, SweepInterrupted, asweep, sweep
from perflab.workbench import findings
from perflab.workbench.metrics import METRICS, Metric

if TYPE_CHECKING:
    import pandas as pd

    from perflab.cluster import Cluster

__all__ = ["TIMED_METRIC", "check_grid", "load_target", "parse_grid", "run_sweep", "sweep_target"]

#: The metric every call gets: its wall time.
TIMED_METRIC = "seconds"


def load_target(spec: str) -> Callable[..., Any]:
    """The callable named ``"package.module:function"`` (the current folder is importable,
    as for ``python -m``)."""
    check_str("target", spec)
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"target must be MODULE:FUNCTION like 'mypkg.mod:fetch', got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"target {spec!r}: cannot import {module_name!r}: {error}") from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"target {spec!r}: {module_name} has no {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"target {spec!r} is a {type(target).__name__}, not a function")
    return target


def _literal(text: str) -> Any:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, str | Real) else text


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["max_concurrent=1,4,16", "codec=zstd-3,gzip-6"]`` as a grid, values typed."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, equals, values = item.partition("=")
        name = name.strip()
        if not equals or not name.isidentifier():
            raise ValueError(f"--grid takes NAME=V1,V2,..., got {item!r}")
        if name in grid:
            raise ValueError(f"--grid names {name!r} twice")
        if name in SUMMARY_COLUMNS or name == "repeat":
            raise ValueError(f"--grid {name}: the name is taken by the summary's columns; rename it")
        parsed = [_literal(v.strip()) for v in values.split(",") if v.strip()]
        if not parsed:
            raise ValueError(f"--grid {name} has no values")
        grid[name] = parsed
    if not grid:
        raise ValueError("give at least one --grid NAME=V1,V2,...")
    return grid


def check_grid(grid: Any) -> dict[str, list[Any]]:
    """A notebook's ``grid`` parameter: a dict of parameter name to a non-empty list."""
    if not isinstance(grid, Mapping) or not grid:
        raise TypeError(f"parameter grid must be a dict like {{'max_concurrent': [1, 4]}}, got {grid!r}")
    for name, values in grid.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"parameter grid: {name!r} is not a parameter name")
        if not isinstance(values, list | tuple) or not values:
            raise ValueError(f"parameter grid[{name!r}] must be a non-empty list, got {values!r}")
    return {name: list(values) for name, values in grid.items()}


def _metrics(seconds: float, result: Any) -> dict[str, float]:
    out = {TIMED_METRIC: seconds}
    if isinstance(result, Mapping):
        for key, value in result.items():
            if (
                isinstance(key, str)
                and key != TIMED_METRIC
                and isinstance(value, Real)
                and not isinstance(value, bool)
            ):
                out[key] = float(value)
    return out


def _timed(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` timed: returns its metrics (``seconds`` and any numbers it returned)."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):  # noqa: B004

        @functools.wraps(fn)
        async def timed_async(**point: Any) -> dict[str, float]:
            started = time.perf_counter()
            result = await fn(**point)
            return _metrics(time.perf_counter() - started, result)

        return timed_async

    @functools.wraps(fn)
    def timed(**point: Any) -> dict[str, float]:
        started = time.perf_counter()
        result = fn(**point)
        if inspect.isawaitable(result):
            raise TypeError(f"{getattr(fn, '__name__', fn)!r} returned an awaitable: declare it async def")
        return _metrics(time.perf_counter() - started, result)

    return timed


def _options(repeat: int, adaptive: bool, name: str) -> dict[str, Any]:
    check_int("repeat", repeat, minimum=1)
    # Five repeats at least: fewer cannot give a Mann-Whitney verdict against a neighbour.
    rule = Adaptive(TIMED_METRIC, min_repeat=min(5, repeat)) if adaptive and repeat >= 2 else None
    return {"repeat": repeat, "warmup": 1, "progress": False, "name": name, "adaptive": rule}


async def sweep_target(
    fn: Callable[..., Any], grid: Mapping[str, Sequence[Any]], *, repeat: int = 12, adaptive: bool = True
) -> pd.DataFrame:
    """Sweep ``fn`` over ``grid`` inside the running loop (a notebook); see the module docstring."""
    return await asweep(_timed(fn), grid, **_options(repeat, adaptive, _name(fn)))


def _name(fn: Any) -> str:
    return str(getattr(fn, "__name__", type(fn).__name__))


def user_metrics(frame: pd.DataFrame, parameters: Sequence[str]) -> dict[str, Metric]:
    """Units and directions for the metrics a user's function returned (unknown: neither)."""
    names = metric_columns(frame, parameters)
    return {name: METRICS.get(name, Metric("", "neither")) for name in names}


@dataclasses.dataclass(frozen=True, slots=True)
class SweepRun:
    """Where a CLI sweep went and what it found."""

    directory: Path
    index: Path
    frame: pd.DataFrame
    finding: findings.Finding


def _ship_code(cluster: Cluster, fn: Callable[..., Any]) -> None:
    """Make the module of ``fn`` importable on the workers when it is the user's own code
    (a file or package under the current folder, not installed): Dask's ``upload_file``
    sends a module file, or a package zipped, to every worker, so hosts need no copy."""
    import shutil
    import tempfile

    module = sys.modules.get(getattr(inspect.unwrap(fn), "__module__", "") or "")
    top = sys.modules.get((module.__name__ if module else "").partition(".")[0])
    origin = Path(getattr(top, "__file__", None) or "")
    if top is None or not origin.is_file() or not origin.resolve().is_relative_to(Path.cwd().resolve()):
        return  # installed (or built in): the workers import it as we do
    if top.__name__ in importlib.metadata.packages_distributions():
        return  # an installed distribution (perhaps editable, as perflab in its own repo)
    if origin.name != "__init__.py":
        cluster.client.upload_file(str(origin), load=False)
        return
    with tempfile.TemporaryDirectory() as scratch:
        package = origin.parent
        archive = shutil.make_archive(str(Path(scratch) / package.name), "zip", package.parent, package.name)
        cluster.client.upload_file(archive, load=False)


def _sweep_frame(
    timed: Callable[..., Any],
    grid: Mapping[str, Sequence[Any]],
    options: dict[str, Any],
    loop: str,
    cluster: Cluster | None,
) -> pd.DataFrame:
    """The sweep, on this machine (an async target on its own asyncio or uvloop loop) or
    as tasks on ``cluster``."""
    if cluster is not None:
        with cluster if not cluster.started else contextlib.nullcontext(cluster):
            _ship_code(cluster, timed)
            return sweep(timed, grid, **options, cluster=cluster)
    if not inspect.iscoroutinefunction(timed):
        return sweep(timed, grid, **options)
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ValueError("loop 'uvloop' needs the uvloop package: pip install uvloop") from None
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(asweep(timed, grid, **options))


def run_sweep(
    spec: str,
    grid: Mapping[str, Sequence[Any]],
    *,
    repeat: int = 12,
    adaptive: bool = True,
    out: str | os.PathLike[str] | None = None,
    reports_dir: str | os.PathLike[str] = "reports",
    loop: Literal["asyncio", "uvloop"] = "asyncio",
    force: bool = False,
    cluster: Cluster | None = None,
) -> SweepRun:
    """``perflab sweep``: sweep the target and write a report folder like a notebook
    run's (results.json/csv, summary.csv, figure, summary.json, index.html). With
    ``cluster`` every run is a task on it (:mod:`perflab.cluster`). Ctrl-C saves the runs
    that finished (results.json/csv) and raises :class:`~perflab.sweep.SweepInterrupted`."""
    from perflab.metadata import collect_metadata
    from perflab.workbench.notebook import publish
    from perflab.workbench.plots import plot_user_sweep
    from perflab.workbench.report import NotebookRun, ReportRun, write_index, write_run_json

    fn = load_target(spec)
    if loop not in ("asyncio", "uvloop"):
        raise ValueError(f"loop must be 'asyncio' or 'uvloop', got {loop!r}")
    if cluster is not None and loop != "asyncio":
        raise ValueError("--loop uvloop runs on this machine only: a cluster's workers use asyncio")
    name = _name(fn)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    directory = Path(out) if out is not None else Path(reports_dir) / f"{stamp}-sweep-{name}"
    if directory.exists() and any(directory.iterdir()) and not force:
        raise FileExistsError(f"{directory} exists and is not empty: pass --force to write into it")
    started = time.perf_counter()
    timed = _timed(fn)
    options = _options(repeat, adaptive, name)
    try:
        frame = _sweep_frame(timed, grid, options, loop, cluster)
    except SweepInterrupted as stop:
        saved = directory / name
        if len(stop.frame):  # where a finished sweep puts them, so compare and history read them
            saved.mkdir(parents=True, exist_ok=True)
            extra = {"target": spec, "interrupted": True}
            results = Results.from_frame(stop.frame, name, list(grid), extra=extra)
            results.dump(saved / "results.json", replace=True)
            results.to_frame().to_csv(saved / "results.csv", index=False)
        raise SweepInterrupted(stop.frame, saved) from None
    parameters = list(grid)
    repeats = frame.attrs["perflab"].get("repeats")
    summary = summarize(frame, parameters)
    finding = findings.user_sweep(summary, frame, parameters, target=spec)
    figure = plot_user_sweep(summary, parameters)
    publish(
        directory / name,
        name,
        frame,
        parameters=parameters,
        finding=finding,
        figures={"sweep": figure},
        extra={
            "target": spec,
            "grid": dict(grid),
            "loop": loop,
            "repeats": repeats,
        },
        metrics=user_metrics(frame, parameters),
    )
    summary_json = finding.as_dict() | {"figures": ["figures/sweep.png"]}
    run = NotebookRun(name, "ok", time.perf_counter() - started, {"target": spec, **grid}, None, summary_json)
    report = ReportRun(directory, "sweep", [run])
    metadata = collect_metadata()
    write_run_json(report, metadata, run.seconds)
    write_index(report, metadata)
    return SweepRun(directory, report.index, frame, finding)
