"""TokenBucketLimiter: exact schedule, burst, FIFO with weights, cancellation, validation."""

from __future__ import annotations

import asyncio
import math
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from token_bucket import bucket_answers

from perflab import LimiterStats, TokenBucketLimiter
from perflab.aio._clock import CLOCK_SLACK
from perflab.aio.ratelimit import DELIVERY_MARGIN, deliverable_rate, rate_with_headroom

from loops import LateTimerLoop, VirtualClockLoop, run_on

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the dev extra
    uvloop = None


async def grant_times(limiter: TokenBucketLimiter, requests: list[float]) -> list[float]:
    """Queue every request at once (in order); return the loop time each was granted."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    times: list[float] = [math.nan] * len(requests)

    async def one(i: int, tokens: float) -> None:
        await limiter.acquire(tokens)
        times[i] = loop.time() - start

    await asyncio.gather(*(one(i, tokens) for i, tokens in enumerate(requests)))
    return times


def assert_window_bound(times: list[float], tokens: list[float], rate: float, burst: float) -> None:
    """Tokens granted in any window [t_j, t_i] never exceed burst + rate * (t_i - t_j),
    give or take what the limiter's documented clock slack allows (a grant up to
    ``CLOCK_SLACK`` early: ``rate * CLOCK_SLACK`` tokens)."""
    slack = rate * CLOCK_SLACK + 1e-9
    order = sorted(range(len(times)), key=times.__getitem__)
    for a, j in enumerate(order):
        total = 0.0
        for i in order[a:]:
            total += tokens[i]
            assert total <= burst + rate * (times[i] - times[j]) + slack, (j, i, total)


# --------------------------------------------------------------------------- schedule


def test_the_bucket_starts_full_and_then_refills_at_rate(run_virtual) -> None:
    async def main() -> tuple[list[bool], list[float]]:
        limiter = TokenBucketLimiter(rate=10, burst_size=3)
        immediate = [limiter.try_acquire() for _ in range(4)]
        return immediate, await grant_times(limiter, [1, 1, 1])

    immediate, times = run_virtual(main())
    assert immediate == [True, True, True, False]
    assert times == pytest.approx([0.1, 0.2, 0.3])


def test_fifty_acquires_at_fifty_per_second_take_exactly_0_98_seconds(run_virtual) -> None:
    async def main() -> tuple[list[float], LimiterStats]:
        limiter = TokenBucketLimiter(rate=50, burst_size=1)
        return await grant_times(limiter, [1] * 50), limiter.stats

    times, stats = run_virtual(main())
    assert times == pytest.approx([i * 0.02 for i in range(50)])
    assert stats.achieved_rate == pytest.approx(50.0)
    assert stats.acquired == 50 and stats.waited == 49 and stats.waiting == 0
    assert stats.max_wait_seconds == pytest.approx(0.98)


def test_late_timers_are_credited_so_the_rate_does_not_sag() -> None:
    # Every timer fires 0.5 ms late; a strict burst-1 bucket would need 1.5 ms per token.
    async def main() -> list[float]:
        return await grant_times(TokenBucketLimiter(rate=1000, burst_size=1), [1] * 1000)

    times = run_on(LateTimerLoop, main())
    assert times[-1] == pytest.approx(0.999, abs=0.001)


def test_strict_spacing_never_grants_closer_than_one_interval_and_pays_the_late_timers() -> None:
    # The same 0.5 ms late timers: the default credits them and keeps 1,000/s (when the
    # lateness varies, a grant after a late one comes closer than 1 ms); strict spacing
    # never grants before the schedule, and each token then takes the 1.5 ms it waits.
    async def main(spacing: str) -> list[float]:
        limiter = TokenBucketLimiter(rate=1000, burst_size=1, spacing=spacing)  # type: ignore[arg-type]
        return await grant_times(limiter, [1] * 200)

    average = run_on(LateTimerLoop, main("average"))
    strict = run_on(LateTimerLoop, main("strict"))
    gaps = [b - a for a, b in zip(strict, strict[1:], strict=False)]
    assert min(gaps) >= 0.001 - 1e-9
    assert strict[-1] == pytest.approx(199 * 0.0015, abs=0.001)
    assert average[-1] == pytest.approx(0.199, abs=0.001)


def test_spacing_is_average_or_strict() -> None:
    assert TokenBucketLimiter(10).spacing == "average"
    assert "spacing=strict" in repr(TokenBucketLimiter(10, spacing="strict"))
    with pytest.raises(ValueError, match="spacing"):
        TokenBucketLimiter(10, spacing="exact")  # type: ignore[arg-type]


def test_a_stalled_loop_does_not_release_a_flood_of_tokens(run_virtual) -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        limiter = TokenBucketLimiter(rate=100, burst_size=2)
        limiter.try_acquire(2)
        waiters = [asyncio.ensure_future(limiter.acquire()) for _ in range(20)]
        await asyncio.sleep(0)
        loop.advance(1.0)  # the loop was blocked for a second
        start = loop.time()
        ready = []
        for waiter in waiters:
            await waiter
            ready.append(loop.time() - start)
        return ready

    ready = run_virtual(main())
    # Only the bucket (2) plus one credited request (1) come at once; the rest keep the rate.
    assert sum(1 for t in ready if t == 0) == 3
    assert ready[-1] == pytest.approx((20 - 3) * 0.01)


def test_acquire_with_a_token_available_never_suspends(run_virtual) -> None:
    async def main() -> bool:
        limiter = TokenBucketLimiter(rate=5, burst_size=5)
        ran_meanwhile = []
        asyncio.get_running_loop().call_soon(ran_meanwhile.append, True)
        for _ in range(5):
            await limiter.acquire()
        return bool(ran_meanwhile)

    assert run_virtual(main()) is False


async def test_async_with_takes_one_token() -> None:
    limiter = TokenBucketLimiter(rate=1, burst_size=2)
    async with limiter:
        pass
    assert limiter.stats.acquired == 1
    assert limiter.try_acquire() and not limiter.try_acquire()


# --------------------------------------------------------------------------- fairness


def test_waiters_are_served_first_come_first_served_whatever_their_weight(run_virtual) -> None:
    async def main() -> list[float]:
        limiter = TokenBucketLimiter(rate=10, burst_size=10)
        assert limiter.try_acquire(10)
        # A heavy request queued first is served before the light ones behind it.
        return await grant_times(limiter, [10, 1, 1])

    assert run_virtual(main()) == pytest.approx([1.0, 1.1, 1.2])


def test_try_acquire_does_not_jump_the_queue(run_virtual) -> None:
    async def main() -> bool:
        limiter = TokenBucketLimiter(rate=10, burst_size=5)
        limiter.try_acquire(5)
        waiter = asyncio.ensure_future(limiter.acquire(5))
        await asyncio.sleep(0.15)  # 1.5 tokens back: enough for a light request
        jumped = limiter.try_acquire(1)
        await waiter
        return jumped

    assert run_virtual(main()) is False


def test_cancelling_half_of_forty_waiters_holds_no_one_up(run_virtual) -> None:
    async def main() -> tuple[list[float], LimiterStats]:
        loop = asyncio.get_running_loop()
        limiter = TokenBucketLimiter(rate=10, burst_size=1)
        limiter.try_acquire()
        start = loop.time()
        times: dict[int, float] = {}

        async def one(i: int) -> None:
            await limiter.acquire()
            times[i] = loop.time() - start

        tasks = [asyncio.create_task(one(i)) for i in range(40)]
        await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return [times[i] for i in sorted(times)], limiter.stats

    times, stats = run_virtual(main())
    assert len(times) == 20
    assert times == pytest.approx([0.1 * (k + 1) for k in range(20)])
    assert stats.acquired == 21  # the first token plus the 20 served


def test_a_waiter_cancelled_after_its_grant_gives_the_tokens_back(run_virtual) -> None:
    async def main() -> tuple[bool, float]:
        limiter = TokenBucketLimiter(rate=1, burst_size=2)
        limiter.try_acquire(2)
        head = asyncio.ensure_future(limiter.acquire(2))
        behind = asyncio.ensure_future(limiter.acquire(1))
        await asyncio.sleep(1.0)  # one token is back; the head still needs two
        head.cancel()
        await asyncio.sleep(0)  # the head leaves; `behind` is granted but not resumed yet
        behind.cancel()  # ... and is cancelled before it could use the token
        await asyncio.gather(head, behind, return_exceptions=True)
        return limiter.try_acquire(1), limiter.stats.acquired

    token_came_back, acquired = run_virtual(main())
    assert token_came_back
    assert acquired == 3  # 2 at the start + the 1 just taken; nothing for the cancelled waiters


@settings(max_examples=60, deadline=None)
@given(
    rate=st.sampled_from([1.0, 7.5, 100.0, 2000.0]),
    burst=st.integers(min_value=1, max_value=20),
    weights=st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=30),
    cancel=st.sets(st.integers(min_value=0, max_value=29)),
)
def test_randomized_queue_is_fifo_exact_and_within_the_window_bound(rate, burst, weights, cancel) -> None:
    weights = [min(w, burst) for w in weights]

    async def main() -> tuple[list[int], list[float], list[float]]:
        loop = asyncio.get_running_loop()
        limiter = TokenBucketLimiter(rate=rate, burst_size=burst)
        limiter.try_acquire(burst)  # empty: every request queues
        served: list[int] = []
        times: list[float] = []

        async def one(i: int) -> None:
            await limiter.acquire(weights[i])
            served.append(i)
            times.append(loop.time())

        tasks = [asyncio.create_task(one(i)) for i in range(len(weights))]
        await asyncio.sleep(0)
        for i in cancel:
            if i < len(tasks):
                tasks[i].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return served, times, [weights[i] for i in served]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 2000/s at burst 1 warns; fine here
        served, times, tokens = run_on(VirtualClockLoop, main())
    assert served == [i for i in range(len(weights)) if i not in cancel]
    assert_window_bound(times, tokens, rate, burst)
    # Exact: with no cancellations in front, request k is granted at sum(weights[:k+1]) / rate.
    if not cancel:
        start = times[0] - weights[0] / rate
        expected = [sum(weights[: k + 1]) / rate for k in range(len(weights))]
        assert [t - start for t in times] == pytest.approx(expected)


# --------------------------------------------------------------------------- real clock


@pytest.mark.slow
def test_real_clock_rate_is_close_and_windows_stay_bounded_on_both_loops() -> None:
    factories = [asyncio.new_event_loop] + ([uvloop.new_event_loop] if uvloop else [])
    for factory in factories:

        async def main() -> list[float]:
            return await grant_times(TokenBucketLimiter(rate=200, burst_size=5), [1] * 105)

        times = run_on(factory, main())
        # 100 tokens after the burst of 5 take 0.5 s; generous bounds for a shared machine.
        assert 0.49 <= times[-1] <= 0.75, (factory, times[-1])
        # Late wake-ups may release one credited request beyond the bucket, never more.
        assert_window_bound(times, [1.0] * 105, 200, 5 + 1)


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((0,), ValueError, "rate must be > 0, got 0"),
        ((-5,), ValueError, "rate must be > 0, got -5"),
        ((math.inf,), ValueError, "rate must be finite, got inf"),
        ((math.nan,), ValueError, "rate must be finite"),
        (("10",), TypeError, "rate must be a number, got str"),
        ((10, 0.5), ValueError, "burst_size must be >= 1, got 0.5"),
        ((10, "2"), TypeError, "burst_size must be a number, got str"),
    ],
)
def test_bad_settings_are_rejected_with_the_argument_named(args, error, message) -> None:
    with pytest.raises(error, match=message):
        TokenBucketLimiter(*args)


async def test_impossible_requests_are_rejected_up_front() -> None:
    limiter = TokenBucketLimiter(rate=10, burst_size=4)
    with pytest.raises(ValueError, match=r"tokens must be <= burst_size \(4\), got 5: .*never be served"):
        await limiter.acquire(5)
    with pytest.raises(ValueError, match="tokens must be > 0, got 0"):
        await limiter.acquire(0)
    with pytest.raises(ValueError, match="tokens must be <= burst_size"):
        limiter.try_acquire(4.5)
    assert limiter.stats.acquired == 0


def test_default_burst_is_one_second_of_rate() -> None:
    assert TokenBucketLimiter(rate=25).burst_size == 25
    assert TokenBucketLimiter(rate=0.2).burst_size == 1


def test_an_undeliverable_rate_warns_with_the_rate_that_can_be_delivered() -> None:
    with pytest.warns(RuntimeWarning, match=r"at most ~1,818 tokens/s .* burst_size to at least 12"):
        TokenBucketLimiter(rate=10_000, burst_size=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TokenBucketLimiter(rate=1000, burst_size=1)  # deliverable: no warning
        TokenBucketLimiter(rate=10_000, burst_size=100)
    assert deliverable_rate(10_000, 1) < 10_000 * DELIVERY_MARGIN
    assert deliverable_rate(50, 1) == 50


def test_stats_and_repr_are_plain_data() -> None:
    limiter = TokenBucketLimiter(rate=4, burst_size=2)
    assert limiter.try_acquire()
    stats = limiter.stats.as_dict()
    assert stats["acquired"] == 1 and stats["rate"] == 4 and stats["achieved_rate"] == 0.0
    assert "rate=4/s burst_size=2" in repr(limiter) and "waiting=0" in repr(limiter)


# --------------------------------------------------------------------------- headroom


def refusals(arrivals: list[float], rate: float, capacity: float) -> int:
    return bucket_answers(arrivals, rate, capacity).count(False)


def test_rate_with_headroom_by_hand() -> None:
    assert rate_with_headroom(200) == 200  # no jitter, no headroom
    assert rate_with_headroom(200, 1, 0.001) == pytest.approx(1 / (0.005 + 0.001))  # 166.7/s
    assert rate_with_headroom(200, 11, 0.001) == 200  # nginx burst=10 absorbs 1 ms
    assert rate_with_headroom(200, 2, 0.01) == pytest.approx(200 * 2 / 3)  # 3 sends, 10 ms late
    for bad in ({"server_rate": 0}, {"server_burst": 0.5}, {"jitter": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            rate_with_headroom(**{"server_rate": 200, **bad})  # type: ignore[arg-type]


@settings(max_examples=80, deadline=None)
@given(
    server_rate=st.sampled_from([10.0, 200.0, 3000.0]),
    capacity=st.integers(1, 12),
    jitter_intervals=st.floats(0, 3),
    share=st.floats(0.5, 1.0),
    delays=st.lists(st.floats(0, 1), min_size=200, max_size=200),
)
def test_sends_at_the_headroom_rate_are_never_refused_whatever_their_jitter(
    server_rate: float, capacity: int, jitter_intervals: float, share: float, delays: list[float]
) -> None:
    """Sends 1/rate apart, each reaching the server up to ``jitter`` late in any pattern:
    at any share of rate_with_headroom the server's bucket refuses none."""
    jitter = jitter_intervals / server_rate
    rate = share * rate_with_headroom(server_rate, capacity, jitter)
    arrivals = [i / rate + d * jitter for i, d in enumerate(delays)]
    assert refusals(arrivals, server_rate, capacity) == 0


@pytest.mark.parametrize("capacity", [1, 2, 3, 5])
def test_a_little_above_the_headroom_rate_late_sends_are_refused(capacity: int) -> None:
    """The bound is exact: every 50 sends, the first ``capacity`` are held back so that
    they and the next one land within ``capacity / rate - jitter``, from a full bucket."""
    server_rate, jitter = 200.0, capacity / 200.0
    for share, refused in ((0.99, False), (1.02, True)):
        rate = share * rate_with_headroom(server_rate, capacity, jitter)
        delays = [max(0.0, jitter - (i % 50) / rate) if i % 50 <= capacity else 0.0 for i in range(1000)]
        arrivals = [i / rate + d for i, d in enumerate(delays)]
        assert (refusals(arrivals, server_rate, capacity) > 0) is refused
