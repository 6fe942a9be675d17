"""The I/O experiments the writing, compression and reading notebooks sweep.

Each function measures one setting on the realistic records (or their serialized bytes)
and returns plain metrics. Writers run inside a :class:`PerformanceProfiler`, so every
point also reports its write calls, page faults and peak memory.
"""

from __future__ import annotations

import json
import random
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import zstandard

from perflab._validate import check_int
from perflab.profiler import PerformanceProfiler
from perflab.readers import MemoryMappedReader, read_jsonl
from perflab.writers import CODEC_LEVELS, BufferedWriter, CompressedWriter

__all__ = [
    "BASELINES",
    "READ_WAYS",
    "aiofiles_baseline",
    "compress_chunks",
    "codec_experiment",
    "flush_mode_experiment",
    "line_chunks",
    "read_experiment",
    "sample_savings",
    "serialize",
    "write_baseline",
    "write_experiment",
]

_OPT = orjson.OPT_APPEND_NEWLINE
_MB = 1e6


def serialize(records: Sequence[Any]) -> bytes:
    """The JSON-lines bytes of ``records``, as the writers produce them."""
    buffer = bytearray()
    for record in records:
        buffer += orjson.dumps(record, option=_OPT)
    return bytes(buffer)


def _profiled(run: Callable[[], Any], path: Path, records: int) -> dict[str, float]:
    """Run a writer under the profiler; rates count the bytes the file ends up with."""
    with PerformanceProfiler("write") as prof:
        started = time.perf_counter()
        run()
        seconds = time.perf_counter() - started
    result = prof.result
    size = path.stat().st_size
    return {
        "seconds": seconds,
        "mb_per_s": size / _MB / seconds,
        "records_per_s": records / seconds,
        "write_calls": result.io_write_count,
        "minor_faults": result.minor_faults,
        "peak_rss_mb": result.rss_peak_mb - result.rss_start_mb,
    }


def write_experiment(
    records: Sequence[Any], path: str | Path, *, buffer_size: int, max_writes: int, fsync: Any = False
) -> dict[str, float]:
    """Write ``records`` with a BufferedWriter; seconds, MB/s, write calls, faults, memory."""
    target = Path(path)

    def run() -> None:
        with BufferedWriter(target, buffer_size=buffer_size, max_writes=max_writes, fsync=fsync) as writer:
            writer.write_many(records)

    return _profiled(run, target, len(records))


def _floor(records: Sequence[Any], path: Path) -> None:
    data = bytearray()
    for record in records:
        data += orjson.dumps(record, option=_OPT)
    with open(path, "wb", buffering=0) as file:
        file.write(data)


def _list_join(records: Sequence[Any], path: Path, chunk: int) -> None:
    lines: list[bytes] = []
    held = 0
    with open(path, "wb", buffering=0) as file:
        for record in records:
            line = orjson.dumps(record, option=_OPT)
            lines.append(line)
            held += len(line)
            if held >= chunk:
                file.write(b"".join(lines))
                lines, held = [], 0
        file.write(b"".join(lines))


def _json_per_record(records: Sequence[Any], path: Path, buffering: int) -> None:
    with open(path, "wb", buffering=buffering) as file:
        for record in records:
            file.write((json.dumps(record) + "\n").encode())


def _orjson_per_record(records: Sequence[Any], path: Path) -> None:
    with open(path, "wb") as file:
        for record in records:
            file.write(orjson.dumps(record, option=_OPT))


async def aiofiles_baseline(records: Sequence[Any], path: str | Path, *, chunked: bool) -> dict[str, float]:
    """aiofiles (each write runs in a thread), per record or in 64 KiB chunks; measured
    inside the running loop, like a notebook's."""
    import aiofiles

    target = Path(path)
    started = time.perf_counter()
    cpu = time.process_time()
    written = 0
    async with aiofiles.open(target, "wb") as file:
        if not chunked:
            for record in records:
                written += await file.write(orjson.dumps(record, option=_OPT))
        else:
            buffer = bytearray()
            for record in records:
                buffer += orjson.dumps(record, option=_OPT)
                if len(buffer) >= 65536:
                    written += await file.write(bytes(buffer))
                    buffer.clear()
            written += await file.write(bytes(buffer))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "mb_per_s": written / _MB / seconds,
        "records_per_s": len(records) / seconds,
        "cpu_seconds": time.process_time() - cpu,
    }


BASELINES: dict[str, Callable[..., None]] = {
    "floor: serialize all + one write": _floor,
    "json.dumps per record, unbuffered": lambda records, path: _json_per_record(records, path, 0),
    "json.dumps per record, buffered": lambda records, path: _json_per_record(records, path, -1),
    "orjson per record, buffered file": _orjson_per_record,
}


def write_baseline(name: str, records: Sequence[Any], path: str | Path, *, chunk: int | None = None) -> dict:
    """One of :data:`BASELINES` (or "list + join" with ``chunk`` bytes), measured the same
    way as :func:`write_experiment`."""
    target = Path(path)
    if name == "list + join":
        size = check_int("chunk", chunk, minimum=1)
        return _profiled(lambda: _list_join(records, target, size), target, len(records))
    if name not in BASELINES:
        raise ValueError(f"name must be one of {sorted(BASELINES) + ['list + join']}, got {name!r}")
    return _profiled(lambda: BASELINES[name](records, target), target, len(records))


# --------------------------------------------------------------------------- compression


def line_chunks(raw: bytes, size: int) -> list[bytes]:
    """``raw`` cut into chunks of at least ``size`` bytes ending at a newline (what a
    writer's flushes carry)."""
    chunks = []
    start = 0
    while start < len(raw):
        end = raw.find(b"\n", start + size - 1)
        end = len(raw) if end < 0 else end + 1
        chunks.append(raw[start:end])
        start = end
    return chunks


def _codec(codec: str, level: int) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    """(compress one self-contained frame, decompress a whole multi-frame file)."""
    if codec not in CODEC_LEVELS or level not in CODEC_LEVELS[codec]:
        raise ValueError(f"{codec}-{level} is not a codec and level CompressedWriter offers")
    if codec == "zstd":
        compressor = zstandard.ZstdCompressor(level=level)
        decompressor = zstandard.ZstdDecompressor()

        def zstd_all(data: bytes) -> bytes:
            import io

            return decompressor.stream_reader(io.BytesIO(data), read_across_frames=True).read()

        return compressor.compress, zstd_all
    if codec == "isal":
        from isal import isal_zlib as module
    else:
        module = zlib

    def deflate(data: bytes) -> bytes:
        compressor = module.compressobj(level, module.DEFLATED, 31)
        return compressor.compress(data) + compressor.flush()

    def inflate_all(data: bytes) -> bytes:
        out = []
        while data:
            decompressor = module.decompressobj(31)
            out.append(decompressor.decompress(data))
            data = decompressor.unused_data
        return b"".join(out)

    return deflate, inflate_all


def compress_chunks(codec: str, level: int, chunks: Sequence[bytes]) -> bytes:
    compress, _ = _codec(codec, level)
    return b"".join(compress(chunk) for chunk in chunks)


def codec_experiment(raw: bytes, *, codec: str, level: int, chunk: int = 65536) -> dict[str, float]:
    """Compress ``raw`` in flush-sized frames (as CompressedWriter does by default) and
    decompress it back: ratio, space saved, compress and decompress MB/s."""
    compress, decompress = _codec(codec, level)
    chunks = line_chunks(raw, chunk)
    started = time.perf_counter()
    packed = b"".join(compress(piece) for piece in chunks)
    compress_seconds = time.perf_counter() - started
    started = time.perf_counter()
    unpacked = decompress(packed)
    decompress_seconds = time.perf_counter() - started
    if len(unpacked) != len(raw):
        raise RuntimeError(f"{codec}-{level} round trip lost bytes")
    return {
        "ratio": len(packed) / len(raw),
        "saved_pct": (1 - len(packed) / len(raw)) * 100,
        "compress_mb_s": len(raw) / _MB / compress_seconds,
        "decompress_mb_s": len(raw) / _MB / decompress_seconds,
    }


def flush_mode_experiment(
    raw: bytes, path: str | Path, *, codec: str, level: int, mode: str, buffer_size: int
) -> dict:
    """CompressedWriter end to end in one flush mode ("frame", "sync", or "stream": one
    frame for the whole file, the crash-unsafe reference)."""
    lines = raw.splitlines()
    if mode == "stream":
        compress, _ = _codec(codec, level)
        started = time.perf_counter()
        Path(path).write_bytes(compress(raw))
        seconds = time.perf_counter() - started
    else:
        started = time.perf_counter()
        with CompressedWriter(
            path, level, codec=codec, buffer_size=buffer_size, max_writes=10**9, flush_mode=mode
        ) as writer:
            for line in lines:
                writer.write_line(line)
        seconds = time.perf_counter() - started
    size = Path(path).stat().st_size
    return {
        "ratio": size / len(raw),
        "saved_pct": (1 - size / len(raw)) * 100,
        "mb_per_s": len(raw) / _MB / seconds,
    }


def sample_savings(
    raw: bytes, *, size: int, codec: str = "gzip", level: int = 6, windows: int = 20, seed: int = 0
) -> list[float]:
    """Space saved (%) by compressing ``windows`` random whole-line samples of about
    ``size`` bytes each: what a small sample would have promised."""
    compress, _ = _codec(codec, level)
    rng = random.Random(seed)
    savings = []
    for _ in range(windows):
        start = raw.find(b"\n", rng.randrange(max(1, len(raw) - size))) + 1
        end = raw.find(b"\n", start + size - 1)
        sample = raw[start : (end + 1 if end > 0 else len(raw))]
        if sample:
            savings.append((1 - len(compress(sample)) / len(sample)) * 100)
    return savings


# --------------------------------------------------------------------------- reading


#: The ways :func:`read_experiment` reads a file.
READ_WAYS = (
    "open lines",
    "mmap lines",
    "json.loads records",
    "mmap records",
    "read_jsonl records",
    "python index + seek",
    "mmap line(i)",
)


def read_experiment(path: str | Path, *, how: str, lookups: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Read a JSON-lines file one of the :data:`READ_WAYS`; seconds and lines (or lookups)
    per second."""
    if how not in READ_WAYS:
        raise ValueError(f"how must be one of {list(READ_WAYS)}, got {how!r}")
    target = Path(path)
    started = time.perf_counter()
    count = 0
    if how == "open lines":
        with open(target, "rb") as file:
            for line in file:
                line[:-1]
                count += 1
    elif how == "mmap lines":
        with MemoryMappedReader(target) as reader:
            for _ in reader.iter_lines():
                count += 1
    elif how == "json.loads records":
        with open(target, "rb") as file:
            for line in file:
                json.loads(line)
                count += 1
    elif how == "mmap records":
        with MemoryMappedReader(target) as reader:
            for _ in reader.records():
                count += 1
    elif how == "read_jsonl records":
        for _ in read_jsonl(target):
            count += 1
    else:  # random lines by number
        rng = random.Random(seed)
        if how == "mmap line(i)":
            with MemoryMappedReader(target) as reader:
                picks = [rng.randrange(reader.line_count) for _ in range(lookups)]
                for i in picks:
                    reader.line(i)
        else:
            with open(target, "rb") as file:
                offsets = []
                position = 0
                for line in file:
                    offsets.append(position)
                    position += len(line)
                for i in [rng.randrange(len(offsets)) for _ in range(lookups)]:
                    file.seek(offsets[i])
                    file.readline()
        count = lookups
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "per_s": count / seconds, "mb_per_s": target.stat().st_size / _MB / seconds}
