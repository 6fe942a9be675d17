"""Your own workload in the workbench: ``perflab sweep MODULE:FUNCTION --grid name=v1,v2``
and the ``sweep`` template notebook sweep a sync or async callable of yours.

Each call is timed (``seconds``, wall clock); a call that returns a mapping of numbers adds
those as metrics too (e.g. ``{"ok_share": 0.97}``). Async callables run on one event loop
of their own (asyncio, or uvloop when asked). Grid values are typed from the literals given
(``1`` an int, ``0.5`` a float, ``zstd-3`` a string).

Nothing measured is lost: ``--out`` is created and its run log opened before the first
run; every run is appended to ``<out>/<name>/runs.jsonl`` as it lands (a crash or kill at
any moment keeps what finished); a run whose function raises (or calls ``sys.exit``, or
returns a value that is no measurement) is recorded with its point and error and the
sweep goes on; a Ctrl-C while the results are saved waits until they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import importlib
import importlib.metadata
import inspect
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from perflab._validate import check_grid as _check_grid
from perflab._validate import check_int, check_number, check_str, parse_literal
from perflab.measure.decision import Constraint, CostOrder, Decision, UntilDecided
from perflab.measure.metadata import collect_metadata
from perflab.measure.results import HOST_COLUMN, SUMMARY_COLUMNS, Results, metric_columns, summarize
from perflab.measure.sweep import RunFailed, SweepInterrupted, asweep, facts_of, sweep
from perflab.workbench import findings
from perflab.workbench.metrics import METRICS, Metric

if TYPE_CHECKING:
    import pandas as pd

    from perflab.measure.cluster import Cluster

__all__ = [
    "TIMED_METRIC",
    "Plan",
    "TargetFailed",
    "check_grid",
    "decision_of",
    "load_target",
    "parse_grid",
    "run_sweep",
    "sweep_target",
]

#: The metric every call gets: its wall time.
TIMED_METRIC = "seconds"


class TargetFailed(Exception):
    """Every run of the swept function failed: nothing was measured (its errors say why)."""


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
    """A grid value: a number or a string (``4``, ``0.5``, ``'x'``); anything else is text."""
    value = parse_literal(text, name="--grid value")
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
    """A notebook's ``grid`` parameter (see :func:`perflab._validate.check_grid`)."""
    return _check_grid(grid, name="parameter grid")


def _metrics(seconds: float, result: Any) -> dict[str, float]:
    out = {TIMED_METRIC: seconds}
    if isinstance(result, Mapping):
        if TIMED_METRIC in result:
            raise ValueError(
                f"it returned a metric named {TIMED_METRIC!r}, which perflab fills with the "
                "call's wall time: rename yours (e.g. 'api_seconds')"
            )
        for key, value in result.items():
            if isinstance(key, str) and isinstance(value, Real) and not isinstance(value, bool):
                try:
                    number = float(value)
                except OverflowError:
                    raise ValueError(f"it returned {key}={value!r:.30}...: too large for a float") from None
                if math.isinf(number):
                    raise ValueError(
                        f"it returned {key}={number}: an infinity is not a measurement "
                        "(return None or NaN for a value that could not be measured)"
                    )
                out[key] = number
    return out


def _failed(exc: BaseException) -> RunFailed:
    """A run's failure as the sweep records it: the function's own exception, named."""
    if isinstance(exc, SystemExit):
        return RunFailed(f"it called sys.exit({exc.code!r})")
    return RunFailed.of(exc)


def _timed(fn: Callable[..., Any], cooldown: float = 0.0) -> Callable[..., Any]:
    """``fn`` timed: returns its metrics (``seconds`` and any numbers it returned), or a
    :class:`RunFailed` naming what went wrong in this run (a cluster worker returns it too).
    ``cooldown`` seconds pass after each call, untimed, so a server's state settles."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):  # noqa: B004

        @functools.wraps(fn)
        async def timed_async(**point: Any) -> dict[str, float] | RunFailed:
            started = time.perf_counter()
            try:
                result = await fn(**point)
                return _metrics(time.perf_counter() - started, result)
            except (Exception, SystemExit) as exc:
                return _failed(exc)
            finally:
                if cooldown:
                    await asyncio.sleep(cooldown)

        return timed_async

    @functools.wraps(fn)
    def timed(**point: Any) -> dict[str, float] | RunFailed:
        started = time.perf_counter()
        try:
            result = fn(**point)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise TypeError("it returned an awaitable: declare it async def")
            return _metrics(time.perf_counter() - started, result)
        except (Exception, SystemExit) as exc:
            return _failed(exc)
        finally:
            if cooldown:
                time.sleep(cooldown)

    return timed


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """How ``perflab sweep`` runs and decides: the repeats (at most ``repeat`` a setting,
    following the decision when ``adaptive``), the order of runs, the cooldown after each,
    and the decision's objective, constraints and cost order
    (:mod:`perflab.measure.decision`)."""

    repeat: int = 12
    adaptive: bool = True
    order: Literal["interleaved", "grouped"] = "interleaved"
    cooldown: float = 0.0
    objective: str = f"{TIMED_METRIC}:min"
    constraints: tuple[str, ...] = ()
    cheaper: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_int("repeat", self.repeat, minimum=1)
        if self.order not in ("interleaved", "grouped"):
            raise ValueError(f"order must be 'interleaved' or 'grouped', got {self.order!r}")
        check_number("cooldown", self.cooldown, minimum=0)
        if isinstance(self.constraints, str) or isinstance(self.cheaper, str):
            raise TypeError("constraints and cheaper must be lists of text, e.g. ['rejected==0']")
        self.rule(None)  # a bad objective, constraint or cost order names itself now

    def rule(self, parameters: Sequence[str] | None) -> UntilDecided:
        """The decision rule; with the grid's ``parameters``, a cost order must name one."""
        cheaper = [CostOrder.parse(text) for text in self.cheaper]
        for cost in cheaper if parameters is not None else ():
            if cost.parameter not in parameters:  # type: ignore[operator]
                raise ValueError(
                    f"--cheaper {cost.parameter!r} is not a parameter of the grid: {list(parameters or [])}"
                )
        return UntilDecided(
            self.objective,
            [Constraint.parse(text) for text in self.constraints],
            cheaper or None,
            min_repeat=max(2, min(5, self.repeat)),
        )


def _options(plan: Plan, name: str, parameters: Sequence[str]) -> dict[str, Any]:
    rule = plan.rule(parameters) if plan.adaptive and plan.repeat >= 2 else None
    return {
        "repeat": plan.repeat,
        "warmup": 1,
        "progress": False,
        "name": name,
        "adaptive": rule,
        "order": plan.order,
    }


async def sweep_target(
    fn: Callable[..., Any], grid: Mapping[str, Sequence[Any]], *, plan: Plan | None = None
) -> pd.DataFrame:
    """Sweep ``fn`` over ``grid`` inside the running loop (a notebook); see the module
    docstring. The frame's facts hold the decision (``facts_of(frame).decision``)."""
    plan = plan or Plan()
    frame = await asweep(_timed(fn, plan.cooldown), grid, **_options(plan, _name(fn), list(grid)))
    return frame


def decision_of(frame: pd.DataFrame, parameters: Sequence[str], plan: Plan) -> Decision:
    """The decision the sweep's repeats followed, or (fixed repeats) the plan's on the frame."""
    facts = facts_of(frame)
    if facts is not None and facts.decision is not None:
        return facts.decision
    return plan.rule(parameters).decide(frame, parameters)


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
    failures: list[str] = dataclasses.field(default_factory=list)  # a line per failing point


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
    plan: Plan | None = None,
    out: str | os.PathLike[str] | None = None,
    reports_dir: str | os.PathLike[str] = "reports",
    loop: Literal["asyncio", "uvloop"] = "asyncio",
    force: bool = False,
    cluster: Cluster | None = None,
) -> SweepRun:
    """``perflab sweep``: sweep the target and write a report folder like a notebook
    run's (results.json/csv, summary.csv, figures, summary.json, index.html), deciding as
    ``plan`` says (default: the cheapest setting within 5% of the fastest). With
    ``cluster`` every run is a task on it (:mod:`perflab.measure.cluster`). Ctrl-C saves the runs
    that finished (results.json/csv) and raises :class:`~perflab.measure.sweep.SweepInterrupted`;
    a run that fails is recorded (``SweepRun.failures``); :class:`TargetFailed` if all did."""

    plan = plan or Plan()
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be a Plan, got {type(plan).__name__}")
    fn = load_target(spec)
    plan.rule(list(grid))  # a cost order naming no parameter fails before any run
    if loop not in ("asyncio", "uvloop"):
        raise ValueError(f"loop must be 'asyncio' or 'uvloop', got {loop!r}")
    if cluster is not None and loop != "asyncio":
        raise ValueError("--loop uvloop runs on this machine only: a cluster's workers use asyncio")
    name = _name(fn)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    directory = Path(out) if out is not None else Path(reports_dir) / f"{stamp}-sweep-{name}"
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"--out {directory} is a file, not a folder")
    if directory.exists() and any(directory.iterdir()) and not force:
        raise FileExistsError(f"{directory} exists and is not empty: pass --force to write into it")
    saved = directory / name
    log = _open_run_log(saved)  # before the first run: a folder we cannot write fails now
    started = time.perf_counter()
    timed = _timed(fn, plan.cooldown)
    options = _options(plan, name, list(grid))
    guard = _CtrlC()
    frame: pd.DataFrame | None = None
    try:
        try:
            frame = _sweep_frame(timed, grid, options | {"on_run": log.write}, loop, cluster)
        finally:
            guard.install()  # from here on a second Ctrl-C is held back: the save must finish
            log.close()
        facts = facts_of(frame)
        failed = [dict(run) for run in facts.failed] if facts is not None else []
        if frame.empty:
            first: dict[str, Any] = failed[0] if failed else {"point": {}, "error": "no run finished"}
            raise TargetFailed(
                f"{spec} failed in every run ({len(failed)}), nothing was measured; first, at "
                f"{_point_text(first['point'])}: {first['error']} (every run is in {log.path})"
            )
        metadata = collect_metadata()  # once for the run: its results files and run.json
        with guard.held():  # the measurements first: even a first Ctrl-C waits for them
            _save_results(frame, saved, name, list(grid), {"target": spec, "failed_runs": failed}, metadata)
        return _publish_sweep(frame, directory, name, spec, grid, loop, started, failed, metadata, plan)
    except KeyboardInterrupt as stop:  # SweepInterrupted too
        guard.install()
        guard.interrupted = True
        if isinstance(stop, SweepInterrupted):
            frame = stop.frame
        elif frame is None:  # between the last run and the frame: the log has them
            frame = _frame_from_log(log.path)
        if len(frame):  # where a finished sweep puts them, so compare and history read them
            _save_results(frame, saved, name, list(grid), {"target": spec, "interrupted": True})
        raise SweepInterrupted(frame, saved) from None
    finally:
        guard.restore()


class _CtrlC:
    """SIGINT while a sweep ends: the first Ctrl-C raises KeyboardInterrupt, as usual, except
    inside :meth:`held`, where it waits for the block to finish; once one has been raised,
    further ones are held back, so that a second Ctrl-C cannot cut the save short. Main
    thread only; elsewhere it does nothing."""

    def __init__(self) -> None:
        self.interrupted = False
        self._holding = False
        self._pending = False
        self._previous: Any = None

    def install(self) -> None:
        if self._previous is None and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Run the block whole; a Ctrl-C that came meanwhile is raised after it."""
        self.install()
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._pending and not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt

    def _handle(self, signum: int, frame: Any) -> None:
        if self.interrupted or self._holding:
            self._pending = True  # held: a save is under way, or the Ctrl-C before is handled
            return
        self.interrupted = True
        raise KeyboardInterrupt

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _open_run_log(folder: Path) -> Any:
    """The run log, every run appended (and flushed) as it lands."""
    from perflab.jsonl.writers import BufferedWriter

    try:
        folder.mkdir(parents=True, exist_ok=True)
        return BufferedWriter(folder / "runs.jsonl", max_writes=1, nan_as_null=True)
    except OSError as error:
        raise OSError(f"--out {folder.parent}: cannot write there: {error.strerror or error}") from None


def _frame_from_log(path: Path) -> pd.DataFrame:
    """The measured runs of a run log, as the sweep's frame."""
    import pandas as pd

    from perflab.jsonl.readers import read_jsonl

    rows = [row for row in read_jsonl(path, recover=True) if "error" not in row]
    return pd.DataFrame(rows)


def _point_text(point: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in point.items()) or "(no point)"


def failure_lines(failed: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per failing point: its error and how many of its runs failed so."""
    by_point: dict[str, list[str]] = {}
    for run in failed:
        by_point.setdefault(_point_text(run["point"]), []).append(run["error"])
    return [
        f"{point}: {errors[0]}" + (f" ({len(errors)} runs)" if len(errors) > 1 else "")
        for point, errors in by_point.items()
    ]


def _save_results(
    frame: pd.DataFrame,
    folder: Path,
    name: str,
    parameters: list[str],
    extra: dict[str, Any],
    metadata: dict[str, Any] | None = None,
) -> None:
    from perflab.workbench.runs import write_results

    fields: dict[str, Any] = {"extra": extra} | ({"metadata": metadata} if metadata else {})
    write_results(folder, Results.from_frame(frame, name, parameters, **fields), summary=False)


def _publish_sweep(
    frame: pd.DataFrame,
    directory: Path,
    name: str,
    spec: str,
    grid: Mapping[str, Sequence[Any]],
    loop: str,
    started: float,
    failed: list[dict[str, Any]],
    metadata: dict[str, Any],
    plan: Plan,
) -> SweepRun:
    from perflab.workbench.notebook import publish
    from perflab.workbench.plots import plot_user_sweep
    from perflab.workbench.report import NotebookRun, ReportRun, write_index, write_run_json

    parameters = list(grid)
    facts = facts_of(frame)
    repeats = dict(facts.repeats) if facts is not None and facts.repeats is not None else None
    summary = summarize(frame, parameters)
    hosts = HOST_COLUMN in frame.columns and frame[HOST_COLUMN].nunique() > 1
    decision = None if hosts else decision_of(frame, parameters, plan)
    finding = findings.user_sweep(summary, frame, parameters, target=spec, decision=decision)
    if failed:  # a failing point is not in the ranking: say so where the finding is read
        lines = "; ".join(failure_lines(failed))
        finding = dataclasses.replace(
            finding, conclusion=f"{finding.conclusion} **Failed runs** (not ranked): {lines}."
        )
    chosen = dict(decision.chosen) if decision is not None and decision.chosen is not None else None
    figure = plot_user_sweep(summary, parameters, chosen=chosen)
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
            "failed_runs": failed,
            "plan": dataclasses.asdict(plan),
            "decision": None if decision is None else decision.as_dict(),
        },
        metrics=user_metrics(frame, parameters),
        summary=summary,
        metadata=metadata,
    )
    summary_json = finding.as_dict() | {"figures": ["figures/sweep.png"]}
    run = NotebookRun(name, "ok", time.perf_counter() - started, {"target": spec, **grid}, None, summary_json)
    report = ReportRun(directory, "sweep", [run])
    write_run_json(report, metadata, run.seconds)
    write_index(report, metadata)
    return SweepRun(directory, report.index, frame, finding, failure_lines(failed))
