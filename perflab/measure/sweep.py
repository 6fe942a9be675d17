"""Parameter sweeps: every point of a grid, repeated, as a tidy DataFrame.

``grid`` maps parameter names to lists of values (strings or numbers), asv-style.
``fn(**point)`` measures one point and returns a mapping of metric name to number (or an
awaitable of one). Repeats are interleaved by default (repeat 0 of every point, then
repeat 1, ...), so a drift in the machine's state spreads over all points instead of
biasing the last ones. ``seed_param="seed"`` passes the repeat number to ``fn`` as
``seed``, so a simulated workload draws new random numbers each repeat but the same ones
for every point of a repeat (common random numbers: differences between points are the
settings', not the draws'). The result has one row per (point, repeat): parameter
columns, ``repeat``, then metric columns; its ``facts`` (:class:`SweepFacts`, see
:func:`facts_of`) name which is which.

``cluster=`` runs every run as a task on a Dask cluster (:mod:`perflab.measure.cluster`): the
frame then has a ``host`` column after ``repeat`` (the fingerprint of the host that
measured each sample) and the same rows, in the same order, as a local sweep. Ctrl-C
raises :class:`SweepInterrupted` with the frame of the runs that finished, locally or not.

A run that fails need not lose the sweep: ``errors="record"`` records the exception of
``fn`` (point, repeat, error) in ``facts_of(frame).failed`` and goes on, and
``fn`` may itself return :class:`RunFailed` (what ``perflab sweep`` does, on a cluster
too). ``on_run`` is called with every run as it lands (a measured row, or a failed run
with its ``error``), so a caller can save incrementally: a crash at any moment then
keeps what finished. A metric must be a finite number (or None, or NaN: not measured):
an infinity or an int too large for a float is refused, naming the point and metric.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import math
import statistics
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from numbers import Real
from typing import TYPE_CHECKING, Any, Literal

from perflab._validate import check_int, check_number, grid_points
from perflab.measure.decision import Decision, UntilDecided
from perflab.measure.results import HOST_COLUMN
from perflab.measure.stats import median_ci

if TYPE_CHECKING:
    import pandas as pd

    from perflab.measure.cluster import Cluster, Run

__all__ = [
    "Adaptive",
    "RunFailed",
    "SweepFacts",
    "SweepInterrupted",
    "asweep",
    "facts_of",
    "grid_points",
    "sweep",
]

Metrics = Mapping[str, float | int | bool | None]


@dataclasses.dataclass(frozen=True, slots=True)
class Adaptive:
    """Stop repeating a point once its ``metric`` is known well enough for the decision.

    Every point first gets ``min_repeat`` repeats (interleaved). Then, round by round, a
    point gets one more repeat only while it is unsettled: the 95% CI of its median is
    wider than ``precision`` (relative half-width) *and* overlaps the CI of another point,
    so its rank is still open. Points that are clearly apart stop early; close ones get
    the repeats, up to the sweep's ``repeat``. ``facts_of(frame).repeats`` says how many
    each point took."""

    metric: str
    min_repeat: int = 3
    precision: float = 0.02

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise TypeError(f"metric must be a metric name, got {self.metric!r}")
        check_int("min_repeat", self.min_repeat, minimum=2)
        check_number("precision", self.precision, positive=True)

    def unsettled(self, samples: Sequence[Sequence[float]]) -> list[bool]:
        """For each point's samples so far, whether it needs another repeat."""
        cis = [median_ci(values) if len(values) else (-math.inf, math.inf) for values in samples]
        open_ = []
        for i, (values, (low, high)) in enumerate(zip(samples, cis, strict=True)):
            middle = statistics.median(values) if values else 0.0
            tight = bool(values) and middle != 0 and (high - low) / 2 <= self.precision * abs(middle)
            overlaps = any(
                low <= other_high and other_low <= high
                for j, (other_low, other_high) in enumerate(cis)
                if j != i
            )
            open_.append(not tight and overlaps)
        return open_


@dataclasses.dataclass(frozen=True, slots=True)
class RunFailed:
    """A run that failed: returned by ``fn`` (or made of its exception by
    ``errors="record"``), it is recorded with its point and the sweep goes on."""

    error: str

    @classmethod
    def of(cls, exc: BaseException) -> RunFailed:
        return cls(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: ``frame`` holds every run that finished (the others were
    cancelled), so nothing measured is lost; ``saved_to`` is where a caller saved it."""

    def __init__(self, frame: pd.DataFrame, saved_to: Any = None) -> None:
        super().__init__(f"sweep interrupted after {len(frame)} measured runs")
        self.frame = frame
        self.saved_to = saved_to


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
        self.repeats: dict[str, int] | None = None  # per point, when repeats were adaptive
        self.repeat_limit = 0  # the most an adaptive point could take
        self.hosts: dict[str, str] = {}  # fingerprint -> label, when run on a cluster
        self.missing: list[dict[str, Any]] = []  # runs lost to dying workers
        self.failed: list[dict[str, Any]] = []  # runs whose fn failed (RunFailed)
        self.settle: Callable[[], None] | None = None  # waits for runs still out on a cluster
        self.on_run: Callable[[dict[str, Any]], None] | None = None
        self.decisions: dict[str, Decision] = {}  # the last ones, when repeats follow decisions
        self.decided_on = 0  # how many rows they were made on
        self.required: tuple[str, ...] = ()  # metrics those decisions need

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
            if value is not None:
                _check_finite(point, name, value)
        names = list(metrics)
        if self.metrics is None:
            lacking = [name for name in self.required if name not in names]
            if lacking:
                raise ValueError(
                    f"the decision needs metric {lacking[0]!r}, which fn({dict(point)}) does not "
                    f"return (it returns {names})"
                )
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

    def samples(self, points: list[dict[str, Any]], metric: str) -> list[list[float]]:
        """Each point's values of ``metric`` so far (None and NaN left out)."""
        if self.settle is not None:
            self.settle()
        if self.metrics is not None and metric not in self.metrics:
            raise ValueError(f"adaptive metric {metric!r} is not one fn returns: {self.metrics}")
        by_point: dict[str, list[float]] = {_key(p): [] for p in points}
        for row in self.rows:
            value = row.get(metric)
            if value is not None and math.isfinite(value):
                by_point[_key({k: row[k] for k in points[0]})].append(float(value))
        return [by_point[_key(p)] for p in points]

    def add(self, point: dict[str, Any], repeat: int | None, outcome: Any, host: str | None = None) -> None:
        if isinstance(outcome, RunFailed):
            self.failed.append({"point": dict(point), "repeat": repeat, "error": outcome.error})
            if self.on_run is not None:
                self.on_run({**point, "repeat": repeat, "error": outcome.error})
            return
        metrics = self.check(point, outcome)
        if repeat is not None:
            where = {HOST_COLUMN: host} if host is not None else {}
            row = {**point, "repeat": repeat, **where, **metrics}
            self.rows.append(row)
            if self.on_run is not None:
                self.on_run(row)


def _check_finite(point: Mapping[str, Any], name: str, value: Any) -> None:
    """A metric JSON can hold: an infinity would be saved as null (not measured), and an
    int past a float's range cannot be summarized."""
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(
            f"fn({dict(point)}) returned {name}={value!r:.40}...: too large for a float"
        ) from None
    if math.isinf(number):
        raise ValueError(
            f"fn({dict(point)}) returned {name}={number}: an infinity is not a measurement "
            "(return None, or NaN, for a value that could not be measured)"
        )


def _adaptive_runs(
    points: list[dict[str, Any]],
    rows: _Rows,
    repeat: int,
    warmup: int,
    adaptive: Adaptive | UntilDecided,
    grouped: bool,
) -> Iterator[tuple[dict[str, Any], int | None]]:
    """Warm-ups, ``min_repeat`` rounds, then rounds of the points still open. Interleaved,
    a round is one repeat of each; ``grouped``, a point's repeats of a round run back to
    back (``min_repeat`` of them first, then two at a time)."""
    for point in points:
        for _ in range(warmup):
            yield point, None
    taken = [0] * len(points)
    active = list(range(len(points)))
    block = adaptive.min_repeat if grouped else 1
    while active:
        for i in active:
            for _ in range(min(block, repeat - taken[i])):
                yield points[i], taken[i]
                taken[i] += 1
        if grouped:
            block = 2
        if min(taken) >= adaptive.min_repeat:
            active = _still_open(points, rows, adaptive)
        active = [i for i in active if taken[i] < repeat]
    rows.repeats = {_key(point): n for point, n in zip(points, taken, strict=True)}
    rows.repeat_limit = repeat
    if isinstance(adaptive, UntilDecided):  # on every run, the last round's too
        _decide(points, rows, adaptive)


def _decide(points: list[dict[str, Any]], rows: _Rows, adaptive: UntilDecided) -> None:
    """The decisions on every row landed so far (made again only when rows were added)."""
    import pandas as pd

    if rows.settle is not None:
        rows.settle()
    if rows.rows and rows.decided_on != len(rows.rows):
        rows.decisions = adaptive.decisions(pd.DataFrame(rows.rows), list(points[0]))
        rows.decided_on = len(rows.rows)


def _still_open(points: list[dict[str, Any]], rows: _Rows, adaptive: Adaptive | UntilDecided) -> list[int]:
    """The points that get another repeat: unsettled ranks, or the decision's open points."""
    if isinstance(adaptive, Adaptive):
        samples = rows.samples(points, adaptive.metric)
        return [i for i, more in enumerate(adaptive.unsettled(samples)) if more]
    _decide(points, rows, adaptive)
    if not rows.rows:
        return list(range(len(points)))
    wanted = [
        {**decision.scenario, **point}
        for decision in rows.decisions.values()
        if adaptive.followed(decision)
        for point in decision.open_points()
    ]
    return [i for i, point in enumerate(points) if point in wanted]


def _schedule(
    points: list[dict[str, Any]], runs: Runs, rows: _Rows, options: _Options
) -> Iterator[tuple[dict[str, Any], int | None]]:
    repeat, adaptive = options.repeat, options.adaptive
    if adaptive is None:
        return iter(runs)
    if not isinstance(adaptive, Adaptive | UntilDecided):
        raise TypeError(
            f"adaptive must be an Adaptive, an UntilDecided or None, got {type(adaptive).__name__}"
        )
    if adaptive.min_repeat > repeat:
        raise ValueError(f"adaptive.min_repeat ({adaptive.min_repeat}) must be <= repeat ({repeat})")
    if isinstance(adaptive, UntilDecided):
        rows.required = tuple(m for m in adaptive.metrics() if m not in points[0])
    return _adaptive_runs(points, rows, repeat, options.warmup, adaptive, options.order == "grouped")


def _key(point: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in point.items())


@dataclasses.dataclass(frozen=True, slots=True)
class _Options:
    """How a sweep runs: the keyword arguments :func:`sweep` and :func:`asweep` share."""

    repeat: int
    warmup: int
    progress: bool
    order: str
    name: str
    seed_param: str | None
    adaptive: Adaptive | UntilDecided | None
    errors: str
    on_run: Callable[[dict[str, Any]], None] | None


Runs = list[tuple[dict[str, Any], int | None]]


def _plan(fn: Any, grid: Mapping[str, Sequence[Any]], options: _Options) -> tuple[list[dict[str, Any]], Runs]:
    """Validate, then list every run: the warm-ups (repeat None), then the measured runs."""
    repeat, warmup, order, errors = options.repeat, options.warmup, options.order, options.errors
    if errors not in ("raise", "record"):
        raise ValueError(f"errors must be 'raise' or 'record', got {errors!r}")
    import pandas  # noqa: F401  (now, not after the last run: a Ctrl-C in the import would lose them)

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


@dataclasses.dataclass(frozen=True, slots=True)
class SweepFacts:
    """What a sweep's frame cannot say by its columns.

    ``parameters`` and ``metrics`` name the columns; ``hosts`` maps a host fingerprint to
    its label and ``missing`` lists the runs lost to dying workers (both on a cluster
    only); ``failed`` lists the runs whose ``fn`` failed (point, repeat, error);
    ``repeats`` is how many repeats each point took (keyed by ``"name=value, ..."``) when
    they were adaptive, out of at most ``repeat_limit``; ``decisions`` are the decisions
    the repeats followed (``adaptive=UntilDecided(...)``, one per ``by`` scenario, keyed
    ``"latency=x"``; ``""`` without), made on every run."""

    name: str
    parameters: tuple[str, ...]
    metrics: tuple[str, ...]
    hosts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    missing: tuple[Mapping[str, Any], ...] = ()
    failed: tuple[Mapping[str, Any], ...] = ()
    repeats: Mapping[str, int] | None = None
    repeat_limit: int | None = None
    decisions: Mapping[str, Decision] = dataclasses.field(default_factory=dict)

    @property
    def decision(self) -> Decision | None:
        """The decision the repeats followed, when there was one (no ``by`` scenarios)."""
        return self.decisions[""] if list(self.decisions) == [""] else None

    @property
    def adaptive_saving(self) -> tuple[int, int] | None:
        """(runs taken, runs a fixed count would take) when repeats were adaptive."""
        if not self.repeats or self.repeat_limit is None:
            return None
        return sum(self.repeats.values()), self.repeat_limit * len(self.repeats)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "parameters": list(self.parameters),
            "metrics": list(self.metrics),
            "hosts": dict(self.hosts),
            "missing": [dict(run) for run in self.missing],
            "failed": [dict(run) for run in self.failed],
            "repeats": None if self.repeats is None else dict(self.repeats),
            "repeat_limit": self.repeat_limit,
            "decisions": {key: decision.as_dict() for key, decision in self.decisions.items()},
        }


def facts_of(frame: pd.DataFrame) -> SweepFacts | None:
    """The facts of a frame :func:`sweep` returned; None for any other frame (one built
    by hand, or derived from a sweep's by filtering, which would make its facts wrong)."""
    facts = getattr(frame, "facts", None)  # a column named "facts" is not them
    return facts if isinstance(facts, SweepFacts) else None


def _frame(points: list[dict[str, Any]], rows: _Rows, name: str) -> pd.DataFrame:
    from perflab.measure._sweep_frame import SweepFrame

    parameters = list(points[0])
    metrics = rows.metrics or []  # every point returned these (checked as they came)
    host = [HOST_COLUMN] if rows.hosts else []
    frame = SweepFrame(rows.rows, columns=[*parameters, "repeat", *host, *metrics])
    frame.facts = SweepFacts(
        name=name,
        parameters=tuple(parameters),
        metrics=tuple(metrics),
        hosts=dict(rows.hosts),
        missing=tuple(rows.missing),
        failed=tuple(rows.failed),
        repeats=rows.repeats,
        repeat_limit=rows.repeat_limit if rows.repeats is not None else None,
        decisions=dict(rows.decisions),
    )
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
    adaptive: Adaptive | UntilDecided | None = None,
    cluster: Cluster | None = None,
    errors: Literal["raise", "record"] = "raise",
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Measure every point of ``grid`` ``repeat`` times (after ``warmup`` discarded runs
    per point); with ``adaptive``, at most ``repeat`` times, stopping a point once it is
    settled (see :class:`Adaptive`). An async ``fn`` works when no loop is running; inside
    one (a notebook) use ``await asweep(...)``. With ``cluster``, every run is a task on
    that Dask cluster (see :mod:`perflab.measure.cluster`). ``errors`` and ``on_run``: see the
    module docstring."""
    options = _Options(repeat, warmup, progress, order, name, seed_param, adaptive, errors, on_run)
    points, runs = _plan(fn, grid, options)
    if cluster is not None:
        return _cluster_sweep(fn, points, runs, cluster, options)
    if inspect.iscoroutinefunction(fn):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(_run_async(fn, points, runs, options))
        raise RuntimeError("sweep() of an async fn inside a running loop: use 'await asweep(...)'")
    rows = _Rows(points, seed_param)
    rows.on_run = on_run
    with _progress(len(runs), progress, name) as bar:
        try:
            for point, r in _schedule(points, runs, rows, options):
                try:
                    rows.add(point, r, fn(**_call_args(point, seed_param, r)))
                except Exception as exc:
                    if errors == "raise":
                        raise
                    rows.add(point, r, RunFailed.of(exc))
                bar.update()
        except KeyboardInterrupt:
            raise SweepInterrupted(_frame(points, rows, name)) from None
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
    adaptive: Adaptive | UntilDecided | None = None,
    cluster: Cluster | None = None,
    errors: Literal["raise", "record"] = "raise",
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """:func:`sweep` inside a running loop; ``fn`` may return metrics or an awaitable.
    With ``cluster`` the sweep waits in a thread, so the loop keeps running."""
    options = _Options(repeat, warmup, progress, order, name, seed_param, adaptive, errors, on_run)
    points, runs = _plan(fn, grid, options)
    if cluster is not None:
        return await asyncio.to_thread(_cluster_sweep, fn, points, runs, cluster, options)
    return await _run_async(fn, points, runs, options)


async def _run_async(
    fn: Callable[..., Any], points: list[dict[str, Any]], runs: Runs, options: _Options
) -> pd.DataFrame:
    """The runs on the running loop; ``fn`` may return metrics or an awaitable."""
    rows = _Rows(points, options.seed_param)
    rows.on_run = options.on_run
    with _progress(len(runs), options.progress, options.name) as bar:
        try:
            for point, r in _schedule(points, runs, rows, options):
                try:
                    outcome = fn(**_call_args(point, options.seed_param, r))
                    if inspect.isawaitable(outcome):
                        outcome = await outcome
                    rows.add(point, r, outcome)
                except Exception as exc:
                    if options.errors == "raise":
                        raise
                    rows.add(point, r, RunFailed.of(exc))
                bar.update()
        except (KeyboardInterrupt, asyncio.CancelledError):
            raise SweepInterrupted(_frame(points, rows, options.name)) from None
    return _frame(points, rows, options.name)


def _cluster_sweep(
    fn: Callable[..., Any], points: list[dict[str, Any]], runs: Runs, cluster: Cluster, options: _Options
) -> pd.DataFrame:
    """The runs as tasks on ``cluster``; rows kept in the order a local sweep makes them."""
    from perflab.measure.cluster import Cluster, Run

    if not isinstance(cluster, Cluster):
        raise TypeError(f"cluster must be a perflab.measure.cluster.Cluster, got {type(cluster).__name__}")
    if options.errors != "raise":
        raise ValueError("errors='record' runs locally; on a cluster, have fn return RunFailed instead")
    name, seed_param = options.name, options.seed_param
    rows = _Rows(points, seed_param)
    rows.on_run = options.on_run
    index = {_key(point): i for i, point in enumerate(points)}
    finished: dict[int, tuple[Run, Any, str]] = {}
    next_row = [0]
    submitted: list[Run] = []

    def tasks() -> Iterator[Run]:
        for point, r in _schedule(points, runs, rows, options):
            kwargs = _call_args(point, seed_param, r)
            run = Run(fn, kwargs, point, r, index[_key(point)], len(submitted), name)
            submitted.append(run)
            yield run

    def flush(final: bool = False) -> None:
        """Add the finished rows in submission order, past runs lost to dying workers (and
        when ``final``, past runs that were cancelled)."""
        while next_row[0] < len(submitted):
            if next_row[0] in finished:
                ready, value, where = finished.pop(next_row[0])
                rows.add(ready.point, ready.repeat, value, where)
            elif submitted[next_row[0]].error is None and not final:
                return  # still running
            next_row[0] += 1

    def done(run: Run, outcome: Any) -> None:
        result, host, label = outcome
        rows.hosts.setdefault(host, label)
        finished[run.sequence] = (run, result, host)
        flush()
        bar.update()

    def settle() -> None:
        cluster.settle()
        flush()

    started = cluster.started
    if not started:
        cluster.start()
    rows.settle = settle
    try:
        with _progress(len(runs), options.progress, name) as bar:
            try:
                lost = cluster.run(tasks(), done)
            except KeyboardInterrupt:
                flush(final=True)
                raise SweepInterrupted(_frame(points, rows, name)) from None
    finally:
        if not started:
            cluster.close()
    flush()
    for run in lost:
        rows.missing.append({"point": run.point, "repeat": run.repeat, "error": run.error})
    if not rows.hosts:
        raise RuntimeError(f"every run of the sweep on {cluster.address} was lost to dying workers")
    return _frame(points, rows, name)
