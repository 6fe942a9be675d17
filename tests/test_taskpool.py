"""TaskPool: ordering, the concurrency bound, laziness, timeouts, failure and cancellation."""

from __future__ import annotations

import asyncio
import gc
import inspect
import random
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perflab import TaskPool, TaskPoolConfig, TaskPoolStats

from loops import VirtualClockLoop, run_on


class Probe:
    """Counts how many instrumented calls run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.started: list[object] = []
        self.cancelled: list[object] = []

    async def call(self, item: object, delay: float = 0.01, fail: bool = False) -> object:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.started.append(item)
        try:
            await asyncio.sleep(delay)
            if fail:
                raise ValueError(f"item {item} failed")
            return item
        except asyncio.CancelledError:
            self.cancelled.append(item)
            raise
        finally:
            self.running -= 1


def only_current_task_left() -> bool:
    return asyncio.all_tasks() == {asyncio.current_task()}


def assert_stats_balance(stats: TaskPoolStats) -> None:
    settled = stats.completed + stats.failed + stats.timed_out + stats.cancelled
    assert stats.submitted == settled + stats.in_flight + stats.queued


# --------------------------------------------------------------------------- map


async def test_map_returns_results_in_input_order() -> None:
    rng = random.Random(1)
    delays = [rng.uniform(0, 0.005) for _ in range(50)]

    async def work(i: int) -> int:
        await asyncio.sleep(delays[i])
        return i * i

    assert await TaskPool(max_concurrent=7).map(work, range(50)) == [i * i for i in range(50)]


@pytest.mark.parametrize("max_concurrent", [1, 3, 16])
async def test_map_never_exceeds_max_concurrent(max_concurrent: int) -> None:
    probe = Probe()
    pool = TaskPool(max_concurrent=max_concurrent)
    await pool.map(lambda i: probe.call(i, delay=0.001 * (i % 4)), range(60))
    assert probe.peak == max_concurrent
    assert pool.stats.peak_in_flight == max_concurrent
    assert_stats_balance(pool.stats)


async def test_map_of_empty_iterable_returns_empty_list() -> None:
    pool = TaskPool()
    assert await pool.map(Probe().call, []) == []
    assert await pool.map(Probe().call, iter(())) == []
    assert pool.stats.submitted == 0


async def test_map_consumes_the_input_lazily() -> None:
    pulled = 0
    probe = Probe()
    ahead = []

    def items():
        nonlocal pulled
        for i in range(200):
            pulled += 1
            ahead.append(pulled - (len(probe.started) - probe.running))
            yield i

    await TaskPool(max_concurrent=5).map(lambda i: probe.call(i, delay=0.0005), items())
    assert pulled == 200
    # Items taken but not finished never exceed the slots (+1: the one being taken).
    assert max(ahead) <= 5 + 1


async def test_map_of_a_million_items_keeps_tasks_and_memory_bounded() -> None:
    max_concurrent = 50
    live_tasks = []

    async def work(i: int) -> None:
        if i % 50_000 == 0:
            live_tasks.append(len(asyncio.all_tasks()))
        if i % 4 == 0:
            await asyncio.sleep(0)

    pool = TaskPool(max_concurrent=max_concurrent)
    tracemalloc.start()
    try:
        results = await pool.map(work, (i for i in range(1_000_000)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(results) == 1_000_000
    assert max(live_tasks) <= max_concurrent + 2  # workers + this test's task (+ slack 1)
    assert peak < 50 * 2**20, f"peak traced memory {peak / 2**20:.1f} MiB"
    assert pool.stats.completed == 1_000_000


async def test_map_failure_cancels_the_rest_and_leaves_no_task_running() -> None:
    probe = Probe()
    pool = TaskPool(max_concurrent=4)
    with pytest.raises(ValueError, match="item 5 failed"):
        await pool.map(lambda i: probe.call(i, delay=0.01 if i != 5 else 0.001, fail=i == 5), range(40))
    assert only_current_task_left()
    assert probe.running == 0
    assert probe.cancelled, "the calls running beside the failure were cancelled"
    assert len(probe.started) < 40, "no new calls started after the failure"
    stats = pool.stats
    assert stats.failed == 1 and stats.cancelled == len(probe.cancelled)
    assert_stats_balance(stats)


async def test_map_return_exceptions_puts_errors_in_place() -> None:
    probe = Probe()
    results = await TaskPool(max_concurrent=3).map(
        lambda i: probe.call(i, delay=0.001, fail=i % 3 == 0), range(9), return_exceptions=True
    )
    for i, result in enumerate(results):
        if i % 3 == 0:
            assert isinstance(result, ValueError) and str(result) == f"item {i} failed"
        else:
            assert result == i


async def test_map_raises_when_the_input_iterable_fails() -> None:
    def items():
        yield 1
        raise KeyError("source broke")

    with pytest.raises(KeyError, match="source broke"):
        await TaskPool(max_concurrent=2).map(Probe().call, items(), return_exceptions=True)
    assert only_current_task_left()


async def test_cancelling_the_caller_cancels_every_call_and_leaves_nothing_running() -> None:
    probe = Probe()
    pool = TaskPool(max_concurrent=5)
    caller = asyncio.create_task(pool.map(lambda i: probe.call(i, delay=10), range(100)))
    await asyncio.sleep(0.01)
    assert probe.running == 5
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert only_current_task_left()
    assert probe.running == 0 and len(probe.cancelled) == 5
    assert pool.stats.cancelled == 5 and pool.stats.in_flight == 0


async def test_a_worker_cancelled_from_outside_fails_the_call_instead_of_losing_an_item() -> None:
    pool = TaskPool(max_concurrent=2)
    started = asyncio.Event()

    async def work(i: int) -> int:
        started.set()
        await asyncio.sleep(10)
        return i

    caller = asyncio.create_task(pool.map(work, range(4)))
    await started.wait()
    outsiders = asyncio.all_tasks() - {asyncio.current_task(), caller}
    next(iter(outsiders)).cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert only_current_task_left()


async def test_fn_that_returns_no_awaitable_gets_a_clear_error() -> None:
    with pytest.raises(TypeError, match="fn must return an awaitable, got int"):
        await TaskPool().map(lambda i: i, range(3))


# --------------------------------------------------------------------------- timeouts


def test_a_call_past_its_timeout_fails_with_timeout_error_on_time(run_virtual) -> None:
    probe = Probe()

    async def main() -> tuple[list[object], float, TaskPoolStats]:
        loop = asyncio.get_running_loop()
        pool = TaskPool(max_concurrent=2, timeout_seconds=1.5)
        start = loop.time()
        delays = {0: 0.5, 1: 5.0, 2: 1.0, 3: 9.0}
        results = await pool.map(lambda i: probe.call(i, delay=delays[i]), range(4), return_exceptions=True)
        return results, loop.time() - start, pool.stats

    results, elapsed, stats = run_virtual(main())
    assert results[0] == 0 and results[2] == 2
    assert isinstance(results[1], TimeoutError) and "timeout_seconds=1.5" in str(results[1])
    assert isinstance(results[3], TimeoutError)
    assert probe.cancelled == [1, 3], "the overrunning calls saw CancelledError"
    # Item 1 starts at 0 and times out at 1.5; item 3 starts at 1.5 (after 0 and 2) and times out at 3.0.
    assert elapsed == pytest.approx(3.0, abs=0.002)
    assert stats.timed_out == 2 and stats.completed == 2


def test_timeout_without_return_exceptions_is_raised(run_virtual) -> None:
    async def main() -> None:
        await TaskPool(max_concurrent=3, timeout_seconds=0.2).map(
            lambda i: asyncio.sleep(1 if i == 2 else 0.01), range(6)
        )

    with pytest.raises(TimeoutError, match=r"timeout_seconds=0\.2"):
        run_virtual(main())


def test_timeout_none_lets_calls_run_as_long_as_they_need(run_virtual) -> None:
    async def main() -> list[object]:
        return await TaskPool(max_concurrent=2, timeout_seconds=None).map(
            lambda i: Probe().call(i, delay=3600), range(3)
        )

    assert run_virtual(main()) == [0, 1, 2]


def test_a_call_that_finishes_while_its_timeout_fires_is_not_lost(run_virtual) -> None:
    # The call ends exactly at its deadline: it either completes or times out, never both.
    async def main() -> tuple[list[object], TaskPoolStats]:
        pool = TaskPool(max_concurrent=4, timeout_seconds=1.0)
        results = await pool.map(lambda i: Probe().call(i, delay=1.0), range(8), return_exceptions=True)
        return results, pool.stats

    results, stats = run_virtual(main())
    assert len(results) == 8
    assert stats.completed + stats.timed_out == 8
    assert_stats_balance(stats)


# --------------------------------------------------------------------------- shared bound


async def test_concurrent_calls_share_one_bound_and_both_progress() -> None:
    probe = Probe()
    pool = TaskPool(max_concurrent=6)
    order: list[str] = []

    async def track(name: str, i: int) -> int:
        order.append(name)
        await probe.call(i, delay=0.002)
        return i

    a, b = await asyncio.gather(
        pool.map(lambda i: track("a", i), range(60)),
        pool.map(lambda i: track("b", i), range(60)),
    )
    assert a == b == list(range(60))
    assert probe.peak <= 6
    first_half = order[:60]
    assert first_half.count("b") >= 20, "the second call got slots before the first one finished"


async def test_map_and_submit_share_one_bound() -> None:
    probe = Probe()
    async with TaskPool(max_concurrent=4) as pool:
        futures = [await pool.submit(probe.call, i, 0.002) for i in range(20)]
        mapped = await pool.map(lambda i: probe.call(i, delay=0.002), range(20))
    assert [f.result() for f in futures] == mapped == list(range(20))
    assert probe.peak <= 4


# --------------------------------------------------------------------------- gather


async def test_gather_is_bounded_and_ordered() -> None:
    probe = Probe()
    pool = TaskPool(max_concurrent=3)
    results = await pool.gather(*(probe.call(i, delay=0.001 * (5 - i % 5)) for i in range(20)))
    assert results == list(range(20))
    assert probe.peak == 3
    assert pool.stats.max_queue_depth == 20


async def test_gather_failure_closes_the_coroutines_it_never_started() -> None:
    probe = Probe()
    coros = [probe.call(i, delay=0.001, fail=i == 0) for i in range(10)]
    with pytest.raises(ValueError, match="item 0 failed"):
        await TaskPool(max_concurrent=2).gather(*coros)
    assert all(inspect.getcoroutinestate(c) == inspect.CORO_CLOSED for c in coros)
    assert only_current_task_left()


async def test_gather_rejects_a_non_awaitable_and_closes_the_rest() -> None:
    coro = Probe().call(1)
    with pytest.raises(TypeError, match=r"awaitables\[1\] must be awaitable, got int"):
        await TaskPool().gather(coro, 5)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


# --------------------------------------------------------------------------- submit


async def test_submit_returns_futures_and_the_block_waits_for_all_of_them() -> None:
    probe = Probe()
    async with TaskPool(max_concurrent=3) as pool:
        futures = [await pool.submit(probe.call, i, 0.002) for i in range(12)]
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == list(range(12))
    assert probe.peak == 3
    assert_stats_balance(pool.stats)


async def test_submit_waits_while_max_queue_calls_are_queued() -> None:
    release = asyncio.Event()

    async def blocked(i: int) -> int:
        await release.wait()
        return i

    async with TaskPool(max_concurrent=1, max_queue=2) as pool:
        await pool.submit(blocked, 0)  # runs
        await pool.submit(blocked, 1)  # queued
        await pool.submit(blocked, 2)  # queued: the queue is full now
        third = asyncio.ensure_future(pool.submit(blocked, 3))
        await asyncio.sleep(0.01)
        assert not third.done(), "submit must wait while max_queue calls are queued"
        assert pool.stats.queued == 2
        release.set()
        fut = await third
    assert fut.result() == 3
    assert pool.stats.max_queue_depth == 2


async def test_a_failure_in_the_block_cancels_the_rest_and_is_raised_from_the_block() -> None:
    probe = Probe()
    body_reached_end = False
    with pytest.raises(ValueError, match="item 2 failed"):
        async with TaskPool(max_concurrent=2) as pool:
            for i in range(6):
                await pool.submit(probe.call, i, 0.01 if i != 2 else 0.001, i == 2)
            await asyncio.sleep(10)  # the failure interrupts this
            body_reached_end = True
    assert not body_reached_end
    assert only_current_task_left()
    assert pool.stats.failed == 1
    assert_stats_balance(pool.stats)


async def test_cancelling_a_submitted_future_cancels_its_call() -> None:
    probe = Probe()
    async with TaskPool(max_concurrent=2) as pool:
        running = await pool.submit(probe.call, "running", 10)
        queued_a = await pool.submit(probe.call, "a", 0.001)
        queued_b = await pool.submit(probe.call, "b", 10)
        await asyncio.sleep(0)
        running.cancel()
        queued_b.cancel()
    assert running.cancelled() and queued_b.cancelled() and queued_a.result() == "a"
    assert probe.cancelled == ["running"]
    assert pool.stats.cancelled == 2 and pool.stats.completed == 1


async def test_cancelling_the_block_cancels_its_work_and_propagates() -> None:
    probe = Probe()

    async def body() -> None:
        async with TaskPool(max_concurrent=2) as pool:
            for i in range(5):
                await pool.submit(probe.call, i, 10)
            await asyncio.sleep(10)

    task = asyncio.create_task(body())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert only_current_task_left()
    assert probe.running == 0


async def test_the_block_exception_propagates_and_work_is_cancelled() -> None:
    probe = Probe()
    with pytest.raises(KeyError):
        async with TaskPool(max_concurrent=1) as pool:
            running = await pool.submit(probe.call, 1, 10)
            await asyncio.sleep(0.01)
            never_started = await pool.submit(probe.call, 2, 10)
            raise KeyError("body")
    assert probe.cancelled == [1] and probe.started == [1]
    assert running.cancelled() and never_started.cancelled()
    assert pool.stats.cancelled == 2
    assert only_current_task_left()


async def test_submit_outside_a_block_is_refused() -> None:
    with pytest.raises(RuntimeError, match="async with pool"):
        await TaskPool().submit(Probe().call, 1)


async def test_a_pool_can_be_reused_after_a_failure() -> None:
    pool = TaskPool(max_concurrent=2)
    with pytest.raises(ValueError):
        await pool.map(lambda i: Probe().call(i, delay=0.001, fail=True), range(3))
    assert await pool.map(Probe().call, range(3)) == [0, 1, 2]


# --------------------------------------------------------------------------- randomized


@settings(max_examples=40, deadline=None)
@given(
    # In milliseconds; 15 (the timeout itself) is left out: there either outcome is right.
    delays=st.lists(st.integers(min_value=0, max_value=30).filter(lambda d: d != 15), max_size=40),
    failures=st.sets(st.integers(min_value=0, max_value=39)),
    max_concurrent=st.integers(min_value=1, max_value=8),
)
def test_randomized_map_keeps_order_bound_and_accounting(delays, failures, max_concurrent) -> None:
    probe = Probe()

    async def main() -> tuple[list[object], TaskPoolStats]:
        pool = TaskPool(max_concurrent=max_concurrent, timeout_seconds=0.015)
        results = await pool.map(
            lambda i: probe.call(i, delay=delays[i] / 1000, fail=i in failures),
            range(len(delays)),
            return_exceptions=True,
        )
        return results, pool.stats

    results, stats = run_on(VirtualClockLoop, main())
    assert len(results) == len(delays)
    for i, result in enumerate(results):
        if delays[i] > 15:
            assert isinstance(result, TimeoutError)
        elif i in failures:
            assert isinstance(result, ValueError)
        else:
            assert result == i
    assert probe.peak <= max_concurrent
    assert stats.submitted == len(delays) and stats.in_flight == 0 and stats.queued == 0
    assert_stats_balance(stats)


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_concurrent": 0}, ValueError, "max_concurrent must be >= 1, got 0"),
        ({"max_concurrent": 2.5}, TypeError, "max_concurrent must be an int, got float"),
        ({"max_concurrent": True}, TypeError, "max_concurrent must be an int, got bool"),
        ({"timeout_seconds": 0}, ValueError, "timeout_seconds must be > 0, got 0"),
        ({"timeout_seconds": -1.0}, ValueError, "timeout_seconds must be > 0, got -1"),
        ({"timeout_seconds": float("nan")}, ValueError, "timeout_seconds must be finite"),
        ({"timeout_seconds": "30"}, TypeError, "timeout_seconds must be a number, got str"),
        ({"max_queue": 0}, ValueError, "max_queue must be >= 1, got 0"),
    ],
)
def test_bad_settings_are_rejected_with_the_argument_named(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        TaskPoolConfig(**kwargs)
    with pytest.raises(error, match=message):
        TaskPool(**kwargs)


def test_config_and_overrides_combine() -> None:
    pool = TaskPool(TaskPoolConfig(max_concurrent=3), timeout_seconds=None)
    assert pool.config == TaskPoolConfig(max_concurrent=3, timeout_seconds=None)
    with pytest.raises(TypeError, match="config must be a TaskPoolConfig"):
        TaskPool({"max_concurrent": 3})  # type: ignore[arg-type]


async def test_bad_call_arguments_are_rejected() -> None:
    pool = TaskPool()
    with pytest.raises(TypeError, match="fn must be an async callable, got int"):
        await pool.map(3, range(3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="iterable must be iterable, got int"):
        await pool.map(Probe().call, 3)  # type: ignore[arg-type]


def test_stats_and_repr_are_plain_data() -> None:
    pool = TaskPool(max_concurrent=2)
    assert pool.stats.as_dict() == {
        "submitted": 0,
        "completed": 0,
        "failed": 0,
        "timed_out": 0,
        "cancelled": 0,
        "in_flight": 0,
        "queued": 0,
        "peak_in_flight": 0,
        "max_queue_depth": 0,
        "limit": 2,
    }
    assert "max_concurrent=2" in repr(pool)
    gc.collect()
