"""The profiler's overhead and its detection of a blocked loop, beside cProfile and pyinstrument.

Paired runs: each sample runs the bare workload and the profiled one back to back, so a
pair shares the machine's state; overhead = profiled / bare - 1, median [min-max] of the
pairs. Three workloads: call-heavy Python, C-extension-heavy (json round trips) and an
asyncio workload of 2,000 tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import time
from collections.abc import Callable

from pyinstrument import Profiler as Pyinstrument

from perflab import PerformanceProfiler
from perflab.profiling.rules import recommend

from common import fmt


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def call_heavy() -> None:
    fib(32)


DOC = {"symbol": "AAPL", "price": 187.23, "levels": [[187.2, 100], [187.1, 250]] * 5, "status": "ok"}


def c_extension_heavy() -> None:
    for _ in range(30_000):
        json.loads(json.dumps(DOC))


async def asyncio_tasks() -> None:
    async def one(i: int) -> int:
        total = 0
        for step in range(150):
            await asyncio.sleep(0)
            total += step * i
        return total

    await asyncio.gather(*(one(i) for i in range(2000)))


def run_sync(work: Callable[[], None], mode: str) -> float:
    started = time.perf_counter()
    if mode == "bare":
        work()
    elif mode == "cProfile":
        profile = cProfile.Profile()
        profile.enable()
        work()
        profile.disable()
    elif mode == "pyinstrument":
        sampler = Pyinstrument(interval=0.001)
        sampler.start()
        work()
        sampler.stop()
    else:
        with PerformanceProfiler(trace_memory=mode == "perflab trace_memory", deep=mode == "perflab deep"):
            work()
    return time.perf_counter() - started


def run_async(mode: str) -> float:
    async def main() -> float:
        started = time.perf_counter()
        if mode == "bare":
            await asyncio_tasks()
        elif mode == "cProfile":
            profile = cProfile.Profile()
            profile.enable()
            await asyncio_tasks()
            profile.disable()
        elif mode == "pyinstrument":
            sampler = Pyinstrument(interval=0.001, async_mode="enabled")
            sampler.start()
            await asyncio_tasks()
            sampler.stop()
        else:
            async with PerformanceProfiler(
                trace_memory=mode == "perflab trace_memory", deep=mode == "perflab deep"
            ):
                await asyncio_tasks()
        return time.perf_counter() - started

    return asyncio.run(main())


MODES = ["perflab default", "perflab trace_memory", "perflab deep", "cProfile", "pyinstrument"]


def overheads(pairs: int, other_pairs: int) -> None:
    workloads: dict[str, Callable[[str], float]] = {
        "call-heavy (fib 32)": lambda mode: run_sync(call_heavy, mode),
        "C-extension (json x30k)": lambda mode: run_sync(c_extension_heavy, mode),
        "asyncio, 2,000 tasks": run_async,
    }
    print(
        f"\nOverhead vs the bare workload (%, median [min-max] of {pairs} paired runs for perflab's "
        f"default mode, {other_pairs} for the others)"
    )
    print(f"  {'':22s}" + "".join(f"{name:>26s}" for name in workloads))
    bare_times = {}
    table = {mode: {} for mode in MODES}
    for name, run in workloads.items():
        run("bare")  # warm-up
        for mode in MODES:
            run(mode)
            ratios, bares = [], []
            for i in range(pairs if mode == "perflab default" else other_pairs):
                if i % 2:  # alternate the order within a pair
                    profiled, bare = run(mode), run("bare")
                else:
                    bare, profiled = run("bare"), run(mode)
                ratios.append(profiled / bare - 1)
                bares.append(bare)
            table[mode][name] = ratios
            bare_times.setdefault(name, []).extend(bares)
    for mode in MODES:
        print(f"  {mode:22s}" + "".join(f"{fmt(table[mode][n], 100, 1):>26s}" for n in workloads))
    print(f"  {'(bare workload, s)':22s}" + "".join(f"{fmt(bare_times[n], 1, 3):>26s}" for n in workloads))


def start_stop(times: int) -> None:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        for _ in range(200):
            profiler = PerformanceProfiler()
            profiler.start_profiling()
            profiler.stop_profiling()
        samples.append((time.perf_counter() - started) / 200)
    print(f"\nstart_profiling + stop_profiling: {fmt(samples, 1e6, 1)} us")


def detection(tries: int, block: float) -> None:
    async def once() -> tuple[bool, float, float, float]:
        async def background() -> None:
            while True:
                await asyncio.sleep(0.001)

        chatter = asyncio.create_task(background())
        async with PerformanceProfiler() as profiler:
            await asyncio.sleep(0.02)
            time.sleep(block)  # the planted blocking call
            await asyncio.sleep(0.02)
        chatter.cancel()
        started = time.perf_counter()
        found = any(r.metric == "loop_stall_max_ms" for r in recommend(profiler.result))
        advice_seconds = time.perf_counter() - started
        return found, profiler.result.loop_stall_max_ms, profiler.result.loop_lag_max_ms, advice_seconds

    results = [asyncio.run(once()) for _ in range(tries)]
    found = sum(r[0] for r in results)
    print(
        f"\nA {block * 1e3:.0f} ms blocking call inside async with: detected {found}/{tries} "
        f"({found / tries:.0%}); stall {fmt([r[1] for r in results], 1, 1)} ms, "
        f"lateness {fmt([r[2] for r in results], 1, 1)} ms; "
        f"recommendations computed in {fmt([r[3] for r in results], 1e3, 3)} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=10, help="paired runs for the default mode (>= 10)")
    parser.add_argument("--other-pairs", type=int, default=5, help="paired runs for the other modes")
    args = parser.parse_args()
    print(__doc__.strip().splitlines()[0])
    start_stop(7)
    detection(40, 0.1)
    overheads(args.pairs, args.other_pairs)


if __name__ == "__main__":
    main()
