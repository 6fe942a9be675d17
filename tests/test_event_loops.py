"""The primitives work on asyncio and uvloop, and outlive the loop they were made in
(a notebook creates them in one cell and uses them in later ones)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from perflab import BatchProcessor, TaskPool, TokenBucketLimiter

from loops import run_on

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


async def collector(pool: TaskPool, limiter: TokenBucketLimiter, sink: list[list[int]]) -> list[int]:
    async def store(batch: list[int]) -> None:
        await asyncio.sleep(0.001)
        sink.append(batch)

    async with BatchProcessor(store, batch_size=8, flush_interval=0.01) as batches:

        async def fetch(i: int) -> int:
            async with limiter:
                await asyncio.sleep(0.002)
            await batches.add(i)
            return i

        return await pool.map(fetch, range(40))


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_the_primitives_compose_on_each_loop(loop_name: str) -> None:
    pool = TaskPool(max_concurrent=4, timeout_seconds=5)
    limiter = TokenBucketLimiter(rate=2000, burst_size=20)
    sink: list[list[int]] = []
    assert run_on(LOOPS[loop_name], collector(pool, limiter, sink)) == list(range(40))
    assert sorted(i for batch in sink for i in batch) == list(range(40))
    assert pool.stats.completed == 40 and limiter.stats.acquired == 40


def test_objects_made_outside_a_loop_work_in_one_loop_after_another() -> None:
    pool = TaskPool(max_concurrent=3)
    limiter = TokenBucketLimiter(rate=1000, burst_size=5)
    for factory in (asyncio.new_event_loop, uvloop.new_event_loop, asyncio.new_event_loop):
        sink: list[list[int]] = []
        assert run_on(factory, collector(pool, limiter, sink)) == list(range(40))
    assert pool.stats.completed == 120
