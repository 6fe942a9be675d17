"""The adaptive-concurrency bake-off: static pools against adaptive limits (AIMD, Gradient2,
Vegas, AIMD with client-side throttling) on a simulated server whose limits move through
phases (its concurrency cap, its latency, a rate limit switched on).

Every contender runs the same closed-loop client: a TaskPool calling the simulated API as
fast as its limit lets it, a 429 or 503 raised as ``Rejected`` (with the server's
Retry-After), for the same phases, with the same seeds. Runs are on a virtual clock: the
server's latencies are exact and a 24-second scenario takes about a second of CPU, so
contenders differ only by their algorithm, and repeats (different latency seeds) give the
spread. The real-time check is the nginx test, where a reload moves ``limit_conn``.

Per phase and contender: goodput (answered calls/s), the refused share (429 + 503 over all
calls sent), p99 latency of answered calls, and the time to converge: from the phase's
start until goodput over the last ``window_s`` first reaches 90% of the phase's best
static goodput.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from perflab._validate import check_int, check_number
from perflab.aio._virtual_clock import run_on_virtual_clock
from perflab.aio.limits import AIMD, Gradient2, Limit, Rejected, Throttle, Throttled, Vegas, Windowed
from perflab.aio.taskpool import TaskPool
from perflab.workbench.services import Latency, SimulatedAPI

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CONTENDERS",
    "PHASE_METRICS",
    "Phase",
    "Trace",
    "bakeoff",
    "cap_over_time",
    "contender_code",
    "contender_limit",
    "converge_seconds",
    "phase_summary",
    "phase_table",
    "run_contender",
    "whole_runs",
]

#: What each contender name means (``static:N`` is any fixed pool size). ``complexity``
#: is the cost order of the decision: a static pool is the simplest thing to run.
CONTENDERS: dict[str, tuple[int, str]] = {
    "static": (0, "TaskPool(max_concurrent=N)"),
    "aimd": (1, "Windowed(AIMD(), min_window=0.25): x0.9 on a refusal, +1 per window of answers"),
    "aimd+throttle": (2, "the same AIMD with Throttle(k=2): sheds calls locally while most are refused"),
    "gradient2": (3, "Gradient2(drop_backoff=0.9): RTT gradient; x0.9 on a refusal"),
    "vegas": (3, "Vegas(), as published: queue from RTT against the no-load RTT"),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Phase:
    """The server during one phase: ``cap`` calls at once (503 past it), ``latency``, and
    an optional rate limit (429 past ``rate`` calls/s with ``burst``)."""

    seconds: float
    cap: int
    latency: str = "constant:20"
    rate: float | None = None
    burst: float = 1.0

    def __post_init__(self) -> None:
        check_number("seconds", self.seconds, positive=True)
        check_int("cap", self.cap, minimum=1)
        Latency.parse(self.latency)
        if self.rate is not None:
            check_number("rate", self.rate, positive=True)
        check_number("burst", self.burst, minimum=1.0)

    @classmethod
    def parse(cls, text: str) -> Phase:
        """``"seconds=6 cap=24 latency=constant:20 rate=400 burst=1"`` (rate, burst,
        latency optional)."""
        fields: dict[str, Any] = {}
        for token in str(text).split():
            key, sep, value = token.partition("=")
            if not sep or key not in {"seconds", "cap", "latency", "rate", "burst"}:
                raise ValueError(
                    f"phase {text!r}: {token!r} is not one of seconds=, cap=, latency=, rate=, burst="
                )
            fields[key] = value if key == "latency" else (int(value) if key == "cap" else float(value))
        if "seconds" not in fields or "cap" not in fields:
            raise ValueError(f"phase {text!r} needs seconds= and cap=")
        return cls(**fields)

    @property
    def best_goodput(self) -> float:
        """The most answered calls per second this phase allows (cap over mean latency,
        or the rate limit if lower): what a perfect client would get."""
        most = self.cap / (Latency.parse(self.latency).mean_ms / 1000)
        return most if self.rate is None else min(most, self.rate)

    def describe(self) -> str:
        rate = "" if self.rate is None else f", rate {self.rate:g}/s"
        return f"cap {self.cap}, {self.latency.replace('constant:', '')} ms{rate}"


def contender_limit(name: str, seed: int = 0) -> tuple[int | Limit, Throttle | None]:
    """The pool's ``max_concurrent`` and ``throttle`` for a contender name."""
    kind, _, size = name.partition(":")
    if kind == "static":
        try:
            return int(size), None
        except ValueError:
            raise ValueError(f"contender {name!r}: static needs a size, as in 'static:12'") from None
    if kind == "aimd":
        return _windowed_aimd(), None
    if kind == "aimd+throttle":
        return _windowed_aimd(), Throttle(k=2.0, seed=seed)
    if kind == "gradient2":
        # As published it reads no drop; a refusal answered fast even reads as a fast call
        # (Netflix#176), and its limit climbs to its ceiling against a hard cap.
        return Gradient2(drop_backoff=0.9), None
    if kind == "vegas":
        return Vegas(seed=seed), None
    raise ValueError(f"contender {name!r} is not one of static:N, {', '.join(list(CONTENDERS)[1:])}")


def contender_code(name: str) -> str:
    """How to run a contender with perflab (the pool's ``max_concurrent``, and a throttle)."""
    kind, _, size = name.partition(":")
    code = {
        "static": f"TaskPool(max_concurrent={size})",
        "aimd": "TaskPool(max_concurrent=Windowed(AIMD(), min_window=0.25))",
        "aimd+throttle": "TaskPool(max_concurrent=Windowed(AIMD(), min_window=0.25), throttle=Throttle(k=2))",
        "gradient2": "TaskPool(max_concurrent=Gradient2(drop_backoff=0.9))",
        "vegas": "TaskPool(max_concurrent=Vegas())",
    }
    if kind not in code:
        contender_limit(name)  # names what is wrong
    return code[kind]


def _windowed_aimd() -> Windowed:
    # AIMD's +1 per answer doubles the limit every round trip (TCP's slow start) and keeps
    # overshooting a hard cap; +1 per window of a round trip or two is TCP's steady state.
    return Windowed(AIMD(), min_window=0.25, max_window=1.0, samples=10)


@dataclasses.dataclass(frozen=True, slots=True)
class Trace:
    """One run: every call (start, end, status; seconds from the run's start) and the
    pool's limit and calls in flight sampled every ``sample_s``."""

    contender: str
    seed: int
    phases: tuple[Phase, ...]
    start: np.ndarray
    end: np.ndarray
    status: np.ndarray  # 200, 429, 503, or 0 (throttled locally: never sent)
    times: np.ndarray
    limit: np.ndarray
    in_flight: np.ndarray

    @property
    def edges(self) -> list[float]:
        """Each phase's start, and the run's end."""
        return [0.0, *itertools.accumulate(p.seconds for p in self.phases)]


async def _drive(
    contender: str, phases: Sequence[Phase], seed: int, sample_s: float, refusal_ms: float
) -> Trace:
    loop = asyncio.get_running_loop()
    first = phases[0]
    api = SimulatedAPI(
        latency=first.latency,
        max_concurrency=first.cap,
        rate_limit=first.rate,
        rate_burst=first.burst,
        reject_ms=refusal_ms,
        seed=seed,
    )
    limit, throttle = contender_limit(contender, seed)
    # The throttle is applied here rather than by the pool (TaskPool(throttle=...)), so
    # that a call it sheds costs the client a refusal's round trip: a closed-loop client
    # whose local refusals cost nothing would only spin through them.
    pool = TaskPool(max_concurrent=limit, timeout_seconds=5.0)
    began = loop.time()
    edges = [began + t for t in itertools.accumulate(p.seconds for p in phases)]
    ends = edges[-1]
    starts: list[float] = []
    stops: list[float] = []
    statuses: list[int] = []

    async def call(_: int) -> None:
        sent = loop.time()
        if throttle is not None and not throttle.allow(sent):
            await asyncio.sleep(refusal_ms / 1000)
            starts.append(sent - began)
            stops.append(loop.time() - began)
            statuses.append(0)
            raise Throttled(throttle.probability(sent))
        response = await api.call()
        starts.append(sent - began)
        stops.append(loop.time() - began)
        statuses.append(response.status)
        refused = response.status in (429, 503)
        if throttle is not None:
            throttle.record(loop.time(), accepted=not refused)
        if refused:
            raise Rejected(str(response.status), retry_after=response.retry_after)

    def until_end() -> Iterator[int]:
        for i in itertools.count():
            if loop.time() >= ends:
                return
            yield i

    async def switch_phases() -> None:
        for at, phase in zip(edges[:-1], phases[1:], strict=True):
            await asyncio.sleep(at - loop.time())
            api.max_concurrency = phase.cap
            api.rate_limit = phase.rate
            api.rate_burst = phase.burst
            api.latency = Latency.parse(phase.latency)
            api._draw = api.latency.sampler(seed + len(statuses))

    samples: list[tuple[float, int, int]] = []

    async def sample() -> None:
        while loop.time() < ends:
            stats = pool.stats
            samples.append((loop.time() - began, stats.limit, stats.in_flight))
            await asyncio.sleep(sample_s)

    switcher = asyncio.ensure_future(switch_phases())
    sampler = asyncio.ensure_future(sample())
    try:
        await pool.map(call, until_end(), return_exceptions=True)
    finally:
        switcher.cancel()
        sampler.cancel()
    times, limits, in_flight = (np.array(column) for column in zip(*samples, strict=True))
    return Trace(
        contender,
        seed,
        tuple(phases),
        np.array(starts),
        np.array(stops),
        np.array(statuses),
        times,
        limits,
        in_flight,
    )


def run_contender(
    contender: str,
    phases: Sequence[Phase | str],
    seed: int = 0,
    *,
    refusal_ms: float = 5.0,
    sample_s: float = 0.05,
) -> Trace:
    """Run one contender through ``phases`` on a virtual clock (blocking; in this thread,
    which must not be running an event loop). A refusal costs ``refusal_ms``: the round
    trip to a server that answers at once (a client that re-sends at once to a refusing
    server spends its time on refusals)."""
    parsed = [Phase.parse(p) if isinstance(p, str) else p for p in phases]
    if not parsed:
        raise ValueError("phases must name at least one phase")
    contender_limit(contender)  # a bad name fails before any work
    check_number("refusal_ms", refusal_ms, positive=True)
    check_number("sample_s", sample_s, positive=True)
    return run_on_virtual_clock(lambda: _drive(contender, parsed, seed, sample_s, refusal_ms))


async def bakeoff(
    contenders: Sequence[str],
    phases: Sequence[Phase | str],
    *,
    repeat: int = 3,
    seed: int = 0,
    refusal_ms: float = 5.0,
    progress: Callable[[str], None] | None = None,
) -> list[Trace]:
    """Every contender through ``phases``, ``repeat`` times each (seeds ``seed``,
    ``seed + 1``, ...; contenders interleaved). Awaitable from a notebook: the runs go to a
    worker thread with its own virtual-clock loop."""
    parsed = [Phase.parse(p) if isinstance(p, str) else p for p in phases]
    if not contenders:
        raise ValueError("contenders must name at least one contender")
    for name in contenders:
        contender_limit(name)
    check_int("repeat", repeat, minimum=1)
    traces = []
    for r in range(repeat):
        for name in contenders:
            if progress is not None:
                progress(f"{name} #{r + 1}")
            run = functools.partial(run_contender, name, parsed, seed + r, refusal_ms=refusal_ms)
            traces.append(await asyncio.to_thread(run))
    return traces


def _phase_rows(trace: Trace) -> Iterator[dict[str, Any]]:
    """The whole run (phase 0), then each phase."""
    edges = trace.edges
    spans = [(0, 0.0, math.inf, edges[-1])]
    spans += [(i + 1, low, high, high - low) for i, (low, high) in enumerate(itertools.pairwise(edges))]
    for phase, low, high, seconds in spans:
        ended = (trace.end >= low) & (trace.end < high)
        sent = ended & (trace.status != 0)
        refused = ended & ((trace.status == 429) | (trace.status == 503))
        # Latency by the phase a call was sent in (a slow call ending after a change
        # belongs to the server that answered it).
        began = (trace.start >= low) & (trace.start < high) & (trace.status == 200)
        latency = (trace.end[began] - trace.start[began]) * 1000
        yield {
            "contender": trace.contender,
            "seed": trace.seed,
            "phase": phase,
            "goodput": (ended & (trace.status == 200)).sum() / seconds,
            "refused_share": refused.sum() / max(1, sent.sum()),
            "throttled_share": (ended & (trace.status == 0)).sum() / max(1, ended.sum()),
            "p99_ms": float(np.percentile(latency, 99)) if latency.size else math.nan,
        }


def converge_seconds(trace: Trace, phase: int, target: float, *, window_s: float = 0.5) -> float:
    """Seconds from phase ``phase``'s start (1-based) until goodput over the last
    ``window_s`` first reaches ``target`` calls/s; nan if it never does in the phase."""
    low, high = trace.edges[phase - 1], trace.edges[phase]
    ok = np.sort(trace.end[(trace.status == 200) & (trace.end >= low) & (trace.end < high)])
    step = window_s / 5
    for t in np.arange(low + window_s, high + step / 2, step):
        count = np.searchsorted(ok, t) - np.searchsorted(ok, t - window_s)
        if count / window_s >= target:
            return float(t - low)
    return math.nan


def phase_table(traces: Sequence[Trace], *, window_s: float = 0.5) -> pd.DataFrame:
    """One row per run and phase (phase 0: the whole run): goodput, refused share, p99,
    and the time to converge to 90% of the phase's best static goodput (median over
    repeats of the best static contender). ``complexity`` ranks contenders for the
    decision (static first)."""
    import pandas as pd

    rows = [row for trace in traces for row in _phase_rows(trace)]
    frame = pd.DataFrame(rows)
    static = frame[frame["contender"].str.startswith("static:")]
    best_static = (
        static.groupby(["phase", "contender"])["goodput"].median().groupby("phase").max()
        if not static.empty
        else frame.groupby("phase")["goodput"].max() * 0 + math.nan
    )
    by_run = {(t.contender, t.seed): t for t in traces}
    frame["converge_s"] = [
        converge_seconds(by_run[(c, s)], int(p), 0.9 * float(best_static[p]), window_s=window_s)
        if p != 0 and not math.isnan(float(best_static[p]))
        else math.nan  # the whole run converges to nothing in particular
        for c, s, p in zip(frame["contender"], frame["seed"], frame["phase"], strict=True)
    ]
    frame["complexity"] = [CONTENDERS[c.partition(":")[0]][0] for c in frame["contender"]]
    return frame.sort_values(["phase", "contender", "seed"], kind="stable").reset_index(drop=True)


#: The per-phase metrics, in the order the table shows them.
PHASE_METRICS = ("goodput", "refused_share", "p99_ms", "converge_s")


def phase_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Phases x contenders: each metric as ``median [min-max]`` over the repeats (``never``
    where a contender did not converge in some repeat)."""
    import pandas as pd

    rows = []
    for (phase, contender), part in table.groupby(["phase", "contender"], sort=True):
        label = "overall" if phase == 0 else f"{phase}"
        row: dict[str, Any] = {"phase": label, "contender": contender}
        for metric in PHASE_METRICS:
            values = part[metric].to_numpy(dtype=float)
            if metric == "converge_s" and phase == 0:
                row[metric] = ""
            elif np.isnan(values).all():
                row[metric] = "never"
            else:
                low, mid, high = np.nanmin(values), np.nanmedian(values), np.nanmax(values)
                never = int(np.isnan(values).sum())
                digits = 3 if metric == "refused_share" else 1
                text = f"{mid:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"
                row[metric] = text + (f", never in {never}" if never else "")
        rows.append(row)
    return pd.DataFrame(rows).set_index(["phase", "contender"])


def cap_over_time(phases: Sequence[Phase]) -> tuple[list[float], list[int]]:
    """The server's cap as a step line: times (s) and caps, for plotting."""
    times, caps, t = [], [], 0.0
    for phase in phases:
        times += [t, t + phase.seconds]
        caps += [phase.cap, phase.cap]
        t += phase.seconds
    return times, caps


def whole_runs(table: pd.DataFrame) -> pd.DataFrame:
    """The whole-run rows of :func:`phase_table` as a tidy sweep over ``contender`` (one
    row per run, ``repeat`` numbered per contender): what the decision reads."""
    rows = table[table["phase"] == 0].drop(columns=["phase", "converge_s"])
    rows = rows.rename(columns={"seed": "repeat"})
    rows["repeat"] = rows.groupby("contender").cumcount()
    return rows.reset_index(drop=True)
