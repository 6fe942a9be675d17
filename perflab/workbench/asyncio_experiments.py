"""The experiments the workbench notebooks sweep: each runs one setting of a primitive
against a simulated service for a fixed time and returns its metrics.

Every experiment is time-boxed (``duration_s``): work is started until the deadline, then
what is in flight finishes, and rates are counted over the whole elapsed time. Each has a
``run_*`` form returning the raw observations (for distributions) and an ``*_experiment``
form returning plain metrics (for :func:`perflab.measure.sweep.asweep`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from perflab._validate import check_int, check_number
from perflab.aio.batching import BatchProcessor
from perflab.aio.ratelimit import TokenBucketLimiter
from perflab.aio.taskpool import TaskPool
from perflab.workbench.services import REFUSED, Latency, SimulatedAPI, SimulatedSink

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BASELINES",
    "baseline_experiment",
    "batch_experiment",
    "gather_baseline",
    "loop_lag_while",
    "pacing_for",
    "pool_experiment",
    "rate_ceiling",
    "rate_experiment",
    "run_batches",
    "run_pool",
    "run_rate",
    "sequential_baseline",
    "spacing_for",
    "spacing_sweep",
]


def _until(loop: asyncio.AbstractEventLoop, deadline: float) -> Iterator[int]:
    """0, 1, 2, ... for as long as the deadline has not passed (checked at each pull)."""
    i = 0
    while loop.time() < deadline:
        yield i
        i += 1


def _pct(values: list[float] | np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


# --------------------------------------------------------------------------- task pool


#: Share of a time-boxed run ignored at its start: the pool ramps up for about one
#: latency, and counting that would understate the steady state.
RAMP_SHARE = 0.25


@dataclasses.dataclass(frozen=True, slots=True)
class PoolRun:
    """Every call of a run: when it started and ended (loop time) and its status.

    Rates count the calls that ended inside the measurement window, from
    ``RAMP_SHARE`` of the run to its deadline: the ramp-up and the drain of calls still in
    flight at the deadline are left out, as Little's law describes the steady state.
    """

    window: tuple[float, float]
    cpu_seconds: float
    starts: tuple[float, ...]
    ends: tuple[float, ...]
    statuses: tuple[int, ...]

    def metrics(self) -> dict[str, float | None]:
        low, high = self.window
        ends = np.asarray(self.ends)
        statuses = np.asarray(self.statuses)
        inside = (ends >= low) & (ends <= high)
        ok = inside & (statuses == 200)
        rejected = inside & np.isin(statuses, REFUSED)
        span = high - low
        ms = (ends[ok] - np.asarray(self.starts)[ok]) * 1e3
        calls = len(self.statuses)
        return {
            "throughput": float(ok.sum() / span),
            "p50_ms": _pct(ms, 50),
            "p99_ms": _pct(ms, 99),
            "cpu_us_per_call": self.cpu_seconds / calls * 1e6 if calls else None,
            "rejected_per_s": float(rejected.sum() / span),
            "rejected_share": float(rejected.sum() / inside.sum()) if inside.any() else 0.0,
            "calls": calls,
        }


def spacing_for(server_burst: float | None) -> str:
    """The limiter spacing for a server's burst: "strict" when it allows none (or none is
    known: a profile from ``perflab observe`` cannot see a burst), "average" otherwise."""
    return "strict" if server_burst is None or server_burst <= 1 else "average"


def pacing_for(rate: float | None, server_burst: float | None) -> TokenBucketLimiter | None:
    """A limiter at ``rate`` (None: no limiter), one call per ``1/rate`` (burst 1, what
    :func:`perflab.aio.ratelimit.rate_with_headroom` assumes), spaced for the server's
    burst. A client burst as large as the server's could spend the server's whole bucket
    at once and leave nothing for a send that leaves on time after late ones."""
    if not rate:
        return None
    return TokenBucketLimiter(rate, 1, spacing=spacing_for(server_burst))  # type: ignore[arg-type]


class _CallLog:
    """Records each call's start, end and status (through ``limiter`` when given); times
    the whole run's CPU."""

    def __init__(self, api: SimulatedAPI, limiter: TokenBucketLimiter | None = None) -> None:
        self.api = api
        self.limiter = limiter
        self.loop = asyncio.get_running_loop()
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.statuses: list[int] = []
        self.started = self.loop.time()
        self.cpu = time.process_time()

    async def call(self, _: Any = None) -> None:
        if self.limiter is not None:
            await self.limiter.acquire()
        began = self.loop.time()
        response = await self.api.call()
        self.starts.append(began)
        self.ends.append(self.loop.time())
        self.statuses.append(response.status)

    def run(self, window: tuple[float, float]) -> PoolRun:
        return PoolRun(
            window,
            time.process_time() - self.cpu,
            tuple(self.starts),
            tuple(self.ends),
            tuple(self.statuses),
        )


def _window(start: float, duration_s: float) -> tuple[float, float]:
    return start + RAMP_SHARE * duration_s, start + duration_s


async def run_pool(
    max_concurrent: int,
    latency: str | Latency,
    *,
    duration_s: float = 0.25,
    server_cap: int | None = None,
    server_rate: float | None = None,
    server_burst: float | None = None,
    client_rate: float | None = None,
    error_rate: float = 0.0,
    seed: int = 0,
) -> PoolRun:
    """Call a :class:`SimulatedAPI` (its cap ``server_cap``, its rate limit ``server_rate``
    with ``server_burst``; None: none) through a TaskPool of ``max_concurrent`` for
    ``duration_s``. Against a rate limit the pool sends through a TokenBucketLimiter at
    ``client_rate`` (default the server's rate; :func:`rate_ceiling` gives the highest
    rate the server never refuses), as a collector does (:func:`pacing_for`): the pool
    size is then a question of concurrency, the rate the limiter's."""
    check_number("duration_s", duration_s, positive=True)
    if client_rate is not None:
        check_number("client_rate", client_rate, positive=True)
        if not server_rate:
            raise ValueError("client_rate paces calls to a rate limit: give server_rate too")
    api = SimulatedAPI(
        latency=latency,
        max_concurrency=server_cap,
        rate_limit=server_rate,
        rate_burst=server_burst,
        error_rate=error_rate,
        seed=seed,
    )
    log = _CallLog(api, pacing_for(client_rate or server_rate, server_burst))
    pool = TaskPool(max_concurrent=max_concurrent, timeout_seconds=30)
    await pool.map(log.call, _until(log.loop, log.started + duration_s))
    return log.run(_window(log.started, duration_s))


async def pool_experiment(max_concurrent: int, latency: str, **options: Any) -> dict[str, float | None]:
    """Metrics of :func:`run_pool`: throughput (200s/s), p50/p99 latency, CPU per call,
    refusals (429 and 503)."""
    return (await run_pool(max_concurrent, latency, **options)).metrics()


async def sequential_baseline(latency: str | Latency, *, duration_s: float = 0.25, seed: int = 0) -> dict:
    """One call after another: the floor every pool size should beat."""
    check_number("duration_s", duration_s, positive=True)
    log = _CallLog(SimulatedAPI(latency=latency, seed=seed))
    while log.loop.time() < log.started + duration_s:
        await log.call()
    return log.run(_window(log.started, duration_s)).metrics()


async def gather_baseline(
    latency: str | Latency,
    *,
    requests: int = 1000,
    server_cap: int | None = None,
    server_rate: float | None = None,
    server_burst: float | None = None,
    seed: int = 0,
) -> dict:
    """``asyncio.gather`` over every request at once, unbounded: what a server's limits
    make of it. Its rates count the whole burst, from the first call to the last answer."""
    check_int("requests", requests, minimum=1)
    api = SimulatedAPI(
        latency=latency,
        max_concurrency=server_cap,
        rate_limit=server_rate,
        rate_burst=server_burst,
        seed=seed,
    )
    log = _CallLog(api)
    await asyncio.gather(*(log.call() for _ in range(requests)))
    return log.run((log.started, log.loop.time())).metrics()


#: The task-pool notebook's baselines: one call after another, and an unbounded gather.
BASELINES = ("sequential", "gather x1000")


async def baseline_experiment(
    baseline: str,
    latency: str,
    *,
    duration_s: float,
    server_cap: int | None,
    server_rate: float | None = None,
    server_burst: float | None = None,
    seed: int = 0,
) -> dict[str, float | None]:
    """One of :data:`BASELINES` for ``latency``, for :func:`perflab.measure.sweep.asweep`."""
    if baseline == "sequential":
        return await sequential_baseline(latency, duration_s=duration_s, seed=seed)
    if baseline == "gather x1000":
        return await gather_baseline(
            latency, server_cap=server_cap, server_rate=server_rate, server_burst=server_burst, seed=seed
        )
    raise ValueError(f"baseline must be one of {list(BASELINES)}, got {baseline!r}")


# --------------------------------------------------------------------------- rate limit


@dataclasses.dataclass(frozen=True, slots=True)
class RateRun:
    rate: float
    burst: float
    elapsed: float
    grants: tuple[float, ...]  # loop time of each grant
    waits: tuple[float, ...]  # seconds from asking to getting a token
    statuses: tuple[int, ...]

    def metrics(self) -> dict[str, float | None]:
        grants = np.sort(np.asarray(self.grants))
        # The initial burst is served from the full bucket: count the rate after it.
        after_burst = grants[int(self.burst) :]
        span = after_burst[-1] - after_burst[0] if after_burst.size > 1 else 0.0
        achieved = float((after_burst.size - 1) / span) if span > 0 else None
        ok = sum(1 for s in self.statuses if s == 200)
        rejected = sum(1 for s in self.statuses if s in REFUSED)
        waits_ms = np.asarray(self.waits) * 1e3
        return {
            "achieved_rate": achieved,
            "rate_error_pct": (achieved / self.rate - 1) * 100 if achieved else None,
            "ok_rate": ok / self.elapsed,
            "wait_p50_ms": _pct(waits_ms, 50),
            "wait_p99_ms": _pct(waits_ms, 99),
            "rejected_per_s": rejected / self.elapsed,
            "grants": int(grants.size),
        }


async def run_rate(
    rate: float,
    burst: float,
    *,
    duration_s: float = 0.5,
    server_rate: float | None = None,
    server_burst: float | None = None,
    latency: str | Latency = "constant:5",
    concurrency: int = 64,
    spacing: str = "average",
    seed: int = 0,
) -> RateRun:
    """``concurrency`` callers share one TokenBucketLimiter (``spacing`` "average" or
    "strict") in front of a rate-limited API."""
    check_number("duration_s", duration_s, positive=True)
    with warnings.catch_warnings():
        # The limiter warns about rates its burst cannot deliver; the notebook shows it.
        warnings.simplefilter("ignore", RuntimeWarning)
        limiter = TokenBucketLimiter(rate, burst, spacing=spacing)  # type: ignore[arg-type]
    api = SimulatedAPI(latency=latency, rate_limit=server_rate, rate_burst=server_burst, seed=seed)
    loop = asyncio.get_running_loop()
    grants: list[float] = []
    waits: list[float] = []
    statuses: list[int] = []

    async def call(_: int) -> None:
        asked = loop.time()
        try:
            await limiter.acquire()
        except asyncio.CancelledError:
            waits.append(loop.time() - asked)  # still queued at the deadline: a lower bound
            raise
        granted = loop.time()
        grants.append(granted)
        waits.append(granted - asked)
        statuses.append((await api.call()).status)

    start = loop.time()
    try:
        # Callers still queued for a token at the deadline are cancelled, not served: a
        # slow rate would otherwise spend most of the run draining its queue.
        async with asyncio.timeout(duration_s):
            await TaskPool(max_concurrent=concurrency).map(call, _until(loop, start + duration_s))
    except TimeoutError:
        pass
    return RateRun(rate, burst, loop.time() - start, tuple(grants), tuple(waits), tuple(statuses))


async def spacing_sweep(
    server_rate: float,
    *,
    shares: Sequence[float] = (0.9, 0.98),
    repeat: int = 3,
    duration_s: float = 0.3,
    concurrency: int = 16,
) -> pd.DataFrame:
    """Both limiter spacings at ``shares`` of ``server_rate`` against a server that allows
    no burst (burst 1): the tidy sweep (rate, spacing; achieved_rate, rejected_per_s, ...)."""
    from perflab.measure.sweep import asweep

    check_number("server_rate", server_rate, positive=True)
    experiment = functools.partial(
        rate_experiment,
        burst=1,
        duration_s=duration_s,
        server_rate=server_rate,
        server_burst=1,
        concurrency=concurrency,
    )
    grid: dict[str, list[Any]] = {
        "rate": [share * server_rate for share in shares],
        "spacing": ["average", "strict"],
    }
    return await asweep(
        experiment, grid, repeat=repeat, warmup=1, progress=False, name="spacing", seed_param="seed"
    )


async def loop_lag_while(
    rate: float, burst: float, *, repeat: int = 3, interval: float = 0.002, **options: Any
) -> tuple[float, int]:
    """The event loop's lag p99 (seconds), and over how many samples, while
    :func:`run_rate` (its ``options``) drove the limiter at ``rate`` ``repeat`` times after
    a warm-up run: how late a callback due every ``interval`` ran, so how late a send can
    leave after its grant on this machine, the send jitter
    :func:`perflab.aio.ratelimit.rate_with_headroom` takes. ``Exporter.watch_loop``
    exports the same measure from production."""
    from perflab.exporter import LoopLagMonitor

    check_int("repeat", repeat, minimum=1)
    await run_rate(rate, burst, seed=0, **options)  # warm-up
    monitor = LoopLagMonitor(asyncio.get_running_loop(), interval)
    try:
        for seed in range(1, repeat + 1):
            await run_rate(rate, burst, seed=seed, **options)
    finally:
        monitor.stop()
    lags = monitor.histogram.snapshot()
    return lags.quantile(0.99), lags.count


async def rate_ceiling(
    server_rate: float,
    server_burst: float,
    send_jitter_ms: float | None,
    *,
    probe_rate: float,
    probe_burst: float = 1,
    given_as: str = "given",
    **options: Any,
) -> tuple[float, float, str]:
    """The highest rate the server never refuses (:func:`rate_with_headroom`), the send
    jitter (ms) it allows for, and where that came from: ``send_jitter_ms`` when given
    (named ``given_as``: "observed" from a server profile, or set), else this loop's lag
    measured while the limiter sends at ``probe_rate`` to that server
    (:func:`loop_lag_while` with ``options``)."""
    from perflab.aio.ratelimit import rate_with_headroom

    source = given_as
    if send_jitter_ms is None:
        lag_s, samples = await loop_lag_while(
            probe_rate, probe_burst, server_rate=server_rate, server_burst=server_burst, **options
        )
        send_jitter_ms, source = lag_s * 1e3, f"this loop's lag p99 over {samples} samples"
    return rate_with_headroom(server_rate, server_burst, send_jitter_ms / 1e3), send_jitter_ms, source


async def rate_experiment(rate: float, burst: float, **options: Any) -> dict[str, float | None]:
    """Metrics of :func:`run_rate`: achieved rate and its error, waits, the server's refusals."""
    return (await run_rate(rate, burst, **options)).metrics()


# --------------------------------------------------------------------------- batching


@dataclasses.dataclass(frozen=True, slots=True)
class BatchRun:
    """Items landed per second count inside the arrival window (after its ramp), so a sink
    that falls behind shows its own pace, not the arrivals'; latencies count every item."""

    window: tuple[float, float]
    landed_in_window: int
    elapsed: float
    item_latencies: tuple[float, ...]  # seconds from an item's arrival to its batch landing
    batch_sizes: tuple[int, ...]
    sink_calls: int

    def metrics(self) -> dict[str, float | None]:
        ms = np.asarray(self.item_latencies) * 1e3
        return {
            "throughput": self.landed_in_window / (self.window[1] - self.window[0]),
            "item_p50_ms": _pct(ms, 50),
            "item_p99_ms": _pct(ms, 99),
            "mean_batch": float(np.mean(self.batch_sizes)) if self.batch_sizes else None,
            "sink_calls_per_s": self.sink_calls / self.elapsed,
        }


async def run_batches(
    batch_size: int,
    flush_interval: float,
    *,
    arrival_rate: float = 2000.0,
    duration_s: float = 0.3,
    per_call_ms: float = 2.0,
    per_item_ms: float = 0.02,
) -> BatchRun:
    """Items arrive at ``arrival_rate`` per second for ``duration_s`` and go through a
    BatchProcessor to a :class:`SimulatedSink`. An item's latency runs from when it was
    due to arrive, so a producer held back by backpressure counts as waiting."""
    check_number("arrival_rate", arrival_rate, positive=True)
    check_number("duration_s", duration_s, positive=True)
    sink = SimulatedSink(per_call_ms=per_call_ms, per_item_ms=per_item_ms)
    loop = asyncio.get_running_loop()
    start = loop.time()
    total = max(1, round(arrival_rate * duration_s))
    due = start + np.arange(total) / arrival_rate
    async with BatchProcessor(sink.write, batch_size=batch_size, flush_interval=flush_interval) as batches:
        i = 0
        while i < total:
            now = loop.time()
            while i < total and due[i] <= now:
                await batches.add(float(due[i]))
                i += 1
            if i < total:
                await asyncio.sleep(max(0.0, float(due[i]) - loop.time()))
    elapsed = loop.time() - start
    window = _window(start, duration_s)
    in_window = sum(len(batch) for landed, batch in sink.landed if window[0] <= landed <= window[1])
    latencies = [landed - arrived for landed, batch in sink.landed for arrived in batch]
    sizes = [len(batch) for _, batch in sink.landed]
    return BatchRun(window, in_window, elapsed, tuple(latencies), tuple(sizes), sink.calls)


async def batch_experiment(batch_size: int, flush_interval: float, **options: Any) -> dict[str, float | None]:
    """Metrics of :func:`run_batches`: items/s, item latency p50/p99, batch size, sink calls."""
    return (await run_batches(batch_size, flush_interval, **options)).metrics()
