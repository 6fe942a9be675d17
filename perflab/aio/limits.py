"""Adaptive concurrency limits for :class:`~perflab.aio.taskpool.TaskPool`.

A static pool size is right for one server on one day. An adaptive limit finds the
server's concurrency limit at run time and follows it when it moves: the pool asks the
limit how many calls may run, and tells it how every call ended (its start, its round-trip
time, how many calls were running when it started, and whether it was dropped: refused by
the server, ``Rejected``, or timed out).

The update rules are those of Netflix's concurrency-limits (Java), which are the field's
reference; each class names its source and where perflab departs from it:

* :class:`AIMD` -- loss based: x0.9 on a drop, +1 on a success while at least half the
  limit is in use (``AIMDLimit``).
* :class:`Gradient2` -- latency based: the gradient between a long-term average RTT and the
  last RTT, plus a fixed queue allowance, smoothed (``Gradient2Limit``). As published it
  ignores drops; a refusal that comes back fast even looks like a short RTT (Netflix#176).
* :class:`Vegas` -- latency based: the queue implied by the RTT against the no-load RTT
  (``VegasLimit``, TCP Vegas).
* :class:`Windowed` -- feeds any of them one aggregate sample per window of calls instead
  of one per call (``WindowedLimit``): a limit then moves once per round trip, not once per
  answer, which is how TCP grows its window.

:class:`Throttle` is Google SRE's client-side adaptive throttling (chapter 21): reject a
call locally with probability ``max(0, (requests - k * accepts) / (requests + 1))``.

A user's own limit only has to satisfy :class:`Limit`.
"""

from __future__ import annotations

import math
import random
from collections import deque
from typing import Protocol, runtime_checkable

from perflab._validate import check_int, check_number, check_optional_number

__all__ = [
    "AIMD",
    "Gradient2",
    "Limit",
    "Rejected",
    "Throttle",
    "Throttled",
    "Vegas",
    "Windowed",
]


@runtime_checkable
class Limit(Protocol):
    """What a pool needs of an adaptive limit.

    ``limit`` is the number of calls that may run now (>= 1). ``on_sample`` is told of
    every call that ended: ``start`` (loop time it started), ``rtt`` (seconds to its
    outcome), ``in_flight`` (calls running when it started, itself included) and
    ``dropped`` (refused, or timed out)."""

    @property
    def limit(self) -> int: ...

    def on_sample(self, start: float, rtt: float, in_flight: int, dropped: bool) -> None: ...


class Rejected(Exception):
    """Raise from a pool's call when the server refused it (429, 503, ...): the pool counts
    a drop for its limit and starts no call before ``retry_after`` seconds have passed
    (capped by the pool's ``max_retry_after``)."""

    def __init__(self, message: str = "the server refused the call", *, retry_after: float | None = None):
        super().__init__(message)
        if retry_after is not None:
            retry_after = check_number("retry_after", retry_after, minimum=0.0)
        self.retry_after = retry_after


class Throttled(Rejected):
    """A call the client throttled itself (:class:`Throttle`): it was never sent."""

    def __init__(self, probability: float) -> None:
        super().__init__(f"throttled locally (reject probability {probability:.2f})")
        self.probability = probability


def _bounds(initial: int, min_limit: int, max_limit: int) -> None:
    check_int("initial", initial, minimum=1)
    check_int("min_limit", min_limit, minimum=1)
    check_int("max_limit", max_limit, minimum=1)
    if not min_limit <= max_limit:
        raise ValueError(f"min_limit ({min_limit}) must be <= max_limit ({max_limit})")
    if not min_limit <= initial <= max_limit:
        raise ValueError(f"initial ({initial}) must be in [{min_limit}, {max_limit}]")


class AIMD:
    """Additive increase, multiplicative decrease (Netflix ``AIMDLimit``).

    On a drop, or a call slower than ``timeout``: ``limit = max(min_limit, min(limit - 1,
    int(limit * backoff)))``. On a success while ``in_flight * 2 >= limit``: ``limit + 1``.
    Otherwise unchanged (the pool is not using its limit, so it learns nothing).

    Defaults are Netflix's (backoff 0.9, timeout 5 s, initial 20, max 200) except
    ``min_limit``: Netflix floors at 20, above the cap of many rate-limited APIs; here 1.

    Departure: a drop backs off only if its call started after the last back-off. A burst
    of refusals is one congestion event (TCP backs off once per window of loss); counted
    one by one, 24 refusals from one overshoot would cut the limit to 0.9^24 = 8% of it.
    """

    __slots__ = ("backoff", "timeout", "min_limit", "max_limit", "_limit", "_backed_off_at")

    def __init__(
        self,
        initial: int = 20,
        *,
        backoff: float = 0.9,
        timeout: float = 5.0,
        min_limit: int = 1,
        max_limit: int = 200,
    ) -> None:
        _bounds(initial, min_limit, max_limit)
        check_number("backoff", backoff, minimum=0.5)
        if backoff >= 1.0:
            raise ValueError(f"backoff must be in [0.5, 1.0), got {backoff!r}")
        self.backoff = float(backoff)
        self.timeout = check_number("timeout", timeout, positive=True)
        self.min_limit, self.max_limit = min_limit, max_limit
        self._limit = initial
        self._backed_off_at = -math.inf

    @property
    def limit(self) -> int:
        return self._limit

    def on_sample(self, start: float, rtt: float, in_flight: int, dropped: bool) -> None:
        current = self._limit
        if dropped or rtt > self.timeout:
            if start < self._backed_off_at:
                return  # sent before the last back-off: part of the event already counted
            self._backed_off_at = start + rtt
            new = min(current - 1, int(current * self.backoff))
        elif in_flight * 2 >= current:
            new = current + 1
        else:
            return
        self._limit = max(self.min_limit, min(self.max_limit, new))

    def __repr__(self) -> str:
        return f"AIMD(limit={self._limit}, bounds=[{self.min_limit}, {self.max_limit}])"


class _ExpAverage:
    """Netflix's ``ExpAvgMeasurement``: a plain mean over the first ``warmup`` samples, then
    an exponential average with factor ``2 / (window + 1)``."""

    __slots__ = ("factor", "warmup", "count", "total", "value")

    def __init__(self, window: int, warmup: int) -> None:
        self.factor = 2.0 / (window + 1)
        self.warmup = warmup
        self.count = 0
        self.total = 0.0
        self.value = 0.0

    def add(self, sample: float) -> float:
        if self.count < self.warmup:
            self.count += 1
            self.total += sample
            self.value = self.total / self.count
        else:
            self.value = self.value * (1 - self.factor) + sample * self.factor
        return self.value


class Gradient2:
    """Latency-gradient limit (Netflix ``Gradient2Limit``).

    Per call: ``long`` is an exponential average of RTTs over ``long_window`` calls (a plain
    mean over the first 10); if ``long / rtt > 2`` the average is cut by 10% (recovery
    after overload). While ``in_flight >= limit / 2``::

        gradient = clamp(tolerance * long / rtt, 0.5, 1.0)
        new = limit * gradient + queue_size
        limit = clamp(limit * (1 - smoothing) + new * smoothing, min_limit, max_limit)

    Defaults are Netflix's (initial 20, max 200, smoothing 0.2, queue 4, long window 600,
    tolerance 1.5) except ``min_limit`` 1 (Netflix: 20). As published, ``dropped`` is not
    read: a refusal's short RTT counts like a fast answer (Netflix#176). ``drop_backoff``
    (e.g. 0.9) opts into multiplying the limit by it on a drop instead.
    """

    __slots__ = (
        "smoothing",
        "queue_size",
        "tolerance",
        "min_limit",
        "max_limit",
        "drop_backoff",
        "_estimate",
        "_long",
    )

    def __init__(
        self,
        initial: int = 20,
        *,
        min_limit: int = 1,
        max_limit: int = 200,
        smoothing: float = 0.2,
        queue_size: int = 4,
        long_window: int = 600,
        tolerance: float = 1.5,
        drop_backoff: float | None = None,
    ) -> None:
        _bounds(initial, min_limit, max_limit)
        self.smoothing = check_number("smoothing", smoothing, positive=True, maximum=1.0)
        self.queue_size = check_int("queue_size", queue_size, minimum=0)
        check_int("long_window", long_window, minimum=1)
        self.tolerance = check_number("tolerance", tolerance, minimum=1.0)
        self.drop_backoff = check_optional_number("drop_backoff", drop_backoff, positive=True)
        if self.drop_backoff is not None and self.drop_backoff >= 1.0:
            raise ValueError(f"drop_backoff must be in (0, 1), got {drop_backoff!r}")
        self.min_limit, self.max_limit = min_limit, max_limit
        self._estimate = float(initial)
        self._long = _ExpAverage(long_window, warmup=10)

    @property
    def limit(self) -> int:
        return int(self._estimate)

    @property
    def long_rtt(self) -> float:
        """The long-term average RTT, seconds."""
        return self._long.value

    def on_sample(self, start: float, rtt: float, in_flight: int, dropped: bool) -> None:
        estimate = self._estimate
        if dropped and self.drop_backoff is not None:
            self._estimate = max(float(self.min_limit), estimate * self.drop_backoff)
            return
        if rtt <= 0.0:
            return  # no latency to learn from (Netflix requires rtt > 0)
        long = self._long.add(rtt)
        if long / rtt > 2:
            self._long.value = long * 0.9
        if in_flight < estimate / 2:
            return  # app limited: the limit is not what holds calls back
        gradient = max(0.5, min(1.0, self.tolerance * long / rtt))
        new = estimate * gradient + self.queue_size
        new = estimate * (1 - self.smoothing) + new * self.smoothing
        self._estimate = max(float(self.min_limit), min(float(self.max_limit), new))

    def __repr__(self) -> str:
        return f"Gradient2(limit={self.limit}, long_rtt={self._long.value * 1e3:.1f} ms)"


def _log10_root(limit: int) -> int:
    """Netflix's ``Log10RootFunction.create(0)``: ``max(1, int(log10(limit)))``."""
    return max(1, int(math.log10(limit))) if limit >= 1 else 1


class Vegas:
    """Queue-estimating limit after TCP Vegas (Netflix ``VegasLimit``).

    ``rtt_noload`` is the smallest RTT seen (re-probed every ``probe_multiplier * limit *
    U(0.5, 1)`` calls); the queue is ``ceil(limit * (1 - rtt_noload / rtt))``. With
    ``L = max(1, int(log10(limit)))``: a drop gives ``limit - L``; while ``in_flight * 2 >=
    limit``, a queue <= L gives ``limit + 6L``, < 3L gives ``limit + L``, > 6L gives
    ``limit - L``. The result is clamped to [1, max_limit] and smoothed.

    Defaults are Netflix's (initial 20, max 1000, smoothing 1.0, probe multiplier 30).
    Behind a server-side rate limit the RTT does not grow with the queue, so Vegas cannot
    see it (Netflix#72). ``seed`` makes the probe jitter repeatable.
    """

    __slots__ = (
        "max_limit",
        "smoothing",
        "probe_multiplier",
        "_estimate",
        "_rtt_noload",
        "_probe_count",
        "_probe_jitter",
        "_random",
    )

    def __init__(
        self,
        initial: int = 20,
        *,
        max_limit: int = 1000,
        smoothing: float = 1.0,
        probe_multiplier: int = 30,
        seed: int | None = None,
    ) -> None:
        _bounds(initial, 1, max_limit)
        self.smoothing = check_number("smoothing", smoothing, positive=True, maximum=1.0)
        self.probe_multiplier = check_int("probe_multiplier", probe_multiplier, minimum=1)
        self.max_limit = max_limit
        self._estimate = float(initial)
        self._rtt_noload = 0.0
        self._probe_count = 0
        self._random = random.Random(seed)
        self._probe_jitter = self._random.uniform(0.5, 1.0)

    @property
    def limit(self) -> int:
        return int(self._estimate)

    @property
    def rtt_noload(self) -> float:
        """The no-load RTT it measures queues against, seconds (0 before the first call)."""
        return self._rtt_noload

    def on_sample(self, start: float, rtt: float, in_flight: int, dropped: bool) -> None:
        if rtt <= 0.0:
            return  # Netflix requires rtt > 0
        self._probe_count += 1
        if self._probe_jitter * self.probe_multiplier * self._estimate <= self._probe_count:
            self._probe_jitter = self._random.uniform(0.5, 1.0)
            self._probe_count = 0
            self._rtt_noload = rtt
            return
        if self._rtt_noload == 0.0 or rtt < self._rtt_noload:
            self._rtt_noload = rtt
            return
        estimate = self._estimate
        step = _log10_root(int(estimate))
        if dropped:
            new = estimate - step
        elif in_flight * 2 < estimate:
            return
        else:
            queue = math.ceil(estimate * (1 - self._rtt_noload / rtt))
            if queue <= step:
                new = estimate + 6 * step
            elif queue < 3 * step:
                new = estimate + step
            elif queue > 6 * step:
                new = estimate - step
            else:
                return
        new = max(1.0, min(float(self.max_limit), new))
        self._estimate = (1 - self.smoothing) * estimate + self.smoothing * new

    def __repr__(self) -> str:
        return f"Vegas(limit={self.limit}, rtt_noload={self._rtt_noload * 1e3:.1f} ms)"


class Windowed:
    """Feed ``limit`` one sample per window of calls (Netflix ``WindowedLimit``).

    A window closes when it has ``samples`` calls and has lasted its length: twice its
    mean RTT, clamped to [min_window, max_window] seconds. ``limit`` then gets one sample:
    the window's first start, its mean RTT, the most calls in flight, and whether any call
    was dropped. Calls whose RTT is under ``min_rtt`` (a refusal answered at once) count
    for the drop flag but not for the mean. Netflix's defaults are 1 s, 1 s, 10 samples;
    for a fast API pass a window of a few round trips.

    Departure: a drop closes the window at once and is passed on as it came (its start and
    round trip, the window's most in flight). Refusals come back fast, and a limit that
    waits for the window's end to back off keeps sending calls to be refused.
    """

    __slots__ = ("inner", "min_window", "max_window", "samples", "min_rtt", "_window")

    def __init__(
        self,
        limit: Limit,
        *,
        min_window: float = 1.0,
        max_window: float = 1.0,
        samples: int = 10,
        min_rtt: float = 100e-6,
    ) -> None:
        if not isinstance(limit, Limit):
            raise TypeError(f"limit must be a Limit (limit, on_sample), got {type(limit).__name__}")
        self.inner = limit
        self.min_window = check_number("min_window", min_window, positive=True)
        self.max_window = check_number("max_window", max_window, positive=True)
        if self.max_window < self.min_window:
            raise ValueError(f"max_window ({max_window}) must be >= min_window ({min_window})")
        self.samples = check_int("samples", samples, minimum=1)
        self.min_rtt = check_number("min_rtt", min_rtt, minimum=0.0)
        # [first start, rtt sum, rtt count, calls, most in flight, dropped]
        self._window: list[float] | None = None

    @property
    def limit(self) -> int:
        return self.inner.limit

    def on_sample(self, start: float, rtt: float, in_flight: int, dropped: bool) -> None:
        window = self._window
        if window is None:
            window = self._window = [start, 0.0, 0.0, 0.0, 0.0, 0.0]
        if rtt >= self.min_rtt and not dropped:
            window[1] += rtt
            window[2] += 1
        window[3] += 1
        window[4] = max(window[4], in_flight)
        if dropped:
            window[5] = 1.0
        end = start + rtt
        mean = window[1] / window[2] if window[2] else 0.0
        length = min(self.max_window, max(self.min_window, 2 * mean))
        if dropped:
            # Closed by a drop, passed on as it came (its start and round trip): a limit
            # that backs off once per event then knows which calls were sent before it.
            self._window = None
            self.inner.on_sample(start, rtt, int(window[4]), True)
        elif window[3] >= self.samples and end - window[0] >= length:
            self._window = None
            self.inner.on_sample(window[0], mean, int(window[4]), bool(window[5]))

    def __repr__(self) -> str:
        return f"Windowed({self.inner!r}, window={self.min_window:g}-{self.max_window:g} s)"


class Throttle:
    """Client-side adaptive throttling (Google SRE book, "Handling Overload").

    Over the last ``window`` seconds, with ``requests`` the calls the client attempted
    (throttled ones included) and ``accepts`` those the server accepted, a new call is
    rejected locally with probability ``max(0, (requests - k * accepts) / (requests + 1))``.
    ``k`` = 2 (the book's) lets through twice what the server accepts; lower is more
    aggressive. ``seed`` makes the coin flips repeatable.
    """

    __slots__ = ("k", "window", "_buckets", "_requests", "_accepts", "_random")

    _BUCKETS = 60

    def __init__(self, k: float = 2.0, *, window: float = 120.0, seed: int | None = None) -> None:
        self.k = check_number("k", k, minimum=1.0)
        self.window = check_number("window", window, positive=True)
        self._buckets: deque[list[float]] = deque()  # [bucket start, requests, accepts]
        self._requests = 0.0
        self._accepts = 0.0
        self._random = random.Random(seed)

    def probability(self, now: float) -> float:
        """The probability that a call made at ``now`` is rejected locally."""
        self._expire(now)
        return max(0.0, (self._requests - self.k * self._accepts) / (self._requests + 1))

    def allow(self, now: float) -> bool:
        """Flip the coin for a call at ``now``; a rejected call is counted as a request."""
        p = self.probability(now)
        if p > 0.0 and self._random.random() < p:
            self.record(now, accepted=False)
            return False
        return True

    def record(self, now: float, accepted: bool) -> None:
        """A call sent at ``now`` came back: accepted by the server, or refused."""
        self._expire(now)
        width = self.window / self._BUCKETS
        buckets = self._buckets
        if not buckets or now >= buckets[-1][0] + width:
            buckets.append([now, 0.0, 0.0])
        bucket = buckets[-1]
        bucket[1] += 1
        self._requests += 1
        if accepted:
            bucket[2] += 1
            self._accepts += 1

    def _expire(self, now: float) -> None:
        buckets = self._buckets
        while buckets and buckets[0][0] <= now - self.window:
            _, requests, accepts = buckets.popleft()
            self._requests -= requests
            self._accepts -= accepts

    def __repr__(self) -> str:
        return f"Throttle(k={self.k:g}, window={self.window:g} s)"
