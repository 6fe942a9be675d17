"""Adaptive limits: each update rule against steps computed by hand from Netflix's
formulas, and a TaskPool following a limit on a virtual clock (growing hands out slots,
shrinking never cancels a running call, drops and Retry-After, client-side throttling)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from perflab import AIMD, Gradient2, Rejected, TaskPool, Throttle, Throttled, Vegas, Windowed
from perflab.aio.limits import Limit

# ----------------------------------------------------------------------- update rules


def test_aimd_backs_off_by_its_ratio_and_grows_by_one_while_half_used() -> None:
    limit = AIMD(10, min_limit=2, max_limit=12)
    limit.on_sample(0.0, 0.02, in_flight=10, dropped=True)
    assert limit.limit == 9  # min(10 - 1, int(10 * 0.9))
    limit.on_sample(1.0, 0.02, in_flight=5, dropped=False)
    assert limit.limit == 10  # 5 * 2 >= 9
    limit.on_sample(1.1, 0.02, in_flight=4, dropped=False)
    assert limit.limit == 10  # 4 * 2 < 10: not using the limit, learns nothing
    limit.on_sample(1.2, 6.0, in_flight=10, dropped=False)
    assert limit.limit == 9  # slower than its 5-s timeout: a drop
    for step in range(5):
        limit.on_sample(10.0 + step, 0.02, in_flight=12, dropped=False)
    assert limit.limit == 12  # the ceiling
    for step in range(30):
        limit.on_sample(100.0 + step, 0.001, in_flight=12, dropped=True)
    assert limit.limit == 2  # the floor
    small = AIMD(2, min_limit=1)
    small.on_sample(0.0, 0.01, in_flight=2, dropped=True)
    assert small.limit == 1  # int(2 * 0.9) = 1


def test_aimd_backs_off_once_for_a_burst_of_refusals_sent_together() -> None:
    limit = AIMD(30)
    for _ in range(6):  # six calls sent at t=0, all refused at t=0.001
        limit.on_sample(0.0, 0.001, in_flight=30, dropped=True)
    assert limit.limit == 27  # once: int(30 * 0.9), not 30 * 0.9**6
    limit.on_sample(0.002, 0.001, in_flight=27, dropped=True)  # sent after the back-off
    assert limit.limit == 24


def test_gradient2_follows_the_published_steps() -> None:
    limit = Gradient2(20)
    limit.on_sample(0.0, 0.1, in_flight=20, dropped=False)
    # long = 0.1; gradient = min(1, 1.5 * 0.1 / 0.1) = 1; new = 20 + 4 = 24;
    # smoothed: 20 * 0.8 + 24 * 0.2 = 20.8
    assert limit.limit == 20 and math.isclose(limit._estimate, 20.8)
    limit.on_sample(0.1, 0.4, in_flight=20, dropped=False)
    # long = (0.1 + 0.4) / 2 = 0.25; gradient = 1.5 * 0.25 / 0.4 = 0.9375;
    # new = 20.8 * 0.9375 + 4 = 23.5; smoothed: 20.8 * 0.8 + 23.5 * 0.2 = 21.34
    assert math.isclose(limit._estimate, 21.34)
    assert math.isclose(limit.long_rtt, 0.25)
    limit.on_sample(0.2, 0.1, in_flight=5, dropped=False)  # 5 < 21.34 / 2: app limited
    assert math.isclose(limit._estimate, 21.34)
    assert math.isclose(limit.long_rtt, 0.2)  # the long average still learns: 0.6 / 3
    limit.on_sample(0.3, 10.0, in_flight=21, dropped=False)
    # long = 10.6 / 4 = 2.65; gradient = max(0.5, 1.5 * 2.65 / 10) = 0.5 (clamped);
    # new = 21.34 * 0.5 + 4 = 14.67; smoothed: 21.34 * 0.8 + 14.67 * 0.2 = 20.006
    assert math.isclose(limit._estimate, 20.006)


def test_gradient2_ignores_drops_as_published_unless_told_to_back_off() -> None:
    published = Gradient2(20)
    published.on_sample(0.0, 0.1, in_flight=20, dropped=False)
    published.on_sample(0.1, 0.0005, in_flight=20, dropped=True)  # a fast 503
    assert published.limit >= 20  # the refusal reads as a fast answer (Netflix#176)
    backing = Gradient2(20, drop_backoff=0.9)
    backing.on_sample(0.1, 0.0005, in_flight=20, dropped=True)
    assert backing.limit == 18


def test_gradient2_cuts_a_stale_long_average_after_overload() -> None:
    limit = Gradient2(20, long_window=1)  # factor 1 after warm-up: long = last sample
    for _ in range(10):
        limit.on_sample(0.0, 1.0, in_flight=20, dropped=False)  # warm-up mean: 1.0
    limit.on_sample(0.0, 0.1, in_flight=20, dropped=False)
    # long = 0.1 (factor 2 / (1 + 1) = 1), so no cut; then a stale case:
    limit._long.value = 1.0
    limit._long.count = 10
    limit._long.factor = 0.0  # long stays 1.0 on add
    limit.on_sample(0.0, 0.1, in_flight=20, dropped=False)
    assert math.isclose(limit.long_rtt, 0.9)  # 1.0 / 0.1 > 2: cut by 10%


def test_vegas_follows_the_published_steps() -> None:
    limit = Vegas(20, seed=1)  # probes after >= 300 samples: none here
    limit.on_sample(0.0, 0.1, in_flight=20, dropped=False)
    assert limit.rtt_noload == 0.1 and limit.limit == 20  # the first RTT is the no-load RTT
    limit.on_sample(0.1, 0.1, in_flight=20, dropped=False)
    assert limit.limit == 26  # queue ceil(20 * 0) = 0 <= 1: + 6 * 1
    limit.on_sample(0.2, 0.2, in_flight=26, dropped=False)
    assert limit.limit == 25  # queue ceil(26 * 0.5) = 13 > 6: - 1
    limit.on_sample(0.3, 0.11, in_flight=25, dropped=False)
    assert limit.limit == 25  # queue ceil(25 * 0.0909) = 3: between alpha and beta
    limit.on_sample(0.4, 0.105, in_flight=25, dropped=False)
    assert limit.limit == 26  # queue ceil(25 * 0.0476) = 2 < 3: + 1
    limit.on_sample(0.5, 0.105, in_flight=3, dropped=False)
    assert limit.limit == 26  # 3 * 2 < 26: app limited
    limit.on_sample(0.6, 0.105, in_flight=3, dropped=True)
    assert limit.limit == 25  # a drop: - 1
    big = Vegas(150, seed=1)
    big.on_sample(0.0, 0.1, in_flight=150, dropped=False)
    big.on_sample(0.0, 0.1, in_flight=150, dropped=False)
    assert big.limit == 162  # log10(150) -> 2: + 6 * 2


def test_vegas_probes_the_no_load_rtt_again() -> None:
    limit = Vegas(2, probe_multiplier=1, seed=3)  # probes every 1..2 samples
    limit.on_sample(0.0, 0.05, in_flight=2, dropped=False)
    for step in range(5):
        limit.on_sample(0.1 * step, 0.5, in_flight=2, dropped=False)
    assert limit.rtt_noload == 0.5  # a probe took the current RTT as the no-load one


def test_windowed_feeds_one_sample_per_window() -> None:
    seen: list[tuple[float, float, int, bool]] = []

    class Recorder:
        limit = 5

        def on_sample(self, start: float, rtt: float, in_flight: int, dropped: bool) -> None:
            seen.append((start, rtt, in_flight, dropped))

    windowed = Windowed(Recorder(), min_window=1.0, max_window=2.0, samples=3)
    windowed.on_sample(0.0, 0.1, 2, False)
    windowed.on_sample(0.1, 0.3, 4, False)
    windowed.on_sample(0.2, 0.1, 3, False)
    assert seen == []  # three samples, but the window has lasted 0.4 s of its 1 s
    windowed.on_sample(0.9, 0.2, 1, False)
    assert seen == [(0.0, pytest.approx(0.175), 4, False)]  # mean RTT; most in flight
    windowed.on_sample(1.2, 0.1, 2, False)
    windowed.on_sample(1.3, 0.0, 3, True)  # a refusal closes the window at once
    # The drop is passed on as it came, with the window's most calls in flight.
    assert seen[1] == (1.3, 0.0, 3, True)
    assert windowed.limit == 5
    with pytest.raises(TypeError, match="limit must be a Limit"):
        Windowed(object())  # type: ignore[arg-type]


def test_throttle_follows_the_sre_formula() -> None:
    throttle = Throttle(k=2.0, window=10.0, seed=0)
    assert throttle.probability(0.0) == 0.0
    for _ in range(10):
        throttle.record(0.0, accepted=False)
    assert math.isclose(throttle.probability(0.0), 10 / 11)  # (10 - 2 * 0) / (10 + 1)
    for _ in range(4):
        throttle.record(1.0, accepted=True)
    assert math.isclose(throttle.probability(1.0), (14 - 8) / 15)
    assert throttle.probability(10.5) == 0.0  # the first window's requests expired
    refused = sum(not throttle.allow(20.0) for _ in range(200))
    assert refused == 0  # nothing refused lately: everything goes


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: AIMD(0), "initial"),
        (lambda: AIMD(5, min_limit=6), "initial"),
        (lambda: AIMD(backoff=1.0), "backoff"),
        (lambda: AIMD(min_limit=3, max_limit=2, initial=3), "min_limit"),
        (lambda: Gradient2(smoothing=0), "smoothing"),
        (lambda: Gradient2(smoothing=1.5), "smoothing must be <= 1"),
        (lambda: Vegas(smoothing=2), "smoothing must be <= 1"),
        (lambda: Gradient2(drop_backoff=1.5), "drop_backoff"),
        (lambda: Vegas(probe_multiplier=0), "probe_multiplier"),
        (lambda: Windowed(AIMD(), min_window=2.0, max_window=1.0), "max_window"),
        (lambda: Throttle(k=0.5), "k"),
        (lambda: Rejected(retry_after=-1), "retry_after"),
        (lambda: TaskPool(max_concurrent="many"), "max_concurrent"),
        (lambda: TaskPool(drops=[ValueError]), "drops"),
        (lambda: TaskPool(throttle=2), "throttle"),
    ],
)
def test_bad_arguments_are_named(make: Any, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        make()


def test_the_shipped_limits_satisfy_the_protocol() -> None:
    for limit in (AIMD(), Gradient2(), Vegas(), Windowed(AIMD())):
        assert isinstance(limit, Limit)
        assert limit.limit >= 1


# ----------------------------------------------------------------------- the pool


class Scripted:
    """A user's own limit: the test sets it; each sample counts."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.samples: list[tuple[float, float, int, bool]] = []
        self.after_first: int | None = None

    def on_sample(self, start: float, rtt: float, in_flight: int, dropped: bool) -> None:
        self.samples.append((start, rtt, in_flight, dropped))
        if self.after_first is not None and len(self.samples) == 1:
            self.limit = self.after_first


class Server:
    """Calls that sleep ``seconds`` each, counting how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.peaks: list[int] = []
        self.cancelled = 0

    async def call(self, seconds: float) -> float:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.peaks.append(self.running)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        return seconds


def test_shrinking_never_cancels_a_running_call(run_virtual) -> None:
    async def main() -> tuple[Any, ...]:
        limit = Scripted(10)
        limit.after_first = 2  # the first call to end shrinks the limit to 2
        server = Server()
        pool = TaskPool(max_concurrent=limit)
        work = [0.1] + [5.0] * 9 + [1.0] * 10
        results = await pool.map(server.call, work)
        return results, server, pool.stats, limit

    results, server, stats, limit = run_virtual(main())
    assert results == [0.1] + [5.0] * 9 + [1.0] * 10
    assert server.cancelled == 0 and stats.cancelled == 0
    assert stats.limit == 2
    # The nine long calls ran on; once they ended, at most 2 ran at a time.
    assert max(server.peaks[11:]) <= 2
    assert server.peaks[:10] == list(range(1, 11))


def test_growing_hands_out_slots_at_once(run_virtual) -> None:
    async def main() -> tuple[Any, ...]:
        limit = Scripted(1)
        limit.after_first = 5
        server = Server()
        pool = TaskPool(max_concurrent=limit)
        await pool.map(server.call, [1.0] * 11)
        return server, pool.stats

    server, stats = run_virtual(main())
    assert server.peak == 5 and stats.peak_in_flight == 5 and stats.limit == 5


def test_submit_and_gather_follow_the_limit_too(run_virtual) -> None:
    async def main() -> tuple[int, int]:
        limit = Scripted(3)
        server = Server()
        pool = TaskPool(max_concurrent=limit)
        await pool.gather(*(server.call(1.0) for _ in range(7)))
        gathered = server.peak
        limit.after_first = 1
        limit.samples.clear()
        server.peak = 0
        async with pool:
            for _ in range(6):
                await pool.submit(server.call, 1.0)
        return gathered, max(server.peaks[-3:])

    gathered, last = run_virtual(main())
    assert gathered == 3
    assert last == 1


def test_a_refusal_is_a_drop_and_its_retry_after_holds_back_new_calls(run_virtual) -> None:
    async def main() -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        starts: list[float] = []
        limit = AIMD(4)

        async def call(i: int) -> int:
            starts.append(loop.time())
            await asyncio.sleep(0.01)
            if i == 0:
                raise Rejected("429", retry_after=2.0)
            return i

        pool = TaskPool(max_concurrent=limit, max_retry_after=1.5)
        began = loop.time()
        results = await pool.map(call, range(8), return_exceptions=True)
        return results, [s - began for s in starts], limit

    results, starts, limit = run_virtual(main())
    assert isinstance(results[0], Rejected) and results[1:] == list(range(1, 8))
    assert limit.limit < 4 + 7  # the drop cut it (and the successes grew it back by one each)
    # Four started at once; after the 429 at 0.01 s nothing started for 1.5 s (the cap).
    assert starts[:4] == [0.0] * 4
    assert all(s >= 0.01 + 1.5 - 1e-9 for s in starts[4:])


def test_timeouts_and_the_users_drop_types_count_as_drops(run_virtual) -> None:
    class TooMany(Exception):
        pass

    async def main() -> list[tuple[float, float, int, bool]]:
        limit = Scripted(2)

        async def call(kind: str) -> str:
            if kind == "slow":
                await asyncio.sleep(10)
            elif kind == "refused":
                raise TooMany
            elif kind == "broken":
                raise ValueError("a bug, not a refusal")
            return kind

        pool = TaskPool(max_concurrent=limit, timeout_seconds=1.0, drops=(TooMany,))
        await pool.map(call, ["ok", "slow", "refused", "broken"], return_exceptions=True)
        return limit.samples

    samples = run_virtual(main())
    # ok: success; slow: a drop after its 1-s timeout; refused: a drop; broken: ignored.
    assert sorted(sample[3] for sample in samples) == [False, True, True]
    assert any(math.isclose(sample[1], 1.0) and sample[3] for sample in samples)


def test_cancelling_the_caller_wakes_workers_waiting_out_a_retry_after() -> None:
    pool = TaskPool(max_concurrent=AIMD(4))

    async def call(i: int) -> int:
        await asyncio.sleep(0.01)
        if i == 0:
            raise Rejected(retry_after=3600)  # an hour
        return i

    async def main() -> float:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(pool.map(call, range(50), return_exceptions=True))
        await asyncio.sleep(0.2)  # every worker now waits out the hour
        began = loop.time()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return loop.time() - began

    elapsed = asyncio.run(asyncio.wait_for(main(), 30))
    assert elapsed < 5  # nobody waited out the hour (a generous bound)
    assert pool.stats.in_flight == 0 and pool.stats.completed == 3


def test_the_throttle_sheds_load_locally_when_the_server_refuses(run_virtual) -> None:
    async def main() -> tuple[int, int, Any]:
        sent = 0

        async def refused(i: int) -> int:
            nonlocal sent
            sent += 1
            await asyncio.sleep(0.01)
            raise Rejected("503")

        pool = TaskPool(max_concurrent=4, throttle=Throttle(k=2.0, seed=1))
        results = await pool.map(refused, range(400), return_exceptions=True)
        throttled = sum(isinstance(r, Throttled) for r in results)
        return sent, throttled, pool.stats

    sent, throttled, stats = run_virtual(main())
    assert sent + throttled == 400 and stats.failed == 400
    assert throttled > 300  # p -> (n - 0) / (n + 1): nearly every call is shed locally


def test_stats_and_the_exporter_show_the_current_limit(run_virtual) -> None:
    from perflab.exporter import Exporter

    async def main() -> TaskPool:
        pool = TaskPool(max_concurrent=AIMD(6))
        await pool.map(Server().call, [0.01] * 20)
        return pool

    pool = run_virtual(main())
    assert pool.stats.limit > 6  # grew by one per success while at least half used
    exporter = Exporter()
    exporter.add_pool("quotes", pool)
    text = exporter.text()
    assert f'perflab_pool_limit{{name="quotes"}} {float(pool.stats.limit)}' in text
    assert "limit=" in repr(pool) and "AIMD" in repr(pool)


def test_a_retry_after_below_the_clocks_resolution_does_not_spin(run_virtual) -> None:
    async def main() -> list[Any]:
        async def call(i: int) -> int:
            await asyncio.sleep(0.001)
            if i % 3 == 0:
                raise Rejected("429", retry_after=1e-12)  # what float rounding leaves of "now"
            return i

        return await TaskPool(max_concurrent=AIMD(4)).map(call, range(30), return_exceptions=True)

    results = run_virtual(asyncio.wait_for(main(), 60))
    assert sum(isinstance(r, Rejected) for r in results) == 10
