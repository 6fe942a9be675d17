"""Tuning the simulated collector: the profiler's recommendations for a run and the
configuration with them applied, the search for the cheapest setting that meets the cycle
time, the batch and codec costs the capstone notebook weighs."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perflab._validate import check_int
from perflab.jsonl.codecs import CodecLevel
from perflab.measure.decision import UntilDecided
from perflab.measure.sweep import asweep, sweep
from perflab.profiling.profiler import PerformanceProfiler
from perflab.profiling.rules import Recommendation, recommendation
from perflab.workbench.collector import (
    CollectorConfig,
    CollectorRun,
    ServiceConfig,
    log_writer,
    run_collector,
)

if TYPE_CHECKING:
    import pandas as pd

    from perflab.measure.decision import Decision

__all__ = [
    "Evaluate",
    "SearchResult",
    "apply_advice",
    "batch_sweep",
    "codec_costs",
    "collector_evaluator",
    "collector_recommendations",
    "confirmed_decision",
    "confirm_pool_sizes",
    "measure_runs",
    "meets",
    "pool_candidates",
    "profile_versions",
    "search_cheapest",
]

#: A check fires when this share of calls is refused (429, 503).
REJECTED_SHARE = 0.05


def collector_recommendations(
    run: CollectorRun, config: CollectorConfig, service: ServiceConfig
) -> list[Recommendation]:
    """Findings the process counters cannot see: what the server answered."""
    found = []
    if run.rejected_share >= REJECTED_SHARE:
        found.append(
            recommendation(
                "api",
                "high",
                f"{run.rejected_share:.0%} of calls refused (429, 503)",
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


def apply_advice(
    before: CollectorConfig, findings: Sequence[Recommendation], service: ServiceConfig
) -> tuple[CollectorConfig, dict[str, Any]]:
    """The configuration with each finding's advice applied, and the settings changed:
    a blocked loop moves the blocking call to a thread, small writes go through the
    buffered (or compressed) log writer, refusals size the pool to the server's cap."""
    fired = {f.metric for f in findings}
    changes: dict[str, Any] = {}
    recommended: dict[str, Any] = {"max_concurrent": before.pool_size}
    if "loop_stall_max_ms" in fired and before.blocking_ms and not before.blocking_in_thread:
        changes["blocking_in_thread"] = True
        recommended["blocking work"] = "asyncio.to_thread"
    if "bytes_per_write" in fired and before.per_record_writes:
        changes["per_record_writes"] = False
        spec = CodecLevel.parse(before.codec)
        writer = "BufferedWriter" if spec.is_plain else f"CompressedWriter({spec})"
        recommended["log writer"] = f"{writer}, buffer_size={before.buffer_size:,}"
    if "rejected_share" in fired and before.pool_size > service.max_concurrency:
        changes["pool_size"] = service.max_concurrency
        recommended["max_concurrent"] = service.max_concurrency
    return dataclasses.replace(before, **changes), recommended


# --------------------------------------------------------------------------- searching


async def measure_runs(
    config: CollectorConfig,
    service: ServiceConfig,
    *,
    log_dir: str | os.PathLike[str],
    repeats: int = 1,
    seed: int = 0,
) -> list[dict[str, float]]:
    """The metrics of ``repeats`` one-cycle runs (seeds ``seed``, ``seed + 1``, ...), raw:
    one dict per run, so a comparison can judge their spread."""
    check_int("repeats", repeats, minimum=1)
    return [
        (await run_collector(config, service, log_dir=log_dir, seed=seed + r)).metrics()
        for r in range(repeats)
    ]


#: Measures ``repeats`` cycles of (pool size, rate) from a seed; one metrics dict per cycle.
Evaluate = Callable[[int, float, int, int], Awaitable[list[dict[str, float]]]]


@dataclasses.dataclass(frozen=True, slots=True)
class SearchResult:
    """Every cycle the search measured (stage, pool_size, rate, repeat, metrics) and the
    setting it chose (None when nothing met the budget)."""

    rows: list[dict[str, Any]]
    chosen: dict[str, Any] | None


def meets(runs: Sequence[Mapping[str, float]], budget_s: float) -> bool:
    """The worst cycle fits in the budget and no symbol was lost."""
    return max(r["cycle_s"] for r in runs) <= budget_s and max(r["failed_per_cycle"] for r in runs) == 0


async def search_cheapest(
    evaluate: Evaluate,
    *,
    coarse_pools: Sequence[int],
    rates: Sequence[float],
    budget_s: float,
    confirm_repeat: int,
    pool_step: int = 2,
) -> SearchResult:
    """The smallest pool size, then the gentlest rate, whose worst cycle meets ``budget_s``.

    A coarse grid of pool size x rate, one cycle each; the pool size refined by bisection
    at the fastest rate, over multiples of ``pool_step``, between the smallest coarse size
    that met the budget and the next smaller one; candidates confirmed with
    ``confirm_repeat`` cycles each, stepping up the pool size until one holds; then the
    gentlest rate that still holds at that size. A coarser ``pool_step`` keeps the answer
    off a boundary that one noisy cycle moves (46 in one run, 48 in the next).
    """
    check_int("confirm_repeat", confirm_repeat, minimum=1)
    check_int("pool_step", pool_step, minimum=1)
    if not coarse_pools or not rates:
        raise ValueError("coarse_pools and rates must each hold at least one value")
    rows: list[dict[str, Any]] = []

    async def measure(stage: str, pool: int, rate: float, repeats: int, seed: int) -> bool:
        runs = await evaluate(pool, rate, repeats, seed)
        rows.extend(
            {"stage": stage, "pool_size": pool, "rate": rate, "repeat": r, **run}
            for r, run in enumerate(runs)
        )
        return meets(runs, budget_s)

    fastest = max(rates)
    coarse_ok = {}
    for pool in coarse_pools:
        for rate in rates:
            met = await measure("coarse", pool, rate, 1, 0)
            if rate == fastest:
                coarse_ok[pool] = met
    passing = sorted(p for p, met in coarse_ok.items() if met)
    if not passing:
        return SearchResult(rows, None)
    high = passing[0]
    low = max((p for p in coarse_ok if p < high), default=0)
    steps = [p for p in range(low + 1, high) if p % pool_step == 0]
    while steps:  # the smallest step that met the budget lies above every one that did not
        middle = steps[len(steps) // 2]
        if await measure("refine", middle, fastest, 1, 0):
            high, steps = middle, [p for p in steps if p < middle]
        else:
            steps = [p for p in steps if p > middle]
    for pool in sorted({high, *passing}):
        if not await measure("confirm", pool, fastest, confirm_repeat, 100):
            continue
        chosen_rate = fastest
        for rate in sorted(r for r in rates if r < fastest):
            if await measure("confirm", pool, rate, confirm_repeat, 100):
                chosen_rate = rate
                break
        worst = max(
            r["cycle_s"]
            for r in rows
            if r["stage"] == "confirm" and (r["pool_size"], r["rate"]) == (pool, chosen_rate)
        )
        chosen = {
            "stage": "confirm",
            "pool_size": pool,
            "rate": chosen_rate,
            "cycle_worst_s": worst,
            "repeats": confirm_repeat,
        }
        return SearchResult(rows, chosen)
    return SearchResult(rows, None)


def confirmed_decision(
    rows: pd.DataFrame,
    *,
    budget_s: float,
    server_cap: int | None = None,
    server_rate: float | None = None,
) -> Decision:
    """The search's choice as a decision over its confirmed candidates: the smallest pool,
    then the gentlest rate, whose every cycle met ``budget_s`` and lost no symbol (any
    cycle time that does counts: the zone is 100%), never a pool above the modelled
    ``server_cap`` nor a rate above the modelled ``server_rate``."""
    from perflab.measure.decision import decide

    confirmed = rows[rows["stage"] == "confirm"]
    limits = [f"max(cycle_s)<={budget_s}", "failed_per_cycle==0"]
    if server_cap is not None:
        limits.append(f"pool_size<={server_cap}")
    if server_rate is not None:
        limits.append(f"rate<={server_rate}")
    return decide(
        confirmed if not confirmed.empty else rows,
        ["pool_size", "rate"],
        objective="cycle_s:min",
        constraints=limits,
        cheaper=["pool_size:asc", "rate:asc"],
        zone=1.0,
    )


def pool_candidates(estimate: int, current: int) -> list[int]:
    """The pool sizes to try around a first guess: half, three quarters, five quarters of
    ``estimate``, the estimate and its neighbours (a guess one off, run to run, still has
    the true cap among the candidates), and the ``current`` size (to show what it costs)."""
    check_int("estimate", estimate, minimum=1)
    check_int("current", current, minimum=1)
    around = {estimate - 1, estimate, estimate + 1}
    return sorted({max(1, round(estimate * f)) for f in (0.5, 0.75, 1.25)} | around - {0} | {current})


async def confirm_pool_sizes(
    config: CollectorConfig,
    service: ServiceConfig,
    pools: Sequence[int],
    *,
    repeat: int,
    log_dir: str | os.PathLike[str],
) -> pd.DataFrame:
    """One collector cycle per run at each of ``pools`` against ``service`` (the server as
    it is now), repeats following the decision: the smallest pool within 5% of the fastest
    cycle that draws no refusal (429, 503) in any run and loses no symbol. The sweep's
    :func:`perflab.measure.sweep.facts_of` carries the decision."""
    check_int("repeat", repeat, minimum=2)
    if not pools:
        raise ValueError("pools must name at least one pool size")

    async def cycle(pool_size: int, seed: int) -> dict[str, float]:
        chosen = dataclasses.replace(config, pool_size=pool_size)
        return (await run_collector(chosen, service, log_dir=log_dir, seed=seed)).metrics()

    rule = UntilDecided(
        "cycle_s:min",
        ["rejected_share==0", "failed_per_cycle==0"],
        cheaper=["pool_size:asc"],
        min_repeat=min(3, repeat),
    )
    return await asweep(
        cycle,
        {"pool_size": [check_int("pools", p, minimum=1) for p in pools]},
        repeat=repeat,
        warmup=0,
        progress=False,
        name="pool-confirm",
        seed_param="seed",
        adaptive=rule,
    )


def collector_evaluator(
    symbols: int, service: ServiceConfig, *, log_dir: str | os.PathLike[str], **config: Any
) -> Evaluate:
    """An :data:`Evaluate` that runs the simulated collector of ``symbols`` symbols."""

    async def evaluate(pool: int, rate: float, repeats: int, seed: int) -> list[dict[str, float]]:
        chosen = CollectorConfig(symbols=symbols, pool_size=pool, rate=rate, **config)
        return await measure_runs(chosen, service, log_dir=log_dir, repeats=repeats, seed=seed)

    return evaluate


async def profile_versions(
    versions: Mapping[str, CollectorConfig],
    service: ServiceConfig,
    *,
    log_dir: str | os.PathLike[str],
    repeat: int,
) -> pd.DataFrame:
    """Each version's cycle ``repeat`` times, interleaved (repeat 0 of every version, then
    repeat 1, ...), each under a :class:`PerformanceProfiler`: one tidy row per run with
    the run's metrics, its longest loop stall and its write calls."""
    import pandas as pd

    check_int("repeat", repeat, minimum=1)
    rows = []
    for r in range(repeat):
        for name, config in versions.items():
            async with PerformanceProfiler(name) as profiler:
                run = await run_collector(config, service, log_dir=log_dir, seed=r)
            rows.append(
                {
                    "version": name,
                    "repeat": r,
                    **run.metrics(),
                    "loop_stall_ms": profiler.result.loop_stall_max_ms,
                    "write_calls": profiler.result.io_write_count,
                }
            )
    return pd.DataFrame(rows)


async def batch_sweep(
    chosen: Mapping[str, Any] | None,
    sizes: Sequence[int],
    service: ServiceConfig,
    *,
    symbols: int,
    log_dir: str | os.PathLike[str],
    seed: int = 200,
) -> pd.DataFrame:
    """One cycle per sink batch size at the chosen pool size and rate (the defaults when
    the search chose nothing): one row per batch size."""
    import pandas as pd

    base = CollectorConfig(symbols=symbols)
    pool = int(chosen["pool_size"]) if chosen else base.pool_size
    rate = float(chosen["rate"]) if chosen else base.rate
    rows = []
    for size in sizes:
        config = dataclasses.replace(base, pool_size=pool, rate=rate, batch_size=size)
        (run,) = await measure_runs(config, service, log_dir=log_dir, seed=seed)
        rows.append({"batch_size": size, **run})
    return pd.DataFrame(rows)


def _codec_cost(records: Sequence[Any], log_dir: Path, codec: str) -> dict[str, float]:
    path = log_dir / f"codec-{codec}"
    started = time.process_time()
    try:
        with log_writer(CollectorConfig(codec=codec), path) as writer:
            writer.write_many(records)
        cpu_ms = (time.process_time() - started) * 1e3
        return {"cpu_ms_per_cycle": cpu_ms, "log_kb_per_cycle": path.stat().st_size / 1024}
    finally:
        path.unlink(missing_ok=True)


def codec_costs(
    records: Sequence[Any], codecs: Sequence[str], *, log_dir: str | os.PathLike[str], repeat: int = 3
) -> pd.DataFrame:
    """CPU and bytes of logging one cycle's ``records`` with each codec ("plain" or
    "zstd-3" style) through the collector's log writer: the median of ``repeat`` runs."""
    for codec in codecs:
        CodecLevel.parse(codec, name="codecs")
    run = functools.partial(_codec_cost, records, Path(log_dir))
    frame = sweep(run, {"codec": list(codecs)}, repeat=repeat, warmup=1, progress=False, name="codecs")
    costs = ["cpu_ms_per_cycle", "log_kb_per_cycle"]
    return frame.groupby("codec", sort=False, as_index=False)[costs].median()
