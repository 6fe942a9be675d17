"""A simulated market-data collector built from perflab's primitives, for the profiler and
capstone notebooks.

Each cycle polls every symbol of the universe once (track A for the first half, B for the
rest) through a rate-limited API: ``TokenBucketLimiter`` -> ``TaskPool`` ->
``SimulatedAPI`` (retrying its refusals, 429 and 503, after a short backoff), logs each answer as a JSON line
(``CompressedWriter``, or the planted per-record unbuffered write) and hands it to a
``BatchProcessor`` in front of a ``SimulatedSink``. Two planted problems can be switched
on: a blocking call on the event loop and per-record unbuffered log writes; an oversized
pool against the server's concurrency cap is a third, set through ``pool_size``. Tuning
it (the search for its cheapest setting, advice applied) is :mod:`perflab.workbench.tuning`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from perflab._validate import check_int, check_number
from perflab.aio.apicalls import ApiCalls
from perflab.aio.batching import BatchProcessor
from perflab.aio.histogram import Histogram
from perflab.aio.ratelimit import TokenBucketLimiter
from perflab.aio.taskpool import TaskPool
from perflab.jsonl.codecs import CodecLevel
from perflab.jsonl.writers import BufferedWriter, CompressedWriter
from perflab.workbench.dataset import generate_records, symbol_universe
from perflab.workbench.services import REFUSED, Latency, SimulatedAPI, SimulatedSink

if TYPE_CHECKING:
    from perflab.exporter import Exporter

__all__ = [
    "CollectorConfig",
    "CollectorRun",
    "ServiceConfig",
    "CYCLE_BUCKETS",
    "LiveCounts",
    "run_collector",
]

MAX_RETRIES = 5
RETRY_BACKOFF_S = 0.01


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceConfig:
    """The outside world: the API's latency and limits, and the sink's costs. An incident
    (``incident_cycle``, ``incident_cap``) sets the server's concurrency cap to
    ``incident_cap`` from that cycle on, as a degraded upstream would."""

    latency: str = "lognormal:15:80"
    rate_limit: float = 4000.0
    rate_burst: float = 100.0
    max_concurrency: int = 48
    sink_call_ms: float = 3.0
    sink_item_ms: float = 0.01
    incident_cycle: int | None = None
    incident_cap: int | None = None

    def __post_init__(self) -> None:
        Latency.parse(self.latency)
        check_int("max_concurrency", self.max_concurrency, minimum=1)
        if (self.incident_cycle is None) != (self.incident_cap is None):
            raise ValueError("incident_cycle and incident_cap go together: give both or neither")
        if self.incident_cycle is not None:
            check_int("incident_cycle", self.incident_cycle, minimum=0)
            check_int("incident_cap", self.incident_cap, minimum=1)


@dataclasses.dataclass(frozen=True, slots=True)
class CollectorConfig:
    """The knobs: pool size, client rate and burst, batching, log codec and buffer, and
    the planted problems (a blocking call of ``blocking_ms`` every ``blocking_every``
    answers, per-record unbuffered log writes, the blocking call moved off the loop)."""

    symbols: int = 2000
    pool_size: int = 48
    rate: float = 3800.0
    burst: int = 50
    batch_size: int = 500
    flush_interval: float = 0.05
    codec: str = "zstd-3"  # "plain", or codec-level as in CompressedWriter ("gzip-6")
    buffer_size: int = 65536
    blocking_ms: float = 0.0
    blocking_every: int = 1000
    blocking_in_thread: bool = False
    per_record_writes: bool = False

    def __post_init__(self) -> None:
        check_int("symbols", self.symbols, minimum=1)
        check_int("pool_size", self.pool_size, minimum=1)
        check_number("rate", self.rate, positive=True)
        check_int("burst", self.burst, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_number("blocking_ms", self.blocking_ms, minimum=0)
        check_int("blocking_every", self.blocking_every, minimum=1)
        CodecLevel.parse(self.codec, name="codec")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class CollectorRun:
    """One run of ``cycles`` cycles: how long each took and what it cost."""

    cycle_seconds: tuple[float, ...]
    requests: int
    ok: int
    rejected: int
    retries: int
    failed: int
    cpu_seconds: float
    log_bytes: int
    log_records: int
    sink_calls: int
    peak_server_concurrency: int

    @property
    def rejected_share(self) -> float:
        return self.rejected / self.requests if self.requests else 0.0

    def metrics(self) -> dict[str, float]:
        cycles = len(self.cycle_seconds)
        return {
            "cycle_s": max(self.cycle_seconds),
            "cycle_mean_s": sum(self.cycle_seconds) / cycles,
            "ok_per_cycle": self.ok / cycles,
            "rejected_share": self.rejected_share,
            "retries_per_cycle": self.retries / cycles,
            "failed_per_cycle": self.failed / cycles,
            "cpu_ms_per_cycle": self.cpu_seconds / cycles * 1e3,
            "log_kb_per_cycle": self.log_bytes / cycles / 1024,
            "sink_calls_per_cycle": self.sink_calls / cycles,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "rejected_share": self.rejected_share}


#: Upper bounds (seconds) of the cycle duration histogram.
CYCLE_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
TRACKS = ("A", "B")


class LiveCounts:
    """What a running collector has done so far, per track and per API answer: the
    figures a monitoring dashboard shows (read at scrape time, never reset)."""

    __slots__ = (
        "symbols",
        "collected",
        "missed",
        "cycle_missed",
        "cycles",
        "cycle_seconds",
    )

    def __init__(self) -> None:
        self.symbols = dict.fromkeys(TRACKS, 0)  # symbols per cycle on each track
        self.collected = dict.fromkeys(TRACKS, 0)
        self.missed = dict.fromkeys(TRACKS, 0)  # gaps: symbols not collected in their cycle
        self.cycle_missed = dict.fromkeys(TRACKS, 0)  # gaps of the last finished cycle
        self.cycles = 0
        self.cycle_seconds = Histogram(CYCLE_BUCKETS)

    def __repr__(self) -> str:
        return f"<LiveCounts cycles={self.cycles} collected={self.collected} missed={self.missed}>"


def log_writer(config: CollectorConfig, path: Path) -> Any:
    spec = CodecLevel.parse(config.codec)
    if spec.codec == "plain":
        return BufferedWriter(path, buffer_size=config.buffer_size)
    return CompressedWriter(path, spec.level, codec=spec.compressed, buffer_size=config.buffer_size)


class _PerRecordLog:
    """The planted problem: every record goes out in its own unbuffered write."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "wb", buffering=0)  # noqa: SIM115
        self.bytes = 0
        self.records = 0

    def write(self, record: Any) -> None:
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        self.file.write(line)
        self.bytes += len(line)
        self.records += 1

    def close(self) -> None:
        self.file.close()


async def run_collector(
    config: CollectorConfig,
    service: ServiceConfig = ServiceConfig(),  # noqa: B008 - frozen and immutable
    *,
    log_dir: str | os.PathLike[str],
    cycles: int = 1,
    seed: int = 0,
    cycle_interval_s: float = 0.0,
    live: LiveCounts | None = None,
    exporter: Exporter | None = None,
) -> CollectorRun:
    """Run ``cycles`` polling cycles; the log goes to ``log_dir``.

    A cycle starts every ``cycle_interval_s`` seconds (0: back to back). ``live`` counts
    per track and per answer as the run goes; ``exporter`` exports the run's pool,
    limiter, API calls, batch processor, log writer and event loop (names "collector",
    "api" (limiter and API), "sink", "log", "main")."""
    check_int("cycles", cycles, minimum=1)
    check_number("cycle_interval_s", cycle_interval_s, minimum=0)
    loop = asyncio.get_running_loop()
    symbols = symbol_universe(config.symbols)
    half = config.symbols // 2
    api = SimulatedAPI(
        latency=service.latency,
        rate_limit=service.rate_limit,
        rate_burst=service.rate_burst,
        max_concurrency=service.max_concurrency,
        seed=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an undeliverable pair is measured, not refused
        limiter = TokenBucketLimiter(config.rate, config.burst)
    pool = TaskPool(max_concurrent=config.pool_size, timeout_seconds=10)
    sink = SimulatedSink(per_call_ms=service.sink_call_ms, per_item_ms=service.sink_item_ms)
    path = Path(log_dir) / f"collector-{seed}.jsonl{'' if config.codec == 'plain' else '.log'}"
    log: Any = _PerRecordLog(path) if config.per_record_writes else log_writer(config, path)
    calls = ApiCalls("api")  # the client's view of its calls: exported as a user's client's
    bodies = generate_records(config.symbols * cycles, seed=seed)
    counts = {"requests": 0, "ok": 0, "rejected": 0, "retries": 0, "failed": 0, "answers": 0}

    def blocking_call() -> None:
        time.sleep(config.blocking_ms / 1000)

    async def fetch(index: int) -> None:
        symbol = symbols[index]
        track = "A" if index < half else "B"
        status = 0
        for attempt in range(MAX_RETRIES + 1):
            async with limiter:
                counts["requests"] += 1
                async with calls.call() as call:
                    status = call.status = (await api.call(symbol)).status
            if status not in REFUSED:
                break
            counts["rejected"] += 1
            if attempt < MAX_RETRIES:
                counts["retries"] += 1
                await asyncio.sleep(RETRY_BACKOFF_S)
        if status != 200:
            counts["failed"] += 1
            if live is not None:
                live.missed[track] += 1
                missed_now[track] += 1
            return
        counts["ok"] += 1
        if live is not None:
            live.collected[track] += 1
        record = next(bodies)
        record["symbol"], record["track"] = symbol, track
        log.write(record)
        await batches.add(record)
        counts["answers"] += 1
        if config.blocking_ms and counts["answers"] % config.blocking_every == 0:
            if config.blocking_in_thread:
                await asyncio.to_thread(blocking_call)
            else:
                blocking_call()  # the planted problem: the whole loop stops

    cycle_seconds = []
    missed_now = dict.fromkeys(TRACKS, 0)
    if live is not None:
        live.symbols.update(A=half, B=config.symbols - half)
    cpu = time.process_time()
    try:
        async with BatchProcessor(sink.write, config.batch_size, config.flush_interval) as batches:
            if exporter is not None:
                _export(exporter, pool, limiter, calls, batches, log)
            next_start = loop.time()
            for cycle in range(cycles):
                if service.incident_cycle is not None and cycle == service.incident_cycle:
                    api.max_concurrency = service.incident_cap
                started = loop.time()
                await pool.map(fetch, range(config.symbols))
                cycle_seconds.append(loop.time() - started)
                if live is not None:
                    live.cycles += 1
                    live.cycle_seconds.observe(cycle_seconds[-1])
                    live.cycle_missed.update(missed_now)
                missed_now = dict.fromkeys(TRACKS, 0)
                next_start += cycle_interval_s
                if cycle_interval_s and cycle < cycles - 1:
                    await asyncio.sleep(max(0.0, next_start - loop.time()))
    finally:
        log.close()
    log_bytes = log.bytes if isinstance(log, _PerRecordLog) else log.stats.bytes_written
    log_records = log.records if isinstance(log, _PerRecordLog) else log.stats.records
    return CollectorRun(
        cycle_seconds=tuple(cycle_seconds),
        requests=counts["requests"],
        ok=counts["ok"],
        rejected=counts["rejected"],
        retries=counts["retries"],
        failed=counts["failed"],
        cpu_seconds=time.process_time() - cpu,
        log_bytes=log_bytes,
        log_records=log_records,
        sink_calls=sink.calls,
        peak_server_concurrency=api.stats.peak_concurrency,
    )


def _export(
    exporter: Exporter,
    pool: TaskPool,
    limiter: TokenBucketLimiter,
    calls: ApiCalls,
    batches: BatchProcessor,
    log: Any,
) -> None:
    exporter.add_pool("collector", pool, replace=True)
    exporter.add_limiter("api", limiter, replace=True)
    exporter.add_api("api", calls, replace=True)
    exporter.add_batcher("sink", batches, replace=True)
    if isinstance(log, BufferedWriter | CompressedWriter):
        exporter.add_writer("log", log, replace=True)
    exporter.watch_loop("main", replace=True)
