"""Simulated services to sweep the primitives against: a latency model, an API with a rate
limit (a token bucket with burst, answering 429 with Retry-After) and a concurrency cap
(answering 503), as nginx's ``limit_req`` and ``limit_conn`` do, and a sink with a
per-call and a per-item cost."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from perflab._validate import check_int, check_number

__all__ = ["REFUSED", "APIStats", "Latency", "Response", "SimulatedAPI", "SimulatedSink"]

#: The statuses a server refuses with: 429 (rate limit), 503 (concurrency cap).
REFUSED = (429, 503)

_Z99 = 2.3263478740408408  # the standard normal's 99th percentile


@dataclasses.dataclass(frozen=True, slots=True)
class Latency:
    """A latency distribution: constant, or lognormal given its p50 and p99 (in ms).

    ``Latency.parse("lognormal:20:120")`` and ``Latency.parse("constant:20")`` read the
    compact form the notebooks' parameters use.
    """

    p50_ms: float
    p99_ms: float

    def __post_init__(self) -> None:
        check_number("p50_ms", self.p50_ms, positive=True)
        check_number("p99_ms", self.p99_ms, positive=True)
        if self.p99_ms < self.p50_ms:
            raise ValueError(f"p99_ms must be >= p50_ms ({self.p50_ms:g}), got {self.p99_ms:g}")

    @classmethod
    def constant(cls, ms: float) -> Latency:
        return cls(ms, ms)

    @classmethod
    def lognormal(cls, p50_ms: float, p99_ms: float) -> Latency:
        return cls(p50_ms, p99_ms)

    @classmethod
    def parse(cls, text: str) -> Latency:
        kind, _, rest = str(text).partition(":")
        try:
            numbers = [float(part) for part in rest.split(":")] if rest else []
        except ValueError:
            numbers = []
        if kind == "constant" and len(numbers) == 1:
            return cls.constant(numbers[0])
        if kind == "lognormal" and len(numbers) == 2:
            return cls.lognormal(*numbers)
        raise ValueError(f"latency must be 'constant:MS' or 'lognormal:P50_MS:P99_MS', got {text!r}")

    @property
    def sigma(self) -> float:
        return math.log(self.p99_ms / self.p50_ms) / _Z99

    @property
    def mean_ms(self) -> float:
        """The distribution's mean: Little's law needs it, not the median."""
        return self.p50_ms * math.exp(self.sigma**2 / 2)

    def sampler(self, seed: int) -> Callable[[], float]:
        """A function returning one latency in seconds per call, seeded."""
        if self.sigma == 0:
            seconds = self.p50_ms / 1000
            return lambda: seconds
        rng = np.random.default_rng(seed)
        mu = math.log(self.p50_ms / 1000)
        sigma = self.sigma
        block: list[float] = []

        def draw() -> float:
            if not block:
                block.extend(rng.lognormal(mu, sigma, 4096).tolist())
            return block.pop()

        return draw


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    status: int  # 200, 429 (rate limit), 503 (concurrency cap), 500 (an error)
    latency_seconds: float
    retry_after: float | None = None  # seconds, with a 429: until the next token


@dataclasses.dataclass(frozen=True, slots=True)
class APIStats:
    calls: int
    ok: int
    errors: int
    rejected_rate: int
    rejected_concurrency: int
    peak_concurrency: int

    @property
    def rejected(self) -> int:
        return self.rejected_rate + self.rejected_concurrency

    def as_dict(self) -> dict[str, int]:
        return {**dataclasses.asdict(self), "rejected": self.rejected}


class SimulatedAPI:
    """A seeded stand-in for a rate-limited market-data API.

    Each call sleeps for a latency drawn from ``latency`` and answers 200, or 500 with
    probability ``error_rate``. Like a real server it protects itself: beyond
    ``max_concurrency`` calls in flight it answers 503 (nginx ``limit_conn``); past its
    own token bucket of ``rate_limit`` calls per second (burst ``rate_burst``) it answers
    429 with a Retry-After of the time until its next token (``limit_req``); both at once
    (after ``reject_ms``). Usage::

        api = SimulatedAPI(latency=Latency.lognormal(20, 120), max_concurrency=32, seed=1)
        response = await api.call("AAPL")
    """

    def __init__(
        self,
        *,
        latency: Latency | str = "constant:20",
        error_rate: float = 0.0,
        rate_limit: float | None = None,
        rate_burst: float | None = None,
        max_concurrency: int | None = None,
        reject_ms: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.latency = Latency.parse(latency) if isinstance(latency, str) else latency
        self.error_rate = check_number("error_rate", error_rate, minimum=0, maximum=1)
        self.rate_limit = (
            None if rate_limit is None else check_number("rate_limit", rate_limit, positive=True)
        )
        if rate_burst is None:
            rate_burst = max(1.0, (self.rate_limit or 1.0) / 10)
        self.rate_burst = check_number("rate_burst", rate_burst, minimum=1)
        self.max_concurrency = (
            None if max_concurrency is None else check_int("max_concurrency", max_concurrency, minimum=1)
        )
        self.reject_seconds = check_number("reject_ms", reject_ms, minimum=0) / 1000
        check_int("seed", seed, minimum=0)
        self._draw = self.latency.sampler(seed)
        self._errors = np.random.default_rng(seed + 1)
        self._tokens = self.rate_burst
        self._refilled: float | None = None
        self._in_flight = 0
        self._calls = self._ok = self._failed = self._rejected_rate = self._rejected_cap = self._peak = 0

    @property
    def stats(self) -> APIStats:
        return APIStats(
            self._calls, self._ok, self._failed, self._rejected_rate, self._rejected_cap, self._peak
        )

    def _take_token(self, now: float) -> bool:
        if self.rate_limit is None:
            return True
        if self._refilled is None:
            self._refilled = now
        self._tokens = min(self.rate_burst, self._tokens + (now - self._refilled) * self.rate_limit)
        self._refilled = now
        if self._tokens >= 1 - 1e-9:  # float refills land a hair under a whole token
            self._tokens -= 1
            return True
        return False

    async def call(self, symbol: str = "") -> Response:
        """One request: sleeps for its latency and answers 200, 429, 503 or 500."""
        loop = asyncio.get_running_loop()
        self._calls += 1
        if self.max_concurrency is not None and self._in_flight >= self.max_concurrency:
            self._rejected_cap += 1
            await asyncio.sleep(self.reject_seconds)
            return Response(503, self.reject_seconds)
        if not self._take_token(loop.time()):
            self._rejected_rate += 1
            assert self.rate_limit is not None
            retry_after = (1 - self._tokens) / self.rate_limit
            await asyncio.sleep(self.reject_seconds)
            return Response(429, self.reject_seconds, retry_after)
        self._in_flight += 1
        self._peak = max(self._peak, self._in_flight)
        latency = self._draw()
        try:
            await asyncio.sleep(latency)
        finally:
            self._in_flight -= 1
        if self.error_rate and self._errors.random() < self.error_rate:
            self._failed += 1
            return Response(500, latency)
        self._ok += 1
        return Response(200, latency)


class SimulatedSink:
    """A sink (database, object store) costing ``per_call_ms`` per write plus
    ``per_item_ms`` per item; records when each batch landed."""

    def __init__(self, *, per_call_ms: float = 2.0, per_item_ms: float = 0.02) -> None:
        self.per_call = check_number("per_call_ms", per_call_ms, minimum=0) / 1000
        self.per_item = check_number("per_item_ms", per_item_ms, minimum=0) / 1000
        self.calls = 0
        self.items = 0
        self.landed: list[tuple[float, list[Any]]] = []  # (loop time, batch)

    async def write(self, batch: list[Any]) -> None:
        await asyncio.sleep(self.per_call + self.per_item * len(batch))
        self.calls += 1
        self.items += len(batch)
        self.landed.append((asyncio.get_running_loop().time(), batch))
