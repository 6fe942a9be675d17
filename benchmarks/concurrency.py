"""perflab's asyncio primitives beside their baselines and peers, side by side in one run.

Every figure is the median [min-max] of REPEAT runs measured in this process, on asyncio
and on uvloop. Ratios compare medians taken in the same run. Run with ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import tracemalloc
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import aiolimiter
import aiometer
import uvloop

from perflab import BatchProcessor, TaskPool, TokenBucketLimiter

from common import fmt, ratio, repeat, table

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def run(loop_name: str, coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        return runner.run(coro_fn())


def repeat_on(
    loop_name: str, coro_fn: Callable[[], Awaitable[float]], times: int, warmup: bool = True
) -> list[float]:
    """Samples of ``coro_fn``, each run in a fresh loop of the given kind."""
    return repeat(lambda: run(loop_name, coro_fn), times, warmup)


def ratio_line(label: str, rows: dict[str, dict[str, list[float]]], num: str, den: str) -> None:
    parts = [f"{loop_name} {ratio(rows, num, den, loop_name, digits=3)}" for loop_name in rows[num]]
    print(f"  {label}: " + ", ".join(parts))


# --------------------------------------------------------------------------- pool


async def _sleep_task(_: int, delay: float) -> None:
    await asyncio.sleep(delay)


def pool_runners(n: int, limit: int, delay: float) -> dict[str, Callable[[], Awaitable[float]]]:
    clock = time.perf_counter if delay else time.process_time

    async def perflab_map() -> float:
        pool = TaskPool(max_concurrent=limit)
        t0 = clock()
        await pool.map(lambda i: _sleep_task(i, delay), range(n))
        return clock() - t0

    async def perflab_map_no_timeout() -> float:
        pool = TaskPool(max_concurrent=limit, timeout_seconds=None)
        t0 = clock()
        await pool.map(lambda i: _sleep_task(i, delay), range(n))
        return clock() - t0

    async def semaphore_gather() -> float:
        sem = asyncio.Semaphore(limit)

        async def one(i: int) -> None:
            async with sem:
                await _sleep_task(i, delay)

        t0 = clock()
        await asyncio.gather(*(one(i) for i in range(n)))
        return clock() - t0

    async def taskgroup_semaphore() -> float:
        sem = asyncio.Semaphore(limit)

        async def one(i: int) -> None:
            async with sem:
                await _sleep_task(i, delay)

        t0 = clock()
        async with asyncio.TaskGroup() as tg:
            for i in range(n):
                tg.create_task(one(i))
        return clock() - t0

    async def aiometer_run() -> float:
        t0 = clock()
        await aiometer.run_on_each(lambda i: _sleep_task(i, delay), range(n), max_at_once=limit)
        return clock() - t0

    async def sequential_floor() -> float:
        # What the timer itself costs: one worker's share of the sleeps, back to back.
        t0 = clock()
        for i in range(n // limit):
            await _sleep_task(i, delay)
        return clock() - t0

    return {
        "timer floor (n/limit sleeps in a row)": sequential_floor,
        "perflab TaskPool.map": perflab_map,
        "perflab map, timeout_seconds=None": perflab_map_no_timeout,
        "asyncio.Semaphore + gather": semaphore_gather,
        "asyncio.TaskGroup + Semaphore": taskgroup_semaphore,
        "aiometer.run_on_each": aiometer_run,
    }


def bench_pool(times: int) -> None:
    rows = {name: {} for name in pool_runners(1, 1, 0)}
    for loop_name in LOOPS:
        for name, fn in pool_runners(100, 10, 0.01).items():
            rows[name][loop_name] = repeat_on(loop_name, fn, times)
    table("TaskPool: 100 tasks x sleep(10 ms), max_concurrent=10, wall", "s", rows, 1, 4)
    ratio_line("perflab / timer floor", rows, "perflab TaskPool.map", "timer floor (n/limit sleeps in a row)")
    ratio_line("perflab / Semaphore+gather", rows, "perflab TaskPool.map", "asyncio.Semaphore + gather")

    n = 100_000
    runners = pool_runners(n, 100, 0)
    del runners["timer floor (n/limit sleeps in a row)"]
    rows = {name: {} for name in runners}
    for loop_name in LOOPS:
        for name, fn in runners.items():
            rows[name][loop_name] = [s / n for s in repeat_on(loop_name, fn, times)]
    table("TaskPool: CPU per task, 100,000 x sleep(0), max_concurrent=100", "us/task", rows, 1e6, 2)
    ratio_line("perflab map / Semaphore+gather", rows, "perflab TaskPool.map", "asyncio.Semaphore + gather")
    for loop_name in LOOPS:
        extra = statistics.median(rows["perflab TaskPool.map"][loop_name]) - statistics.median(
            rows["perflab map, timeout_seconds=None"][loop_name]
        )
        print(f"  {loop_name}: the 30 s timeout adds {extra * 1e6:.2f} us/task")

    async def million() -> tuple[int, float]:
        peak_tasks = 0

        async def work(i: int) -> None:
            nonlocal peak_tasks
            if i % 10_000 == 0:
                peak_tasks = max(peak_tasks, len(asyncio.all_tasks()))
            if i % 4 == 0:
                await asyncio.sleep(0)

        tracemalloc.start()
        await TaskPool(max_concurrent=100).map(work, (i for i in range(1_000_000)))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak_tasks, peak

    peak_tasks, peak = run("asyncio", million)
    print(
        f"\nTaskPool: map over a generator of 1,000,000 items, max_concurrent=100 (one run, traced)\n"
        f"  peak live tasks {peak_tasks} (workers + caller), peak traced memory {peak / 2**20:.1f} MiB "
        f"(of which the 1M-entry result list is {8 * 1_000_000 / 2**20:.1f} MiB)"
    )


# --------------------------------------------------------------------------- limiter


def limiter_for(impl: str, rate: float, burst: int) -> Any:
    if impl == "perflab":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return TokenBucketLimiter(rate, burst)
    return aiolimiter.AsyncLimiter(burst, burst / rate)


def bench_limiter(times: int) -> None:
    impls = ["perflab", "aiolimiter"]

    def acquire_cpu(impl: str) -> Callable[[], Awaitable[float]]:
        async def go() -> float:
            limiter = limiter_for(impl, 1e9, 10**9)
            n = 200_000
            t0 = time.process_time()
            for _ in range(n):
                await limiter.acquire()
            return (time.process_time() - t0) / n

        return go

    rows = {impl: {ln: repeat_on(ln, acquire_cpu(impl), times) for ln in LOOPS} for impl in impls}
    table("Limiter: acquire() with a token available, CPU", "us/call", rows, 1e6, 3)

    def schedule(impl: str, rate: float, burst: int, n: int) -> Callable[[], Awaitable[float]]:
        async def go() -> float:
            limiter = limiter_for(impl, rate, burst)
            t0 = time.perf_counter()
            for _ in range(n):
                await limiter.acquire()
            return time.perf_counter() - t0

        return go

    rows = {
        impl: {ln: repeat_on(ln, schedule(impl, 50, 1, 50), times, warmup=False) for ln in LOOPS}
        for impl in impls
    }
    table("Limiter: 50 acquires at 50/s, burst 1 (ideal 0.980 s)", "s", rows, 1, 4)

    for rate, burst, seconds in ((1000, 1, 3.0), (10_000, 100, 3.0)):
        n = int(rate * seconds) + burst
        rows = {
            impl: {ln: repeat_on(ln, schedule(impl, rate, burst, n), times, warmup=False) for ln in LOOPS}
            for impl in impls
        }
        # Achieved rate over the tokens after the initial burst; error vs the target.
        errors = {
            impl: {ln: [((n - burst) / s / rate - 1) * 100 for s in samples] for ln, samples in by.items()}
            for impl, by in rows.items()
        }
        table(f"Limiter: sustained {rate:,}/s, burst {burst}, {seconds:g} s: rate error", "%", errors, 1, 2)

    async def windows() -> float:
        limiter = TokenBucketLimiter(1000, 1)
        stamps = []
        for _ in range(2000):
            await limiter.acquire()
            stamps.append(time.perf_counter())
        worst = 0.0
        j = 0
        for i, t in enumerate(stamps):  # windows of 10 ms ending at each grant
            while stamps[j] < t - 0.010:
                j += 1
            worst = max(worst, (i - j + 1) - (1 + 1000 * (t - stamps[j])))
        return worst

    excess = run("asyncio", windows)
    print(
        f"\n  Window check, 1,000/s burst 1, 2 s, every 10 ms window: most grants beyond "
        f"burst + rate x window = {excess:.2f} tokens (credited lateness allows at most one request)"
    )


# --------------------------------------------------------------------------- batch


def bench_batch(times: int) -> None:
    async def sink(batch: list[Any]) -> None:
        return None

    def add_cpu() -> Callable[[], Awaitable[float]]:
        async def go() -> float:
            bp = BatchProcessor(sink, batch_size=10**9, flush_interval=None)
            n = 500_000
            t0 = time.process_time()
            for i in range(n):
                await bp.add(i)
            elapsed = (time.process_time() - t0) / n
            await bp.close()
            return elapsed

        return go

    rows = {"perflab BatchProcessor.add": {ln: repeat_on(ln, add_cpu(), times) for ln in LOOPS}}
    table("Batch: add() with no flush due, CPU", "us/item", rows, 1e6, 3)

    lateness: dict[str, list[float]] = {ln: [] for ln in LOOPS}

    def linger(loop_name: str) -> Callable[[], Awaitable[float]]:
        async def go() -> float:
            loop = asyncio.get_running_loop()
            late = []
            for _ in range(20):
                arrived = loop.create_future()

                async def mark(batch: list[Any], arrived=arrived) -> None:
                    arrived.set_result(time.perf_counter())

                bp = BatchProcessor(mark, batch_size=1000, flush_interval=0.02)
                t0 = time.perf_counter()
                await bp.add(1)
                late.append(await arrived - t0 - 0.02)
                await bp.close()
            lateness[loop_name].extend(late)
            return statistics.median(late)

        return go

    rows = {"time flush after flush_interval": {ln: repeat_on(ln, linger(ln), times) for ln in LOOPS}}
    table("Batch: time flush lateness (median of 20 per run), flush_interval=20 ms", "ms", rows, 1e3, 3)
    for loop_name, late in lateness.items():
        print(f"  {loop_name}: worst of {len(late)} flushes {max(late) * 1e3:.3f} ms late")


# --------------------------------------------------------------------------- exporter


def bench_exporter(times: int) -> None:
    """The hot path with the Prometheus exporter attached and scraped every 50 ms (a
    harsher rate than any Prometheus) against the same code without it, runs interleaved."""
    from perflab.exporter import Exporter

    async def sink(batch: list[Any]) -> None:
        return None

    async def noop(i: int) -> int:
        return i

    def attached(exported: bool, op: str) -> Callable[[], Awaitable[float]]:
        async def go() -> float:
            exporter = Exporter() if exported else None
            stop = threading.Event()
            scraper = None
            limiter = TokenBucketLimiter(1e9, 10**9)
            pool = TaskPool(max_concurrent=64)
            bp = BatchProcessor(sink, batch_size=1000, flush_interval=None)
            if exporter is not None:
                exporter.add_limiter("l", limiter)
                exporter.add_pool("p", pool)
                exporter.add_batcher("b", bp)
                exporter.watch_loop()
                scraper = threading.Thread(target=_scrape, args=(exporter, stop), daemon=True)
                scraper.start()
            n = 100_000
            t0 = time.process_time()
            if op == "acquire":
                for _ in range(n):
                    await limiter.acquire()
            elif op == "add":
                for i in range(n):
                    await bp.add(i)
            else:
                await pool.map(noop, range(n))
            elapsed = (time.process_time() - t0) / n
            stop.set()
            if scraper is not None:
                scraper.join()
            await bp.close()
            return elapsed

        return go

    ops = {"acquire": "limiter.acquire()", "add": "BatchProcessor.add()", "map": "pool.map call"}
    rows: dict[str, dict[str, list[float]]] = {}
    for op, label in ops.items():
        without, with_ = [], []
        run("asyncio", attached(False, op))  # warm-up
        for _ in range(times):
            without.append(run("asyncio", attached(False, op)))
            with_.append(run("asyncio", attached(True, op)))
        rows[f"{label}, no exporter"] = {"asyncio": without}
        rows[f"{label}, exporter + scrapes"] = {"asyncio": with_}
    table("Exporter: hot-path CPU with and without it (scraped every 50 ms)", "us/op", rows, 1e6, 3)
    for label in ops.values():
        ratio_line(f"{label} with / without", rows, f"{label}, exporter + scrapes", f"{label}, no exporter")
    exporter = Exporter()
    for name in "abc":
        exporter.add_pool(name, TaskPool())
        exporter.add_limiter(name, TokenBucketLimiter(100))
    scrape = repeat(lambda: _timed(exporter.text), times)
    print(f"  one scrape (3 pools, 3 limiters): {fmt(scrape, 1e3, 2)} ms")


def _scrape(exporter: Any, stop: threading.Event) -> None:
    while not stop.wait(0.05):
        exporter.text()


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (>= 5 for the report)")
    parser.add_argument("--only", choices=["pool", "limiter", "batch", "exporter"], nargs="*")
    args = parser.parse_args()
    sections = {
        "pool": bench_pool,
        "limiter": bench_limiter,
        "batch": bench_batch,
        "exporter": bench_exporter,
    }
    print(__doc__.strip().splitlines()[0])
    for name in args.only or sections:
        sections[name](args.repeat)


if __name__ == "__main__":
    main()
