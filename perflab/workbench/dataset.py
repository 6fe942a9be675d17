"""The realistic data set: the market-data collector's log records.

``generate_records`` yields what a collector polling a universe of ~2,000 symbols on two
tracks logs per response: an ISO timestamp with microseconds, the symbol and its track,
price, cumulative volume, bid and ask, a status (mostly "ok"; some "rate_limited",
"timeout" and "error" with null quotes), a 128-bit request id (a W3C trace id) and the
latency in ms. That is about 200 bytes a record of which gzip-6 saves about 74%: the
random request id and the prices' low digits are what a small repetitive sample lacks,
and why such a sample overstates compression.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from perflab._validate import check_int

__all__ = [
    "DEFAULT_START",
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
    from perflab.jsonl.codecs import format_of_path
    from perflab.jsonl.writers import BufferedWriter, CompressedWriter

    name = os.fspath(path)
    data_format = format_of_path(path)
    if data_format in ("gzip", "zstd"):
        writer: Any = CompressedWriter(path, codec=data_format, **writer_options)  # type: ignore[arg-type]
    else:
        writer = BufferedWriter(path, **writer_options)
    records = generate_records(count, seed=seed)
    if progress:
        from tqdm.auto import tqdm

        records = tqdm(records, total=count, unit="rec", unit_scale=True, desc=os.path.basename(name))
    with writer:
        writer.write_many(records)
    return writer.stats.bytes_written
