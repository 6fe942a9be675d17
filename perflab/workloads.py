"""Realistic workloads: the market-data collector's log records, and simulated services
(a rate-limited API, a sink) to sweep the primitives against.

``generate_records`` yields what a collector polling a universe of ~2,000 symbols on two
tracks logs per response: an ISO timestamp with microseconds, the symbol and its track,
price, cumulative volume, bid and ask, a status (mostly "ok"; some "rate_limited",
"timeout" and "error" with null quotes), a 128-bit request id (a W3C trace id) and the
latency in ms. That is about 200 bytes a record of which gzip-6 saves about 74%: the
random request id and the prices' low digits are what a small repetitive sample lacks,
and why such a sample overstates compression.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from perflab._validate import check_int, check_number

__all__ = [
    "APIStats",
    "DEFAULT_START",
    "Latency",
    "Response",
    "SimulatedAPI",
    "SimulatedSink",
    "UNIVERSE_SIZE",
    "generate_records",
    "symbol_universe",
    "write_dataset",
]

UNIVERSE_SIZE = 2000
#: First timestamp of a generated data set (UTC, microseconds since the epoch).
DEFAULT_START = np.datetime64("2026-11-27T14:30:00", "us")
_CYCLE_SECONDS = 5.0  # every symbol is polled once per cycle
_STATUSES = np.array(["ok", "rate_limited", "timeout", "error"])
_STATUS_WEIGHTS = [0.97, 0.015, 0.01, 0.005]
_LETTERS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


def symbol_universe(size: int = UNIVERSE_SIZE, *, seed: int = 12345) -> list[str]:
    """``size`` distinct ticker-like symbols of 1-5 letters, the same for the same seed."""
    check_int("size", size, minimum=1, maximum=100_000)
    return list(_universe(size, seed))


@functools.lru_cache(maxsize=8)
def _universe(size: int, seed: int) -> tuple[str, ...]:
    rng = np.random.default_rng(seed)
    symbols: dict[str, None] = {}
    while len(symbols) < size:
        length = int(rng.choice([1, 2, 3, 4, 5], p=[0.02, 0.08, 0.3, 0.45, 0.15]))
        symbols["".join(rng.choice(_LETTERS, length))] = None
    return tuple(symbols)


def generate_records(
    count: int, *, seed: int = 0, universe: int = UNIVERSE_SIZE, start: np.datetime64 = DEFAULT_START
) -> Iterator[dict[str, Any]]:
    """Yield ``count`` log records, deterministic for a seed, one polling cycle at a time.

    Each cycle polls every symbol once (track "A" for the first half of the universe, "B"
    for the rest); responses arrive in the order their latencies give.
    """
    check_int("count", count, minimum=0)
    check_int("seed", seed, minimum=0)
    symbols = symbol_universe(universe)
    track = ["A" if i < universe // 2 else "B" for i in range(universe)]
    rng = np.random.default_rng(seed)
    setup = np.random.default_rng(seed + 1)
    price = np.round(np.exp(setup.normal(3.5, 1.0, universe)), 2).clip(1, 2000)
    volume = setup.integers(1_000, 100_000, universe).astype(np.int64)
    made = 0
    cycle = 0
    while made < count:
        k = min(universe, count - made)
        order = rng.permutation(universe)[:k]
        price[order] = np.maximum(np.round(price[order] * (1 + rng.normal(0, 0.0008, k)), 2), 0.01)
        volume[order] += rng.integers(0, 5_000, k)
        offsets_us = np.sort(rng.uniform(0, _CYCLE_SECONDS * 0.8, k)) * 1e6
        stamps = (
            start
            + np.timedelta64(int(cycle * _CYCLE_SECONDS * 1e6), "us")
            + offsets_us.astype("timedelta64[us]")
        )
        half_spread = rng.integers(1, 6, k) / 200
        status = rng.choice(len(_STATUSES), size=k, p=_STATUS_WEIGHTS)
        ids = rng.integers(0, 2**63, (k, 2))
        latency = np.round(np.exp(rng.normal(np.log(40.0), 0.6, k)), 3)
        p = price[order]
        bid = np.round(p - half_spread, 2)
        ask = np.round(p + half_spread, 2)
        for stamp, s, st, hi, lo, lat, pj, bj, aj, vj in zip(
            np.datetime_as_string(stamps, unit="us").tolist(),
            order.tolist(),
            status.tolist(),
            ids[:, 0].tolist(),
            ids[:, 1].tolist(),
            latency.tolist(),
            p.tolist(),
            bid.tolist(),
            ask.tolist(),
            volume[order].tolist(),
            strict=True,
        ):
            ok = st == 0
            yield {
                "ts": stamp + "Z",
                "symbol": symbols[s],
                "track": track[s],
                "price": pj if ok else None,
                "volume": vj if ok else None,
                "bid": bj if ok else None,
                "ask": aj if ok else None,
                "status": _STATUSES[st].item(),
                "request_id": f"{hi:016x}{lo:016x}",
                "latency_ms": lat,
            }
        made += k
        cycle += 1


def write_dataset(
    path: str | os.PathLike[str], count: int, *, seed: int = 0, progress: bool = False, **writer_options: Any
) -> int:
    """Write ``count`` generated records to ``path`` (compressed if it ends in .gz/.zst);
    return the bytes written."""
    from perflab.writers import BufferedWriter, CompressedWriter

    name = os.fspath(path)
    if name.endswith(".gz"):
        writer: Any = CompressedWriter(path, codec="gzip", **writer_options)
    elif name.endswith((".zst", ".zstd")):
        writer = CompressedWriter(path, codec="zstd", **writer_options)
    else:
        writer = BufferedWriter(path, **writer_options)
    records = generate_records(count, seed=seed)
    if progress:
        from tqdm.auto import tqdm

        records = tqdm(records, total=count, unit="rec", unit_scale=True, desc=os.path.basename(name))
    with writer:
        writer.write_many(records)
    return writer.stats.bytes_written


# --------------------------------------------------------------------------- simulated services

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
    status: int  # 200, 429 (rate limit or concurrency cap), 500 (an error)
    latency_seconds: float


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
    ``max_concurrency`` calls in flight, or past its own token bucket of ``rate_limit``
    calls per second (burst ``rate_burst``), it answers 429 at once (after
    ``reject_ms``). Usage::

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
        """One request: sleeps for its latency and answers 200, 429 or 500."""
        loop = asyncio.get_running_loop()
        self._calls += 1
        if self.max_concurrency is not None and self._in_flight >= self.max_concurrency:
            self._rejected_cap += 1
            await asyncio.sleep(self.reject_seconds)
            return Response(429, self.reject_seconds)
        if not self._take_token(loop.time()):
            self._rejected_rate += 1
            await asyncio.sleep(self.reject_seconds)
            return Response(429, self.reject_seconds)
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
