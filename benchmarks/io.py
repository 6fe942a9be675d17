"""perflab's writers and readers beside naive code, the standard library, aiofiles and the floor.

Side by side in one run on the realistic data set (1,000,000 records by default).

Every figure is the median [min-max] of REPEAT runs; ratios compare medians of this run.
Files go to a temporary directory on the same disk as the data; reads are hot (cached).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import aiofiles
import orjson
import zstandard
from isal import isal_zlib

from perflab import BufferedWriter, CompressedWriter, MemoryMappedReader, read_jsonl
from perflab.workloads import generate_records

from common import ratio, repeat, table

OPT = orjson.OPT_APPEND_NEWLINE


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    def measure() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return measure


def bench_writers(records: list[dict], work: Path, times: int) -> bytes:
    out = work / "out.jsonl"
    dumps = orjson.dumps

    def floor() -> None:
        buffer = bytearray()
        for r in records:
            buffer += dumps(r, option=OPT)
        with open(out, "wb", buffering=0) as f:
            f.write(buffer)

    def serialize_only() -> None:
        buffer = bytearray()
        for r in records:
            buffer += dumps(r, option=OPT)

    def reused_bytearray(size: int = 65536) -> None:
        buffer = bytearray()
        with open(out, "wb", buffering=0) as f:
            for r in records:
                buffer += dumps(r, option=OPT)
                if len(buffer) >= size:
                    f.write(buffer)
                    buffer.clear()
            f.write(buffer)

    def list_join(size: int = 1 << 20) -> None:
        lines: list[bytes] = []
        held = 0
        with open(out, "wb", buffering=0) as f:
            for r in records:
                line = dumps(r, option=OPT)
                lines.append(line)
                held += len(line)
                if held >= size:
                    f.write(b"".join(lines))
                    lines, held = [], 0
            f.write(b"".join(lines))

    def buffered_writer(buffer_size: int = 65536, max_writes: int = 1000) -> Callable[[], None]:
        def run() -> None:
            with BufferedWriter(out, buffer_size=buffer_size, max_writes=max_writes) as w:
                write = w.write
                for r in records:
                    write(r)

        return run

    def json_dumps_per_record(buffering: int) -> Callable[[], None]:
        def run() -> None:
            with open(out, "wb", buffering=buffering) as f:
                for r in records:
                    f.write((json.dumps(r) + "\n").encode())

        return run

    def orjson_into_buffered_file() -> None:
        with open(out, "wb") as f:
            for r in records:
                f.write(dumps(r, option=OPT))

    def buffered_write_many() -> None:
        with BufferedWriter(out) as w:
            w.write_many(records)

    aio_count = min(20_000, len(records))
    aio_scale = len(records) / aio_count

    def aiofiles_per_record() -> None:
        async def go() -> None:
            async with aiofiles.open(out, "wb") as f:
                for r in records[:aio_count]:
                    await f.write(dumps(r, option=OPT))

        asyncio.run(go())

    def aiofiles_chunked() -> None:
        async def go() -> None:
            buffer = bytearray()
            async with aiofiles.open(out, "wb") as f:
                for r in records:
                    buffer += dumps(r, option=OPT)
                    if len(buffer) >= 65536:
                        await f.write(bytes(buffer))
                        buffer.clear()
                await f.write(bytes(buffer))

        asyncio.run(go())

    cases: dict[str, tuple[Callable[[], None], float]] = {
        "floor: serialize all + one write": (floor, 1),
        "serialize only (no I/O)": (serialize_only, 1),
        "hand loop, bytearray, 64 KiB": (reused_bytearray, 1),
        "BufferedWriter defaults (64 KiB)": (buffered_writer(), 1),
        "BufferedWriter.write_many, defaults": (buffered_write_many, 1),
        "BufferedWriter 256 KiB": (buffered_writer(1 << 18, 10**9), 1),
        "BufferedWriter 1 MiB": (buffered_writer(1 << 20, 10**9), 1),
        "BufferedWriter 8 MiB": (buffered_writer(8 << 20, 10**9), 1),
        "list + join, 1 MiB chunks": (list_join, 1),
        "orjson per record, buffered file": (orjson_into_buffered_file, 1),
        "json.dumps per record, buffering=0": (json_dumps_per_record(0), 1),
        "json.dumps per record, buffered": (json_dumps_per_record(-1), 1),
        f"aiofiles per record (x{aio_scale:g} of {aio_count:,})": (aiofiles_per_record, aio_scale),
        "aiofiles, 64 KiB chunks": (aiofiles_chunked, 1),
    }
    rows = {
        label: {"s per run": [s * k for s in repeat(timed(fn), times)]} for label, (fn, k) in cases.items()
    }
    table(f"Writing {len(records):,} records as JSON lines, wall", "s", rows, 1, 3)
    col = "s per run"
    ours = "BufferedWriter defaults (64 KiB)"
    for base in ("floor: serialize all + one write", "hand loop, bytearray, 64 KiB"):
        print(f"  BufferedWriter vs {base}: {ratio(rows, base, ours, col):.2f}x its speed")
    for base in ("json.dumps per record, buffering=0", "orjson per record, buffered file"):
        print(f"  BufferedWriter vs {base}: {ratio(rows, base, ours, col):.1f}x faster")
        many = ratio(rows, base, "BufferedWriter.write_many, defaults", col)
        print(f"  BufferedWriter.write_many vs {base}: {many:.1f}x faster")
    for size in ("1 MiB", "8 MiB"):
        slower = ratio(rows, f"BufferedWriter {size}", "BufferedWriter 256 KiB", col)
        print(f"  BufferedWriter at {size}: {slower:.2f}x the 256 KiB time")

    with BufferedWriter(out, buffer_size=1 << 18, max_writes=10**9) as w:
        for r in records:
            w.write(r)
    total = w.stats.raw_bytes
    print(
        f"  write calls at 256 KiB: {w.stats.flushes:,} for {total:,} bytes "
        f"(ceil(bytes / buffer_size) = {math.ceil(total / (1 << 18)):,}; each call carries whole lines)"
    )
    return out.read_bytes()


def bench_compression(records: list[dict], raw: bytes, work: Path, times: int) -> None:
    chunk = 65536
    pieces = []
    start = 0
    while start < len(raw):  # the same whole-line chunks the writer flushes
        end = raw.find(b"\n", start + chunk - 1)
        end = len(raw) if end < 0 else end + 1
        pieces.append(raw[start:end])
        start = end
    out = work / "out.cmp"

    def raw_deflate(module, level: int) -> Callable[[], None]:
        def run() -> None:
            with open(out, "wb", buffering=0) as f:
                for piece in pieces:
                    c = module.compressobj(level, module.DEFLATED, 31)
                    f.write(c.compress(piece) + c.flush())

        return run

    def raw_zstd(level: int) -> Callable[[], None]:
        def run() -> None:
            cctx = zstandard.ZstdCompressor(level=level)
            with open(out, "wb", buffering=0) as f:
                for piece in pieces:
                    f.write(cctx.compress(piece))

        return run

    def writer(codec: str, level: int, mode: str = "frame") -> Callable[[], None]:
        def run() -> None:
            with CompressedWriter(out, level, codec=codec, flush_mode=mode, max_writes=10**9) as w:
                write = w.write
                for r in records:
                    write(r)

        return run

    def serialize_only() -> None:
        buffer = bytearray()
        for r in records:
            buffer += orjson.dumps(r, option=OPT)

    cases = {
        "serialization floor (no compression)": serialize_only,
        "raw zlib gzip-6, 64 KiB members": raw_deflate(zlib, 6),
        "CompressedWriter gzip-6": writer("gzip", 6),
        "CompressedWriter gzip-6 sync": writer("gzip", 6, "sync"),
        "raw zstandard zstd-3, 64 KiB frames": raw_zstd(3),
        "CompressedWriter zstd-3": writer("zstd", 3),
        "CompressedWriter zstd-3 sync": writer("zstd", 3, "sync"),
        "raw isal gzip-1, 64 KiB members": raw_deflate(isal_zlib, 1),
        "CompressedWriter isal-1": writer("isal", 1),
        "CompressedWriter gzip-1 (zlib)": writer("gzip", 1),
    }
    sizes = {}
    rows = {}
    for label, fn in cases.items():
        rows[label] = {"s per run": repeat(timed(fn), times)}
        sizes[label] = out.stat().st_size if "floor" not in label else len(raw)
    table(f"Compressing {len(records):,} records ({len(raw) / 1e6:.0f} MB raw), wall", "s", rows, 1, 3)
    col = "s per run"
    floor = statistics.median(rows["serialization floor (no compression)"][col])
    for ours, base in (
        ("CompressedWriter gzip-6", "raw zlib gzip-6, 64 KiB members"),
        ("CompressedWriter zstd-3", "raw zstandard zstd-3, 64 KiB frames"),
        ("CompressedWriter isal-1", "raw isal gzip-1, 64 KiB members"),
    ):
        whole = ratio(rows, ours, base, col)
        net = (statistics.median(rows[ours][col]) - floor) / statistics.median(rows[base][col])
        print(f"  {ours} / {base}: {whole:.2f}x with serialization, {net:.2f}x without")
    print("  sizes (ratio = written / raw, saved):")
    for label, size in sizes.items():
        if "floor" not in label:
            share = size / len(raw)
            print(f"    {label:40s} {share:.4f}  ({1 - share:.1%} saved, {1 / share:.2f}x)")


def bench_reading(raw: bytes, work: Path, times: int) -> None:
    path = work / "read.jsonl"
    path.write_bytes(raw)
    lines_total = raw.count(b"\n")

    def open_lines() -> None:
        with open(path, "rb") as f:
            for line in f:
                line[:-1]

    def mmap_lines() -> None:
        with MemoryMappedReader(path) as reader:
            for _ in reader.iter_lines():
                pass

    def json_records() -> None:
        with open(path, "rb") as f:
            for line in f:
                json.loads(line)

    def mmap_records() -> None:
        with MemoryMappedReader(path) as reader:
            for _ in reader.records():
                pass

    rng = random.Random(1)
    picks = [rng.randrange(lines_total) for _ in range(10_000)]

    def seek_scan() -> None:
        offsets = []
        with open(path, "rb") as f:  # index built by a Python scan, then seek + readline
            position = 0
            for line in f:
                offsets.append(position)
                position += len(line)
            for i in picks:
                f.seek(offsets[i])
                f.readline()

    few = picks[:20]

    def scan_from_start() -> None:
        with open(path, "rb") as f:  # no index: every lookup reads from the start
            for i in few:
                f.seek(0)
                for _ in range(i + 1):
                    f.readline()

    def mmap_random() -> None:
        with MemoryMappedReader(path) as reader:
            for i in picks:
                reader.line(i)

    gz = work / "read.jsonl.gz"
    zst = work / "read.jsonl.zst"
    for target, codec in ((gz, "gzip"), (zst, "zstd")):
        with CompressedWriter(target, 6 if codec == "gzip" else 3, codec=codec, max_writes=10**9) as w:
            for line in raw.splitlines():
                w.write_line(line)

    cases = {
        "for line in open(f, 'rb') (stripped)": open_lines,
        "MemoryMappedReader.iter_lines": mmap_lines,
        "json.loads per line": json_records,
        "MemoryMappedReader.records (orjson)": mmap_records,
        "10k random lines: Python index + seek": seek_scan,
        "10k random lines: line(i), index incl.": mmap_random,
        f"10k random lines: scan from start (x{len(picks) // len(few)} of 20)": scan_from_start,
        "read_jsonl .jsonl": lambda: sum(1 for _ in read_jsonl(path)),
        "read_jsonl .jsonl.gz (gzip-6)": lambda: sum(1 for _ in read_jsonl(gz)),
        "read_jsonl .jsonl.zst (zstd-3)": lambda: sum(1 for _ in read_jsonl(zst)),
    }
    scale = {f"10k random lines: scan from start (x{len(picks) // len(few)} of 20)": len(picks) / len(few)}
    rows = {
        label: {"s per run": [s * scale.get(label, 1) for s in repeat(timed(fn), times)]}
        for label, fn in cases.items()
    }
    table(f"Reading {lines_total:,} lines ({len(raw) / 1e6:.0f} MB, hot cache), wall", "s", rows, 1, 3)
    col = "s per run"
    index_seek = "10k random lines: Python index + seek"
    ours = "10k random lines: line(i), index incl."
    scan = next(label for label in rows if "scan from start" in label)
    lines_vs = ratio(rows, next(iter(rows)), "MemoryMappedReader.iter_lines", col)
    records_vs = ratio(rows, "json.loads per line", "MemoryMappedReader.records (orjson)", col)
    print(f"  iter_lines: {lines_vs:.2f}x the speed of open(); records(): {records_vs:.2f}x json.loads")
    faster_than_index = ratio(rows, index_seek, ours, col)
    faster_than_scan = ratio(rows, scan, ours, col)
    print(f"  line(i): {faster_than_index:.1f}x a Python index + seek, {faster_than_scan:,.0f}x a scan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (>= 5 for the report)")
    parser.add_argument("--only", choices=["write", "compress", "read"], nargs="*")
    args = parser.parse_args()
    print(__doc__.strip().splitlines()[0])
    started = time.perf_counter()
    records = list(generate_records(args.records))
    print(f"(generated {len(records):,} records in {time.perf_counter() - started:.1f} s)")
    sections = args.only or ["write", "compress", "read"]
    with tempfile.TemporaryDirectory(dir=os.environ.get("PERFLAB_BENCH_DIR")) as tmp:
        work = Path(tmp)
        raw = b"".join(orjson.dumps(r, option=OPT) for r in records)
        if "write" in sections:
            bench_writers(records, work, args.repeat)
        if "compress" in sections:
            bench_compression(records, raw, work, args.repeat)
        if "read" in sections:
            bench_reading(raw, work, args.repeat)


if __name__ == "__main__":
    main()
