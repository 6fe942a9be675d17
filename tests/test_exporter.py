"""The Prometheus exporter: the primitives' stats at scrape time, histograms that add up,
clear refusals, and an HTTP endpoint that never blocks the loop."""

from __future__ import annotations

import asyncio
import math
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from perflab import BatchProcessor, BufferedWriter, TaskPool, TokenBucketLimiter
from perflab.aio.histogram import Histogram
from perflab.exporter import METRIC_NAMES, Exporter

from loops import VirtualClockLoop, run_on


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, metric: str, /, **labels: str) -> float:
    return samples(text)[(metric, tuple(sorted(labels.items())))]


def test_histogram_buckets_are_cumulative_and_quantiles_interpolate() -> None:
    histogram = Histogram((1.0, 2.0, 4.0))
    for v in (0.5, 1.0, 1.5, 3.0, 9.0):
        histogram.observe(v)
    snap = histogram.snapshot()
    assert snap.cumulative == [(1.0, 2), (2.0, 3), (4.0, 4), (math.inf, 5)]
    assert snap.count == 5 and snap.sum == pytest.approx(15.0)
    assert snap.quantile(0.5) == pytest.approx(1.5)  # rank 2.5 lies halfway in (1, 2]
    assert snap.quantile(1.0) == 4.0  # the +Inf bucket answers its lower bound, as PromQL
    assert math.isnan(Histogram().snapshot().quantile(0.5))
    with pytest.raises(ValueError, match="bounds must be a non-empty increasing sequence"):
        Histogram((2.0, 1.0))


async def test_a_scrape_reads_every_primitive_as_its_stats_say(tmp_path: Path) -> None:
    exporter = Exporter()
    pool = TaskPool(max_concurrent=2)
    limiter = TokenBucketLimiter(rate=1000, burst_size=1)

    async def call(i: int) -> int:
        async with limiter:
            return i

    await pool.gather(*(call(i) for i in range(6)))
    async with BatchProcessor(_sink, batch_size=4, flush_interval=None) as batches:
        for i in range(10):
            await batches.add(i)
    with BufferedWriter(tmp_path / "log.jsonl") as writer:
        writer.write({"a": 1})
    exporter.add_pool("p", pool)
    exporter.add_limiter("l", limiter)
    exporter.add_batcher("b", batches)
    exporter.add_writer("w", writer)
    exporter.watch_loop("main", interval=0.01)
    await asyncio.sleep(0.05)
    text = exporter.text()
    assert all(f"# TYPE {name.removesuffix('_total')}" in text for name in METRIC_NAMES)
    stats = pool.stats
    assert value(text, "perflab_pool_submitted_total", name="p") == stats.submitted == 6
    assert value(text, "perflab_pool_calls_total", name="p", outcome="completed") == 6
    assert value(text, "perflab_pool_max_concurrent", name="p") == 2
    # gather queued 6 calls for 2 slots: all 6 waited (some ~0 s) and are counted once each
    assert value(text, "perflab_pool_queue_wait_seconds_count", name="p") == 6
    assert value(text, "perflab_limiter_acquired_total", name="l") == limiter.stats.acquired == 6
    waited = limiter.stats.waited
    assert value(text, "perflab_limiter_waited_total", name="l") == waited
    assert value(text, "perflab_limiter_wait_seconds_count", name="l") == waited
    assert value(text, "perflab_limiter_wait_seconds_bucket", name="l", le="+Inf") == waited
    assert value(text, "perflab_batch_items_count", name="b") == 3  # batches of 4, 4 and 2
    assert value(text, "perflab_batch_items_sum", name="b") == 10
    assert value(text, "perflab_batch_flushes_total", name="b", reason="size") == 2
    assert value(text, "perflab_writer_records_total", name="w") == 1
    assert value(text, "perflab_writer_bytes_total", name="w") == writer.stats.bytes_written
    assert value(text, "perflab_event_loop_lag_seconds_count", name="main") >= 2


async def _sink(batch: list) -> None:
    await asyncio.sleep(0)


def test_a_blocked_loop_shows_in_the_lag_histogram() -> None:
    async def main() -> Exporter:
        exporter = Exporter()
        monitor = exporter.watch_loop(interval=0.01)
        await asyncio.sleep(0.02)
        time.sleep(0.12)  # the planted block
        await asyncio.sleep(0.03)
        monitor.stop()
        return exporter

    text = asyncio.run(main()).text()
    slow = value(text, "perflab_event_loop_lag_seconds_count", name="main") - value(
        text, "perflab_event_loop_lag_seconds_bucket", name="main", le="0.1"
    )
    assert slow >= 1


def test_registration_refuses_a_wrong_kind_or_a_taken_name() -> None:
    exporter = Exporter()
    pool = TaskPool()
    exporter.add_pool("p", pool)
    exporter.add_pool("p", pool)  # the same pool again: fine
    with pytest.raises(ValueError, match="a pool is already registered as 'p': pass replace=True"):
        exporter.add_pool("p", TaskPool())
    exporter.add_pool("p", TaskPool(max_concurrent=3), replace=True)
    assert value(exporter.text(), "perflab_pool_max_concurrent", name="p") == 3
    with pytest.raises(TypeError, match="limiter must be a TokenBucketLimiter, got TaskPool"):
        exporter.add_limiter("l", pool)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be a string"):
        exporter.add_pool(3, pool)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name must not be empty"):
        exporter.add_pool("", pool)
    exporter.remove("p")
    with pytest.raises(KeyError, match="nothing is registered as 'p'"):
        exporter.remove("p")


def test_the_endpoint_serves_from_a_thread_while_the_loop_is_busy() -> None:
    async def main() -> tuple[int, str]:
        exporter = Exporter()
        pool = TaskPool(max_concurrent=4)
        exporter.add_pool("p", pool)
        port = exporter.serve(0)
        try:

            async def slow(i: int) -> None:
                await asyncio.sleep(0.5)

            work = asyncio.ensure_future(pool.map(slow, range(8)))
            await asyncio.sleep(0.01)
            url = f"http://127.0.0.1:{port}/metrics"
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
            await work
            return port, text
        finally:
            exporter.close()

    port, text = asyncio.run(main())
    assert port > 0
    assert value(text, "perflab_pool_in_flight", name="p") == 4  # scraped mid-run


def test_a_stats_read_never_changes_the_primitives() -> None:
    async def main() -> tuple[object, object]:
        limiter = TokenBucketLimiter(rate=100, burst_size=1)
        exporter = Exporter()
        exporter.add_limiter("l", limiter)
        for _ in range(3):
            await limiter.acquire()
        before = limiter.stats
        exporter.text()
        return before, limiter.stats

    before, after = run_on(VirtualClockLoop, main())
    assert before == after
