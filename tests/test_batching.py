"""BatchProcessor: triggers, linger from the first item, order, retries, failures, no drops."""

from __future__ import annotations

import asyncio
import gc
import random
import statistics
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perflab import BatchProcessor, BatchStats
from perflab.aio.batching import MAX_PENDING_BATCHES

from loops import VirtualClockLoop, run_on


class Sink:
    """Records each batch with the loop time it arrived; optionally slow or failing."""

    def __init__(self, delay: float = 0.0, failures: int = 0) -> None:
        self.batches: list[list[object]] = []
        self.times: list[float] = []
        self.calls = 0
        self.delay = delay
        self.failures = failures  # fail this many calls first
        self.active = 0
        self.peak_active = 0

    async def __call__(self, batch: list[object]) -> None:
        self.calls += 1
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.failures > 0:
                self.failures -= 1
                raise ConnectionError(f"sink down (call {self.calls})")
            self.batches.append(list(batch))
            self.times.append(asyncio.get_running_loop().time())
        finally:
            self.active -= 1


# --------------------------------------------------------------------------- triggers


async def test_a_full_batch_is_flushed_at_batch_size() -> None:
    sink = Sink()
    async with BatchProcessor(sink, batch_size=3, flush_interval=None) as bp:
        for i in range(8):
            await bp.add(i)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert sink.batches == [[0, 1, 2], [3, 4, 5]]
    assert sink.batches == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert bp.stats.flush_reasons == {"size": 2, "bytes": 0, "time": 0, "explicit": 0, "close": 1}


async def test_a_batch_is_flushed_when_its_bytes_reach_the_limit() -> None:
    sink = Sink()
    async with BatchProcessor(sink, batch_size=100, flush_interval=None, max_batch_bytes=10) as bp:
        for item in [b"abcd", b"efgh", b"ij", b"k", "é" * 6, {"a": 1}]:
            await bp.add(item)
    # 4+4+2 = 10 bytes seals; "é"*6 is 12 UTF-8 bytes (alone past the limit); {"a":1} is 7.
    assert sink.batches == [[b"abcd", b"efgh", b"ij"], [b"k", "é" * 6], [{"a": 1}]]
    assert bp.stats.flush_reasons["bytes"] == 2 and bp.stats.flush_reasons["close"] == 1


async def test_byte_limit_needs_sizeable_items() -> None:
    bp = BatchProcessor(Sink(), max_batch_bytes=10)
    with pytest.raises(TypeError, match="max_batch_bytes needs items that are bytes, str or JSON"):
        await bp.add(object())
    await bp.close()


def test_linger_counts_from_the_first_item_of_the_batch(run_virtual) -> None:
    async def main() -> tuple[Sink, float]:
        loop = asyncio.get_running_loop()
        sink = Sink()
        start = loop.time()
        async with BatchProcessor(sink, batch_size=100, flush_interval=0.5) as bp:
            await bp.add("a")
            await asyncio.sleep(0.3)
            await bp.add("b")  # does not restart the clock
            await asyncio.sleep(0.4)  # t = 0.7: the first batch went at 0.5
            await bp.add("c")
            await asyncio.sleep(1.0)
        return sink, start

    sink, start = run_virtual(main())
    assert sink.batches == [["a", "b"], ["c"]]
    assert [t - start for t in sink.times] == pytest.approx([0.5, 1.2])


@pytest.mark.slow
async def test_linger_fires_on_time_on_the_real_clock() -> None:
    loop = asyncio.get_running_loop()
    late = []
    for _ in range(15):
        arrived = loop.create_future()

        async def sink(batch: list[object], arrived=arrived) -> None:
            arrived.set_result(time.perf_counter())

        bp = BatchProcessor(sink, batch_size=1000, flush_interval=0.02)
        added = time.perf_counter()
        await bp.add(1)
        late.append(await arrived - added - 0.02)
        await bp.close()
    assert min(late) >= -0.0005, "never before flush_interval"
    assert statistics.median(late) < 0.010, f"median lateness {statistics.median(late) * 1e3:.2f} ms"


async def test_flush_sends_what_is_buffered_and_waits_for_it() -> None:
    sink = Sink(delay=0.01)
    async with BatchProcessor(sink, batch_size=10, flush_interval=None) as bp:
        await bp.add(1)
        await bp.add(2)
        await bp.flush()
        assert sink.batches == [[1, 2]]
        await bp.flush()  # nothing buffered: a no-op
    assert bp.stats.flush_reasons["explicit"] == 1 and bp.stats.batches == 1


# --------------------------------------------------------------------------- order and backpressure


def test_batches_reach_the_processor_one_at_a_time_in_order(run_virtual) -> None:
    async def main() -> Sink:
        rng = random.Random(3)
        sink = Sink()

        async def slow_sink(batch: list[object]) -> None:
            await asyncio.sleep(rng.uniform(0, 0.01))
            await sink(batch)

        async with BatchProcessor(slow_sink, batch_size=7, flush_interval=0.005) as bp:
            for i in range(300):
                await bp.add(i)
                if i % 11 == 0:
                    await asyncio.sleep(0.004)
        return sink

    sink = run_virtual(main())
    assert [item for batch in sink.batches for item in batch] == list(range(300))
    assert sink.peak_active == 1


def test_add_waits_when_the_sink_falls_behind(run_virtual) -> None:
    async def main() -> tuple[int, Sink]:
        sink = Sink(delay=1.0)
        most_sealed = 0
        async with BatchProcessor(sink, batch_size=2, flush_interval=None) as bp:
            for i in range(20):
                await bp.add(i)
                most_sealed = max(most_sealed, len(bp._sealed))
        return most_sealed, sink

    most_sealed, sink = run_virtual(main())
    assert most_sealed <= MAX_PENDING_BATCHES
    assert len(sink.batches) == 10


# --------------------------------------------------------------------------- failures


def test_a_failing_processor_is_retried_with_backoff(run_virtual) -> None:
    async def main() -> tuple[Sink, float, BatchStats]:
        loop = asyncio.get_running_loop()
        sink = Sink(failures=2)
        start = loop.time()
        async with BatchProcessor(sink, batch_size=2, max_retries=2, retry_backoff=0.1) as bp:
            await bp.add("x")
            await bp.add("y")
        return sink, loop.time() - start, bp.stats

    sink, elapsed, stats = run_virtual(main())
    assert sink.batches == [["x", "y"]] and sink.calls == 3
    assert elapsed == pytest.approx(0.1 + 0.2)  # exponential backoff
    assert stats.retries == 2 and stats.failed_batches == 0


async def test_a_batch_that_still_fails_is_kept_and_raised_from_the_next_call() -> None:
    sink = Sink(failures=1)
    bp = BatchProcessor(sink, batch_size=2, flush_interval=None)
    await bp.add(1)
    await bp.add(2)  # sealed; fails in the background
    await asyncio.sleep(0.01)
    assert bp.failed_batches == [[1, 2]]
    with pytest.raises(ConnectionError, match="sink down"):
        await bp.add(3)
    await bp.add(3)  # reported once; the processor carries on
    await bp.close()
    assert sink.batches == [[3]]
    stats = bp.stats
    assert stats.failed_batches == 1 and stats.failed_items == 2 and stats.items == 1


async def test_close_raises_a_failure_it_flushed() -> None:
    bp = BatchProcessor(Sink(failures=5), batch_size=10)
    await bp.add("lost?")
    with pytest.raises(ConnectionError):
        await bp.close()
    assert bp.failed_batches == [["lost?"]]
    await bp.close()  # idempotent, and the error was already reported


async def test_an_exception_in_the_block_is_kept_with_a_note_about_the_flush() -> None:
    bp = BatchProcessor(Sink(failures=1), batch_size=10)
    with pytest.raises(KeyError) as caught:
        async with bp:
            await bp.add(1)
            raise KeyError("body")
    assert any("close() also failed" in note for note in caught.value.__notes__)
    assert bp.failed_batches == [[1]]


async def test_cancelling_close_stops_the_flusher_and_the_next_close_processes_every_item() -> None:
    sink = Sink(delay=10)
    bp = BatchProcessor(sink, batch_size=2, flush_interval=None)
    for i in range(5):
        await bp.add(i)
    closing = asyncio.create_task(bp.close())
    await asyncio.sleep(0.01)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert bp.failed_batches == [] and bp.stats.pending_items == 5  # kept, not failed
    sink.delay = 0
    await bp.close()  # retries what the cancelled close left
    assert [item for batch in sink.batches for item in batch] == [0, 1, 2, 3, 4]
    assert bp.stats.pending_items == 0 and bp.failed_batches == []
    await bp.close()  # nothing left: returns at once


def test_items_added_in_one_asyncio_run_are_processed_by_close_in_the_next() -> None:
    sink = Sink()
    bp = BatchProcessor(sink, batch_size=10, flush_interval=60)

    async def add(*items: object) -> None:
        for item in items:
            await bp.add(item)
        await asyncio.sleep(0.01)  # a sealed batch reaches the (slow) sink, then the loop ends

    asyncio.run(add("pending"))
    asyncio.run(bp.close())
    assert sink.batches == [["pending"]] and bp.failed_batches == []

    sink = Sink(delay=5)
    bp = BatchProcessor(sink, batch_size=10, flush_interval=None)
    asyncio.run(add(*range(12)))  # one batch cut mid-processing, two items buffered
    sink.delay = 0
    asyncio.run(bp.close())
    assert [item for batch in sink.batches for item in batch] == list(range(12))
    assert bp.stats.pending_items == 0


def test_a_processor_in_use_by_a_running_loop_in_another_thread_is_refused() -> None:
    import threading

    bp = BatchProcessor(Sink(delay=0.5), batch_size=1)
    started, done = threading.Event(), threading.Event()

    async def hold() -> None:
        await bp.add(1)
        started.set()
        await asyncio.sleep(0.3)

    thread = threading.Thread(target=lambda: asyncio.run(hold()))
    thread.start()
    started.wait(10)
    try:
        with pytest.raises(RuntimeError, match="still running"):
            asyncio.run(bp.add(2))
    finally:
        thread.join(10)
        done.set()
    asyncio.run(bp.close())


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    items=st.integers(min_value=0, max_value=300),
    batch_size=st.integers(min_value=1, max_value=25),
    max_retries=st.integers(min_value=0, max_value=3),
    failure_rate=st.floats(min_value=0.0, max_value=0.8),
)
def test_a_flaky_processor_never_loses_or_duplicates_an_item(
    seed, items, batch_size, max_retries, failure_rate
) -> None:
    rng = random.Random(seed)
    delivered: list[int] = []

    async def flaky(batch: list[int]) -> None:
        await asyncio.sleep(rng.uniform(0, 0.003))
        if rng.random() < failure_rate:
            raise ConnectionError("flaky")
        delivered.extend(batch)

    async def main() -> tuple[list[list[int]], int]:
        errors = 0
        bp = BatchProcessor(flaky, batch_size=batch_size, flush_interval=0.002, max_retries=max_retries)
        for i in range(items):
            while True:
                try:
                    await bp.add(i)
                    break
                except ConnectionError:
                    errors += 1  # reported; the item was not added, so add it again
            if rng.random() < 0.05:
                await asyncio.sleep(0.002)
        try:
            await bp.close()
        except ConnectionError:
            errors += 1
        return bp.failed_batches, errors

    failed, errors = run_on(VirtualClockLoop, main())
    failed_items = [item for batch in failed for item in batch]
    assert sorted(delivered + failed_items) == list(range(items))  # each exactly once
    assert delivered == sorted(delivered)  # in order
    assert (errors > 0) == bool(failed)


def test_an_unclosed_processor_with_items_warns_when_collected() -> None:
    async def main() -> BatchProcessor[int]:
        bp = BatchProcessor(Sink(delay=10), batch_size=1)
        await bp.add(1)
        return bp

    bp = run_on(VirtualClockLoop, main())
    with pytest.warns(ResourceWarning, match="1 unprocessed item"):
        del bp
        gc.collect()


# --------------------------------------------------------------------------- lifecycle and arguments


async def test_using_a_closed_processor_raises() -> None:
    bp = BatchProcessor(Sink())
    await bp.close()
    with pytest.raises(RuntimeError, match="BatchProcessor is closed: add"):
        await bp.add(1)
    with pytest.raises(RuntimeError, match="BatchProcessor is closed: flush"):
        await bp.flush()
    await bp.close()


def test_item_wait_is_measured_from_add_to_processed(run_virtual) -> None:
    async def main() -> BatchStats:
        async with BatchProcessor(Sink(delay=0.1), batch_size=100, flush_interval=0.5) as bp:
            await bp.add(1)
            await asyncio.sleep(1)
        return bp.stats

    stats = run_virtual(main())
    assert stats.max_item_wait_seconds == pytest.approx(0.6)
    assert stats.mean_batch_size == 1 and stats.pending_items == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),
        ({"batch_size": 1.5}, TypeError, "batch_size must be an int, got float"),
        ({"flush_interval": 0}, ValueError, "flush_interval must be > 0, got 0"),
        ({"flush_interval": "1"}, TypeError, "flush_interval must be a number, got str"),
        ({"max_batch_bytes": 0}, ValueError, "max_batch_bytes must be >= 1, got 0"),
        ({"max_retries": -1}, ValueError, "max_retries must be >= 0, got -1"),
        ({"retry_backoff": -0.5}, ValueError, "retry_backoff must be >= 0, got -0.5"),
    ],
)
def test_bad_settings_are_rejected_with_the_argument_named(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        BatchProcessor(Sink(), **kwargs)


def test_processor_must_be_callable() -> None:
    with pytest.raises(TypeError, match=r"processor must be an async callable \(async def\), got list"):
        BatchProcessor([])  # type: ignore[arg-type]
