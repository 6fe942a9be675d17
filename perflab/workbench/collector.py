"""A simulated market-data collector built from perflab's primitives, for the profiler and
capstone notebooks.

Each cycle polls every symbol of the universe once (track A for the first half, B for the
rest) through a rate-limited API: ``TokenBucketLimiter`` -> ``TaskPool`` ->
``SimulatedAPI`` (retrying 429s after a short backoff), logs each answer as a JSON line
(``CompressedWriter``, or the planted per-record unbuffered write) and hands it to a
``BatchProcessor`` in front of a ``SimulatedSink``. Two planted problems can be switched
on: a blocking call on the event loop and per-record unbuffered log writes; an oversized
pool against the server's concurrency cap is a third, set through ``pool_size``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import warnings
from pathlib import Path
from typing import Any

import orjson

from perflab._validate import check_int, check_number
from perflab.advice import Recommendation, finding
from perflab.batching import BatchProcessor
from perflab.ratelimit import TokenBucketLimiter
from perflab.taskpool import TaskPool
from perflab.workbench.dataset import generate_records, symbol_universe
from perflab.workbench.services import SimulatedAPI, SimulatedSink
from perflab.writers import BufferedWriter, CompressedWriter

__all__ = [
    "CollectorConfig",
    "CollectorRun",
    "ServiceConfig",
    "codec_costs",
    "collector_recommendations",
    "measure_config",
    "run_collector",
]

MAX_RETRIES = 5
RETRY_BACKOFF_S = 0.01
#: A check fires when this share of calls is answered 429.
REJECTED_SHARE = 0.05


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceConfig:
    """The outside world: the API's latency and limits, and the sink's costs."""

    latency: str = "lognormal:15:80"
    rate_limit: float = 4000.0
    rate_burst: float = 100.0
    max_concurrency: int = 48
    sink_call_ms: float = 3.0
    sink_item_ms: float = 0.01


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
        if self.codec != "plain":
            codec, _, level = self.codec.partition("-")
            if not level.isdigit():
                raise ValueError(f"codec must be 'plain' or CODEC-LEVEL like 'zstd-3', got {self.codec!r}")

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


def _log_writer(config: CollectorConfig, path: Path) -> Any:
    if config.codec == "plain":
        return BufferedWriter(path, buffer_size=config.buffer_size)
    codec, _, level = config.codec.partition("-")
    return CompressedWriter(path, int(level), codec=codec, buffer_size=config.buffer_size)  # type: ignore[arg-type]


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
) -> CollectorRun:
    """Run ``cycles`` polling cycles; the log goes to ``log_dir``."""
    check_int("cycles", cycles, minimum=1)
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
    log: Any = _PerRecordLog(path) if config.per_record_writes else _log_writer(config, path)
    bodies = generate_records(config.symbols * cycles, seed=seed)
    counts = {"requests": 0, "ok": 0, "rejected": 0, "retries": 0, "failed": 0, "answers": 0}

    def blocking_call() -> None:
        time.sleep(config.blocking_ms / 1000)

    async def fetch(index: int) -> None:
        symbol = symbols[index]
        for attempt in range(MAX_RETRIES + 1):
            async with limiter:
                counts["requests"] += 1
                response = await api.call(symbol)
            if response.status != 429:
                break
            counts["rejected"] += 1
            if attempt < MAX_RETRIES:
                counts["retries"] += 1
                await asyncio.sleep(RETRY_BACKOFF_S)
        if response.status != 200:
            counts["failed"] += 1
            return
        counts["ok"] += 1
        record = next(bodies)
        record["symbol"], record["track"] = symbol, "A" if index < half else "B"
        log.write(record)
        await batches.add(record)
        counts["answers"] += 1
        if config.blocking_ms and counts["answers"] % config.blocking_every == 0:
            if config.blocking_in_thread:
                await asyncio.to_thread(blocking_call)
            else:
                blocking_call()  # the planted problem: the whole loop stops

    cycle_seconds = []
    cpu = time.process_time()
    try:
        async with BatchProcessor(sink.write, config.batch_size, config.flush_interval) as batches:
            for _ in range(cycles):
                started = loop.time()
                await pool.map(fetch, range(config.symbols))
                cycle_seconds.append(loop.time() - started)
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


def collector_recommendations(
    run: CollectorRun, config: CollectorConfig, service: ServiceConfig
) -> list[Recommendation]:
    """Findings the process counters cannot see: what the server answered."""
    found = []
    if run.rejected_share >= REJECTED_SHARE:
        found.append(
            finding(
                "api",
                "high",
                f"{run.rejected_share:.0%} of calls answered 429",
                "rejected_share",
                run.rejected_share * 100,
                REJECTED_SHARE * 100,
                "%",
                f"pool_size {config.pool_size} exceeds what the server serves at once (its cap is "
                f"{service.max_concurrency}) or the rate is past its limit ({service.rate_limit:g}/s): set "
                f"TaskPool(max_concurrent=<= {service.max_concurrency}) and TokenBucketLimiter(rate=< "
                f"{service.rate_limit:g}); the task-pool notebook finds the knee",
            )
        )
    return found


# --------------------------------------------------------------------------- searching


async def measure_config(
    config: CollectorConfig,
    service: ServiceConfig,
    *,
    log_dir: str | os.PathLike[str],
    repeats: int = 1,
    seed: int = 0,
) -> dict[str, float]:
    """Run ``repeats`` one-cycle runs (seeds ``seed``, ``seed + 1``, ...): the worst cycle
    (what a target must hold for), the median one, and the median costs."""
    import statistics

    check_int("repeats", repeats, minimum=1)
    runs = [
        (await run_collector(config, service, log_dir=log_dir, seed=seed + r)).metrics()
        for r in range(repeats)
    ]
    worst = max(run["cycle_s"] for run in runs)
    return {
        "cycle_worst_s": worst,
        "cycle_median_s": statistics.median(run["cycle_s"] for run in runs),
        "cpu_ms_per_cycle": statistics.median(run["cpu_ms_per_cycle"] for run in runs),
        "rejected_share": statistics.median(run["rejected_share"] for run in runs),
        "failed_per_cycle": max(run["failed_per_cycle"] for run in runs),
        "log_kb_per_cycle": statistics.median(run["log_kb_per_cycle"] for run in runs),
        "sink_calls_per_cycle": statistics.median(run["sink_calls_per_cycle"] for run in runs),
        "repeats": repeats,
    }


def codec_costs(
    records: list[Any], codecs: list[str], *, log_dir: str | os.PathLike[str], repeat: int = 3
) -> Any:
    """CPU and bytes of logging one cycle's ``records`` with each codec ("plain" or
    "zstd-3" style), median of ``repeat`` runs, each through a CompressedWriter."""
    import statistics

    import pandas as pd

    rows = []
    for name in codecs:
        config = CollectorConfig(codec=name)
        cpu, size = [], 0
        for r in range(repeat):
            path = Path(log_dir) / f"codec-{name}-{r}"
            started = time.process_time()
            with _log_writer(config, path) as writer:
                writer.write_many(records)
            cpu.append((time.process_time() - started) * 1e3)
            size = path.stat().st_size
            path.unlink()
        rows.append(
            {"codec": name, "cpu_ms_per_cycle": statistics.median(cpu), "log_kb_per_cycle": size / 1024}
        )
    return pd.DataFrame(rows)
