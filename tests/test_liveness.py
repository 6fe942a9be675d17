"""Nothing hangs, and state that must outlive an event loop does: TaskPool under
cancellation of every task, KeyboardInterrupt/SystemExit in a call, a nested map; the
limiter's level across ``asyncio.run`` calls and its refusal of two loops at once; the
BatchProcessor's linger in a new loop, its failures told to every caller, and stats read
from another thread (an exporter's scrape) while the loop works. Timing bounds here are
lower bounds or generous sanity bounds only."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pandas as pd
import pytest

from perflab import BatchProcessor, TaskPool, TokenBucketLimiter

# --------------------------------------------------------------------------- TaskPool


async def never_done(_: Any = None) -> None:
    await asyncio.sleep(3600)


async def cancel_everything_but_me() -> None:
    me = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is not me:
            task.cancel()


@pytest.mark.parametrize("how", ["map", "gather", "submit"])
def test_cancelling_every_task_before_a_worker_first_runs_never_hangs(how: str) -> None:
    async def main() -> None:
        pool = TaskPool(max_concurrent=4)

        async def use_pool() -> None:
            if how == "map":
                await pool.map(never_done, range(20))
            elif how == "gather":
                await pool.gather(*(never_done() for _ in range(20)))
            else:
                async with pool:
                    for _ in range(8):
                        await pool.submit(never_done)
                    await asyncio.sleep(3600)

        call = asyncio.create_task(use_pool())
        await asyncio.sleep(0)  # the call started: its workers exist but have not run yet
        await cancel_everything_but_me()
        done, _ = await asyncio.wait([call], timeout=10)
        assert call in done, "the pool call hangs after every task was cancelled"
        assert call.cancelled()
        assert pool.stats.in_flight == 0
        await asyncio.sleep(0)
        assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing of the pool runs on
        # And a later cancel of a stuck-looking call is never swallowed: the pool works again.
        assert await pool.map(asyncio.sleep, [0, 0, 0]) == [None, None, None]

    asyncio.run(main())


@pytest.mark.parametrize("error", ["KeyboardInterrupt", "SystemExit"])
@pytest.mark.parametrize("how", ["map", "submit"])
def test_keyboard_interrupt_inside_a_pool_call_ends_the_run_and_leaves_nothing_in_flight(
    error: str, how: str
) -> None:
    child = textwrap.dedent(
        f"""
        import asyncio
        from perflab import TaskPool
        pool = TaskPool(max_concurrent=4)

        async def call(i):
            await asyncio.sleep(0.01)
            if i == 5:
                raise {error}
            await asyncio.sleep(0.05)

        async def main():
            if "{how}" == "map":
                await pool.map(call, range(50))
            else:
                async with pool:
                    for i in range(50):
                        await pool.submit(call, i)

        try:
            asyncio.run(main())
        except BaseException as exc:
            print(type(exc).__name__, pool.stats.in_flight, pool.stats.failed)
        """
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    name, in_flight, failed = done.stdout.split()
    assert name == error
    assert int(in_flight) == 0 and int(failed) == 1


def test_a_map_nested_in_a_call_of_the_same_pool_is_refused_naming_the_cause() -> None:
    async def main() -> None:
        pool = TaskPool(max_concurrent=2)

        async def outer(i: int) -> list[int]:
            return await pool.map(asyncio.sleep, [0, 0])

        with pytest.raises(RuntimeError, match=r"called from a call this pool is running.*second TaskPool"):
            await asyncio.wait_for(pool.map(outer, range(4)), 10)

        async def outer_gather(i: int) -> list[Any]:
            return await pool.gather(asyncio.sleep(0))

        with pytest.raises(RuntimeError, match="gather"):
            await asyncio.wait_for(pool.map(outer_gather, range(4)), 10)
        # A second pool for the inner work is the way.
        inner = TaskPool(max_concurrent=2)

        async def outer_ok(i: int) -> int:
            return len(await inner.map(asyncio.sleep, [0, 0]))

        assert await pool.map(outer_ok, range(4)) == [2, 2, 2, 2]

    asyncio.run(main())


def test_map_iterates_its_input_and_never_trusts_len() -> None:
    class Liar:
        def __len__(self) -> int:
            return 0

        def __iter__(self) -> Any:
            return iter(range(7))

    frame = pd.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6], "c": [7, 8, 9], "d": [0, 0, 0]})

    async def echo(x: Any) -> Any:
        await asyncio.sleep(0)
        return x

    async def main() -> None:
        pool = TaskPool(max_concurrent=3)
        assert await pool.map(echo, Liar()) == list(range(7))
        # A DataFrame's len counts rows (3); iterating it yields its columns (4), as gather sees.
        assert await pool.map(echo, frame) == list(frame)
        assert await pool.gather(*(echo(c) for c in frame)) == ["a", "b", "c", "d"]

    asyncio.run(main())


# --------------------------------------------------------------------------- limiter


def test_the_limiters_level_survives_a_new_event_loop() -> None:
    limiter = TokenBucketLimiter(rate=10, burst_size=1)
    started = time.monotonic()
    for _ in range(5):
        asyncio.run(limiter.acquire())
    # Four tokens after the first must wait 0.1 s each: a bucket refilled by every new loop
    # finished in milliseconds. (A lower bound: noise can only make it slower.)
    assert time.monotonic() - started >= 0.39
    assert limiter.stats.acquired == 5


def one_loop_holds_the_limiter_while_another_tries() -> tuple[str, TokenBucketLimiter]:
    """Thread one runs a loop that keeps acquiring; thread two tries once meanwhile."""
    limiter = TokenBucketLimiter(rate=20, burst_size=1)
    first_running = threading.Event()
    outcome: dict[str, str] = {}

    def first() -> None:
        async def main() -> None:
            await limiter.acquire()
            first_running.set()
            for _ in range(6):
                await limiter.acquire()

        asyncio.run(main())

    def second() -> None:
        first_running.wait(10)
        try:
            asyncio.run(limiter.acquire())
            outcome["second"] = "granted"
        except RuntimeError as exc:
            outcome["second"] = str(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcome["second"], limiter


def test_two_loops_at_once_are_refused_every_time() -> None:
    for _ in range(5):
        second, limiter = one_loop_holds_the_limiter_while_another_tries()
        assert "still running" in second, second
        assert limiter.stats.acquired == 7  # the first loop's, none for the refused one


# --------------------------------------------------------------------------- BatchProcessor


def test_a_processor_that_empties_its_batch_and_fails_loses_nothing() -> None:
    async def drain_then_fail(batch: list[int]) -> None:
        batch.clear()
        raise OSError("sink down")

    async def main() -> BatchProcessor[int]:
        bp = BatchProcessor(
            drain_then_fail, batch_size=3, flush_interval=None, max_retries=1, retry_backoff=0
        )
        for i in range(3):
            await bp.add(i)
        with pytest.raises(OSError, match="sink down"):
            await bp.flush()
        return bp

    bp = asyncio.run(main())
    assert bp.failed_batches == [[0, 1, 2]]  # the retry got the items too, not an empty list


def test_every_caller_whose_items_failed_hears_of_it() -> None:
    async def failing(batch: list[str]) -> None:
        await asyncio.sleep(0.01)
        raise OSError(f"sink refused {batch}")

    async def main() -> list[str]:
        bp = BatchProcessor(failing, batch_size=100, flush_interval=None)

        async def producer(name: str) -> str:
            await bp.add(name)
            try:
                await bp.flush()
            except OSError:
                return "heard"
            return "not told"

        return list(await asyncio.gather(producer("a"), producer("b")))

    assert asyncio.run(main()) == ["heard", "heard"]


def test_items_carried_into_a_new_loop_are_flushed_by_the_linger_there() -> None:
    processed: list[int] = []

    async def sink(batch: list[int]) -> None:
        processed.extend(batch)

    bp = BatchProcessor(sink, batch_size=100, flush_interval=0.05)

    async def first_run() -> None:
        for i in range(3):
            await bp.add(i)  # the run ends before the linger fires

    async def second_run() -> None:
        await bp.add(3)  # the fast path: the batch was already started
        await asyncio.sleep(0.5)  # ten lingers: no close() needed for the items to go out
        assert processed == [0, 1, 2, 3]
        assert bp.stats.flush_reasons["time"] == 1
        await bp.close()

    asyncio.run(first_run())
    assert processed == []
    asyncio.run(second_run())


def test_stats_read_from_another_thread_while_the_loop_works_never_fail() -> None:
    async def sink(batch: list[int]) -> None:
        await asyncio.sleep(0)

    bp: BatchProcessor[int] = BatchProcessor(sink, batch_size=7, flush_interval=0.001)
    limiter = TokenBucketLimiter(rate=20_000, burst_size=50)
    pool = TaskPool(max_concurrent=8)
    stop = threading.Event()
    errors: list[BaseException] = []
    scrapes = 0

    def scrape() -> None:
        nonlocal scrapes
        while not stop.is_set():
            try:
                stats = bp.stats
                assert stats.pending_items >= 0
                limiter.stats  # noqa: B018
                pool.stats  # noqa: B018
                bp.batch_size_histogram()
                scrapes += 1
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    async def work(i: int) -> None:
        await limiter.acquire()
        await bp.add(i)

    async def main() -> None:
        deadline = time.monotonic() + 1.5
        i = 0
        while time.monotonic() < deadline:
            await pool.map(work, range(i, i + 500))
            i += 500
        await bp.close()

    thread = threading.Thread(target=scrape)
    thread.start()
    try:
        asyncio.run(main())
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[0]
    assert scrapes > 100
    assert bp.stats.pending_items == 0
