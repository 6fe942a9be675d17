"""TokenBucketLimiter: an exact, first-come-first-served token bucket for asyncio.

The bucket is kept as a schedule (GCRA, the "virtual scheduling" form of a token bucket):
``_tat`` is the time at which the bucket would be full again. A request for ``n`` tokens is
due at ``_tat - (burst - n) / rate``; granting it moves ``_tat`` on by ``n / rate``. That
gives exact arithmetic (no token counter drifting with float additions), weighted requests
for free, and a due time for the head of the queue, so a waiter sleeps on one timer until
exactly then: no polling.

Why waiters are credited at their due time: asyncio's timers fire late (on Linux the
selector rounds its timeout up to a whole millisecond; a timer due in 0.9 ms fires after
~1.08 ms). A strict bucket would lose that lateness on every wake-up once the bucket is
full, which is why burst-1 limiters run several percent slow. Here a late waiter is
granted as of its due time, so the schedule does not drift; the credit is capped at one
request's worth (``n / rate``), so a loop that stalled for a second does not release a
second's worth of tokens at once. In any window the limiter grants at most
``burst + rate * window`` tokens on its schedule; real delivery is never earlier than the
schedule and, after a late timer, at most one request ahead of a strict bucket.

The bucket's level outlives the event loop: on a new loop (one ``asyncio.run`` after
another) the schedule is carried over on ``time.monotonic()``, so five runs of
``acquire`` at rate 1, burst 1 take four seconds, not a few milliseconds. A limiter serves
one running loop at a time: a second loop that tries while the first still runs (another
thread) is refused with RuntimeError, every time.

What cannot be delivered: each timer wake-up can release at most ``burst + 1`` tokens (the
bucket plus one credited request), and wake-ups come at best every
:data:`TIMER_TICK_SECONDS`, so about ``(burst + 1) / TIMER_TICK_SECONDS`` tokens per second
is the ceiling (measured: ~1,840/s at burst 1, ~4,570/s at burst 4, ~8,270/s at burst 8,
under asyncio and uvloop alike). Near the ceiling the rate already sags, so the constructor
warns once the rate is past :data:`DELIVERY_MARGIN` of it and names the rate that can be
delivered.

``spacing="strict"`` gives up the credit and counts a grant from when its caller
resumes (when it sends), so at ``burst_size=1`` no two callers resume closer than
``1 / rate`` (to within the microseconds before the caller's next line), however late a
busy loop resumes them. A late resume is lost to the rate; a late timer is not, because
the last timer tick before a grant is polled (asyncio's timers fire up to ~1 ms late).
Against nginx at 200 r/s with no burst allowed, 2,000 requests at 90% / 98% / 100% of
its rate drew 3.3-6.9% / 15-17% / 13-16% 429s with the default and 0.10-0.25% /
0.50-0.55% / 2.7-3.2% with strict spacing, at 176-177 / 194 / 198 per second (two runs
each). It is for
servers that allow no burst (nginx ``limit_req`` without ``burst=``), which refuse a
request that comes even a hair early; against a server with any burst allowance the
default is exact and faster.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
import time
import warnings
from collections import deque
from typing import Any, Literal

from perflab._validate import check_number
from perflab.aio._clock import CLOCK_SLACK, MIN_REARM_DELAY
from perflab.aio.histogram import Histogram, HistogramSnapshot

__all__ = [
    "DELIVERY_MARGIN",
    "TIMER_TICK_SECONDS",
    "LimiterStats",
    "TokenBucketLimiter",
    "deliverability_problem",
    "deliverable_rate",
    "rate_with_headroom",
]

#: Shortest interval between two timer wake-ups that asyncio delivers when each asks for
#: less than a millisecond (epoll rounds the timeout up to 1 ms, plus the wake-up itself).
#: Measured on the 2-core CI machine: 1.09-1.13 ms under asyncio and uvloop.
TIMER_TICK_SECONDS = 0.0011
#: Fraction of the ceiling up to which the rate is delivered within ~1% (measured: burst 1
#: at 1,000/s is -0.2%, at 2,000/s -8%; burst 8 at 8,000/s -2.5%).
DELIVERY_MARGIN = 0.9


def deliverable_rate(rate: float, burst_size: float) -> float:
    """About the most tokens per second a limiter with this burst hands out on asyncio."""
    return min(rate, (math.floor(burst_size) + 1) / TIMER_TICK_SECONDS)


def deliverability_problem(rate: float, burst_size: float) -> str | None:
    """Why a limiter of ``rate`` and ``burst_size`` cannot keep its rate on asyncio's timers
    (and the burst that would), or None when it can. TokenBucketLimiter warns with it."""
    ceiling = deliverable_rate(math.inf, burst_size)
    if rate <= DELIVERY_MARGIN * ceiling:
        return None
    needed = max(1, math.ceil(rate * TIMER_TICK_SECONDS / DELIVERY_MARGIN - 1))
    return (
        f"TokenBucketLimiter(rate={rate:g}, burst_size={burst_size:g}) cannot keep "
        f"its rate: asyncio timers wake at best every {TIMER_TICK_SECONDS * 1e3:.2f} ms and each "
        f"wake-up releases at most burst_size + 1 tokens, so at most ~{ceiling:,.0f} tokens/s "
        f"get through and rates above ~{DELIVERY_MARGIN * ceiling:,.0f}/s fall short; raise "
        f"burst_size to at least {needed} for {rate:g}/s"
    )


def rate_with_headroom(server_rate: float, server_burst: float = 1.0, jitter: float = 0.0) -> float:
    """The highest rate a client can send at, its sends ``1 / rate`` apart, and never be
    refused by a server's token bucket (``server_rate`` per second, ``server_burst``
    calls at once: nginx's ``burst=N`` is N + 1) when each send may reach the server up
    to ``jitter`` seconds late, in any pattern.

    Late sends bunch: ``server_burst + 1`` sends scheduled ``server_burst / rate`` apart can
    arrive ``jitter`` closer, and the bucket must refill one call in between, so
    ``rate <= server_burst / (1 / server_rate + jitter)``; never above ``server_rate``.
    The bound is exact (a delay pattern within ``jitter`` is refused just above it). With
    no burst it is ``1 / (1 / server_rate + jitter)``: 1 ms of jitter costs a 200/s server
    17% of its rate; nginx's ``burst=10`` absorbs up to 50 ms.

    ``jitter`` is what perflab measures as the client's event-loop lag (p99): how late a
    callback that is due runs, and so how late a send leaves after its grant (a garbage
    collection or the OS taking the CPU between the grant and the send counts too). What
    happens after it leaves (the network, the server's own clock) adds to it unseen.
    """
    check_number("server_rate", server_rate, positive=True)
    check_number("server_burst", server_burst, minimum=1)
    check_number("jitter", jitter, minimum=0)
    return server_rate * min(1.0, server_burst / (1.0 + server_rate * jitter))


@dataclasses.dataclass(frozen=True, slots=True)
class LimiterStats:
    """Counters of a :class:`TokenBucketLimiter`.

    ``achieved_rate`` is tokens per second between the first and the last grant, not
    counting the first grant's tokens (so 50 grants at 50/s give 50.0, not 51.0); an
    initial burst served from the full bucket counts, as it did reach the server.
    """

    rate: float
    burst_size: float
    acquired: float
    waited: int
    waiting: int
    total_wait_seconds: float
    max_wait_seconds: float
    achieved_rate: float

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


class TokenBucketLimiter:
    """Allow ``rate`` tokens per second with bursts of up to ``burst_size``.

    Usage::

        limiter = TokenBucketLimiter(rate=50, burst_size=5)
        async with limiter:          # one token; or: await limiter.acquire(3)
            await call_api()

    The bucket starts full. Waiters are served strictly first come, first served, whatever
    they ask for; a cancelled waiter takes no tokens and holds no one up.

    ``spacing``: "average" (the default) keeps the long-run rate exact by granting a waiter
    woken late by the timer as of its due time, so two grants can come up to one interval
    closer than ``1 / rate``; "strict" never grants before the schedule allows and counts a
    grant from when its caller resumes, so at ``burst_size=1`` callers resume at least
    ``1 / rate`` apart, at the cost of rate (every late wake-up is lost). Use "strict"
    against a server with no burst allowance.
    """

    __slots__ = (
        "rate",
        "burst_size",
        "spacing",
        "_strict",
        "_polled_at",
        "_interval",
        "_loop",
        "_tat",
        "_waiters",
        "_timer",
        "_acquired",
        "_waited",
        "_total_wait",
        "_max_wait",
        "_waits",
        "_first_grant",
        "_first_tokens",
        "_last_grant",
        "_clock_offset",
        "_bind_lock",
    )

    def __init__(
        self,
        rate: float,
        burst_size: float | None = None,
        *,
        spacing: Literal["average", "strict"] = "average",
    ) -> None:
        self.rate = check_number("rate", rate, positive=True)
        if burst_size is None:
            burst_size = max(1, round(self.rate))
        self.burst_size = check_number("burst_size", burst_size, minimum=1)
        if spacing not in ("average", "strict"):
            raise ValueError(f"spacing must be 'average' or 'strict', got {spacing!r}")
        self.spacing = spacing
        self._strict = spacing == "strict"
        self._polled_at = -math.inf
        self._interval = 1.0 / self.rate
        problem = deliverability_problem(self.rate, self.burst_size)
        if problem is not None:
            warnings.warn(problem, RuntimeWarning, stacklevel=2)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tat = -math.inf  # bucket full
        self._waiters: deque[tuple[asyncio.Future[None], float]] = deque()
        self._timer: asyncio.Handle | None = None
        self._acquired = 0.0
        self._waited = 0
        self._total_wait = 0.0
        self._max_wait = 0.0
        self._waits = Histogram()
        self._first_grant: float | None = None
        self._first_tokens = 0.0
        self._last_grant = 0.0
        self._clock_offset = 0.0  # loop.time() - time.monotonic() of the loop served
        self._bind_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"<TokenBucketLimiter rate={self.rate:g}/s burst_size={self.burst_size:g} "
            f"spacing={self.spacing} level={self.level:.2f} waiting={self._live_waiters()}>"
        )

    @property
    def level(self) -> float:
        """Tokens in the bucket now (0 while requests are waiting)."""
        return max(0.0, min(self.burst_size, self.burst_size - (self._tat - self._now()) * self.rate))

    @property
    def stats(self) -> LimiterStats:
        span = self._last_grant - self._first_grant if self._first_grant is not None else 0.0
        achieved = (self._acquired - self._first_tokens) / span if span > 0 else 0.0
        return LimiterStats(
            rate=self.rate,
            burst_size=self.burst_size,
            acquired=self._acquired,
            waited=self._waited,
            waiting=self._live_waiters(),
            total_wait_seconds=self._total_wait,
            max_wait_seconds=self._max_wait,
            achieved_rate=achieved,
        )

    def wait_histogram(self) -> HistogramSnapshot:
        """How long the acquires that had to wait waited (seconds), by bucket: what an
        exporter publishes as a distribution. Only the waiting path pays for it."""
        return self._waits.snapshot()

    # ----------------------------------------------------------------- public API

    async def acquire(self, tokens: float = 1) -> None:
        """Wait until ``tokens`` are available and take them (first come, first served)."""
        if tokens.__class__ is not int or tokens != 1:  # Decimal(1) == 1 too, but is no float
            tokens = self._check_tokens(tokens)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        now = loop.time()
        if not self._waiters:
            tat = self._tat
            if tat - (self.burst_size - tokens) * self._interval <= now + CLOCK_SLACK:
                self._tat = (tat if tat > now else now) + tokens * self._interval
                self._record_grant(now, tokens)
                return
        await self._wait(loop, now, tokens)

    def try_acquire(self, tokens: float = 1) -> bool:
        """Take ``tokens`` if they are available now and nobody is waiting; never waits."""
        tokens = self._check_tokens(tokens)
        if self._waiters:
            return False
        now = self._now()
        tat = self._tat
        if tat - (self.burst_size - tokens) * self._interval > now + CLOCK_SLACK:
            return False
        self._tat = max(tat, now) + tokens * self._interval
        self._record_grant(now, tokens)
        return True

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        return None

    # ----------------------------------------------------------------- internals

    def _check_tokens(self, tokens: Any) -> float:
        tokens = check_number("tokens", tokens, positive=True)
        if tokens > self.burst_size:
            raise ValueError(
                f"tokens must be <= burst_size ({self.burst_size:g}), got {tokens:g}: "
                "such a request could never be served"
            )
        return tokens

    def _now(self) -> float:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            if loop is not self._loop:
                self._bind(loop)
            return loop.time()
        return time.monotonic() + self._clock_offset  # outside a loop: the served loop's clock

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve ``loop`` from now on, its clock and timers. The schedule moves over on the
        monotonic clock (loops may count from other origins: uvloop's does)."""
        with self._bind_lock:
            old = self._loop
            if old is loop:
                return
            if old is not None and not old.is_closed() and old.is_running():
                raise RuntimeError(
                    "TokenBucketLimiter is in use by an event loop that is still running (another "
                    "thread?): a limiter serves one loop at a time; give each loop its own limiter "
                    "with its share of the rate"
                )
            if self._live_waiters():
                raise RuntimeError("TokenBucketLimiter has waiters in another event loop")
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._waiters.clear()
            offset = loop.time() - time.monotonic()
            self._tat += offset - self._clock_offset  # -inf (a full bucket) stays -inf
            self._clock_offset = offset
            self._loop = loop

    def _live_waiters(self) -> int:
        # A copy first (one C call): a scrape from another thread never sees the deque change.
        return sum(1 for fut, _ in tuple(self._waiters) if not fut.done())

    def _record_grant(self, now: float, tokens: float) -> None:
        if self._first_grant is None:
            self._first_grant = now
            self._first_tokens = tokens
        self._last_grant = now
        self._acquired += tokens

    async def _wait(self, loop: asyncio.AbstractEventLoop, enqueued: float, tokens: float) -> None:
        fut = loop.create_future()
        self._waiters.append((fut, tokens))
        if len(self._waiters) == 1:
            self._dispatch()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Granted, but cancelled before it could resume: give the tokens back.
                self._tat -= tokens * self._interval
                self._acquired -= tokens
            self._dispatch()  # the head may have changed, or tokens came back
            raise
        waited = loop.time() - enqueued
        self._waited += 1
        self._total_wait += waited
        if waited > self._max_wait:
            self._max_wait = waited
        self._waits.observe(waited)
        if self._strict:
            # The caller sends when it resumes, not when it was granted: a resume delayed by
            # a busy loop must push the next grant back too, or two sends come close. Last,
            # so the caller's next line runs microseconds after this time.
            self._tat = max(self._tat, loop.time() + tokens * self._interval)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch(from_timer=True)

    def _dispatch(self, from_timer: bool = False) -> None:
        """Grant every waiter at the head of the queue whose due time has come."""
        loop = self._loop
        assert loop is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiters = self._waiters
        now = loop.time()
        interval = self._interval
        woke_early = from_timer
        while waiters:
            fut, tokens = waiters[0]
            if fut.done():  # cancelled while waiting
                waiters.popleft()
                continue
            due = self._tat - (self.burst_size - tokens) * interval
            if due > now + CLOCK_SLACK:
                if self._strict:
                    # Wake a timer tick early, then poll the loop until due: a strict grant
                    # may not be early and every late one loses rate, so the last stretch
                    # (at most a tick) is spent polling instead of oversleeping.
                    if due - now > TIMER_TICK_SECONDS:
                        self._timer = loop.call_at(due - TIMER_TICK_SECONDS, self._on_timer)
                    elif now > self._polled_at:  # the clock moves while the loop polls
                        self._polled_at = now
                        self._timer = loop.call_soon(self._on_timer)
                    else:  # a clock that stands still between iterations (a virtual one)
                        self._timer = loop.call_at(due, self._on_timer)
                    return
                when = max(due, now + MIN_REARM_DELAY) if woke_early else due
                self._timer = loop.call_at(when, self._on_timer)
                return
            woke_early = False
            # Credit a late wake-up at its due time, by at most one request's worth (strict
            # spacing: never; the grant counts from now).
            granted_at = now if self._strict else max(due, now - tokens * interval)
            self._tat = max(self._tat, granted_at) + tokens * interval
            waiters.popleft()
            fut.set_result(None)
            self._record_grant(now, tokens)
