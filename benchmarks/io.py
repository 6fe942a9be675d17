"""perflab's writers and readers beside naive code, the standard library, aiofiles and the floor.

Side by side in one run on the realistic data set (1,000,000 records by default), with the
same measuring code as the writes, compression and reading notebooks (perflab.workbench.io_experiments),
so their figures can be set against these. Every figure is the median [min-max] of REPEAT
runs; ratios compare medians of this run. Reads are hot (the files were just written).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from perflab import BufferedWriter, CompressedWriter, read_jsonl
from perflab.jsonl.readers import COMPILED_INDEX
from perflab.workbench.dataset import generate_records
from perflab.workbench.io_experiments import (
    BASELINES,
    READ_WAYS,
    READER_RATIOS,
    aiofiles_baseline,
    compress_chunks,
    line_chunks,
    read_experiment,
    serialize,
    write_baseline,
    write_experiment,
)

from common import fmt, ratio, repeat, table


def seconds_of(measure: Callable[[], dict[str, Any]]) -> Callable[[], float]:
    return lambda: measure()["seconds"]


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    def measure() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return measure


def bench_writers(records: list[dict], work: Path, times: int) -> None:
    out = work / "out.jsonl"

    def writer(buffer_size: int, max_writes: int = 10**9, many: bool = True) -> Callable[[], float]:
        if many:
            settings = {"buffer_size": buffer_size, "max_writes": max_writes, "floor": False}
            return seconds_of(lambda: write_experiment(records, out, **settings))

        def one_by_one() -> None:
            with BufferedWriter(out, buffer_size=buffer_size, max_writes=max_writes) as w:
                write = w.write
                for record in records:
                    write(record)

        return timed(one_by_one)

    aio_count = min(20_000, len(records))
    aio_scale = len(records) / aio_count
    cases: dict[str, tuple[Callable[[], float], float]] = {
        "BufferedWriter defaults (64 KiB), write()": (writer(65536, 1000, many=False), 1),
        "BufferedWriter defaults, write_many()": (writer(65536, 1000), 1),
        "BufferedWriter 256 KiB": (writer(1 << 18), 1),
        "BufferedWriter 1 MiB": (writer(1 << 20), 1),
        "BufferedWriter 8 MiB": (writer(8 << 20), 1),
        "list + join, 1 MiB chunks": (
            seconds_of(lambda: write_baseline("list + join", records, out, chunk=1 << 20)),
            1,
        ),
        f"aiofiles per record (x{aio_scale:g} of {aio_count:,})": (
            seconds_of(lambda: asyncio.run(aiofiles_baseline(records[:aio_count], out, chunked=False))),
            aio_scale,
        ),
        "aiofiles, 64 KiB chunks": (
            seconds_of(lambda: asyncio.run(aiofiles_baseline(records, out, chunked=True))),
            1,
        ),
    }
    for name in BASELINES:
        cases[name] = (seconds_of(lambda name=name: write_baseline(name, records, out)), 1)
    rows = {label: {"s per run": [s * k for s in repeat(fn, times)]} for label, (fn, k) in cases.items()}
    table(f"Writing {len(records):,} records as JSON lines, wall", "s", rows, 1, 3)
    col = "s per run"
    for ours in ("BufferedWriter defaults (64 KiB), write()", "BufferedWriter defaults, write_many()"):
        for base in (
            "floor: serialize all + one write",
            "json.dumps per record, unbuffered",
            "orjson per record, buffered file",
        ):
            print(f"  {ours} vs {base}: {ratio(rows, base, ours, col)} the speed")
    for size in ("1 MiB", "8 MiB"):
        slower = ratio(rows, f"BufferedWriter {size}", "BufferedWriter 256 KiB", col)
        print(f"  BufferedWriter at {size}: {slower} the 256 KiB time")
    with BufferedWriter(out, buffer_size=1 << 18, max_writes=10**9) as w:
        w.write_many(records)
    total = w.stats.raw_bytes
    print(
        f"  write calls at 256 KiB: {w.stats.flushes:,} for {total:,} bytes "
        f"(ceil(bytes / buffer_size) = {math.ceil(total / (1 << 18)):,}; each call carries whole lines)"
    )


def bench_compression(records: list[dict], raw: bytes, work: Path, times: int) -> None:
    pieces = line_chunks(raw, 65536)  # the same whole-line chunks the writer flushes
    out = work / "out.cmp"

    def raw_codec(codec: str, level: int) -> Callable[[], None]:
        def run() -> None:
            with open(out, "wb", buffering=0) as f:
                f.write(compress_chunks(codec, level, pieces))

        return run

    def writer(codec: str, level: int, mode: str = "frame") -> Callable[[], None]:
        def run() -> None:
            with CompressedWriter(out, level, codec=codec, flush_mode=mode, max_writes=10**9) as w:  # type: ignore[arg-type]
                w.write_many(records)

        return run

    cases = {
        "serialization floor (no compression)": lambda: serialize(records),
        "raw zlib gzip-6, 64 KiB members": raw_codec("gzip", 6),
        "CompressedWriter gzip-6": writer("gzip", 6),
        "CompressedWriter gzip-6 sync": writer("gzip", 6, "sync"),
        "raw zstandard zstd-3, 64 KiB frames": raw_codec("zstd", 3),
        "CompressedWriter zstd-3": writer("zstd", 3),
        "CompressedWriter zstd-3 sync": writer("zstd", 3, "sync"),
        "raw isal gzip-1, 64 KiB members": raw_codec("isal", 1),
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
    floor = min(rows["serialization floor (no compression)"][col])
    for ours, base in (
        ("CompressedWriter gzip-6", "raw zlib gzip-6, 64 KiB members"),
        ("CompressedWriter zstd-3", "raw zstandard zstd-3, 64 KiB frames"),
        ("CompressedWriter isal-1", "raw isal gzip-1, 64 KiB members"),
    ):
        whole = ratio(rows, ours, base, col)
        net = (statistics.median(rows[ours][col]) - floor) / statistics.median(rows[base][col])
        print(f"  {ours} / {base}: {whole} with serialization, {net:.2f}x without")
    print("  sizes (ratio = written / raw, saved):")
    for label, size in sizes.items():
        if "floor" not in label:
            share = size / len(raw)
            print(f"    {label:40s} {share:.4f}  ({1 - share:.1%} saved, {1 / share:.2f}x)")


def bench_checksum(records: list[dict], raw: bytes, work: Path, times: int) -> None:
    """What the zstd content checksum costs: CompressedWriter zstd-3 (frame mode, 64 KiB
    flushes) writing and read_jsonl reading, with and without it, in interleaved pairs."""
    from perflab.jsonl.codecs import _Zstd

    paths = {True: work / "sum.jsonl.zst", False: work / "nosum.jsonl.zst"}

    def write(checksum: bool) -> float:
        with CompressedWriter(paths[checksum], 3, codec="zstd", max_writes=10**9) as w:
            w._compressor = _Zstd(3, checksum)  # the one knob this benchmark turns
            started = time.perf_counter()
            w.write_many(records)
            w.flush()
            return len(raw) / 1e6 / (time.perf_counter() - started)

    def read(checksum: bool) -> float:
        started = time.perf_counter()
        for _ in read_jsonl(paths[checksum]):
            pass
        return len(raw) / 1e6 / (time.perf_counter() - started)

    rows: dict[str, dict[str, list[float]]] = {
        f"{what}, {label}": {"MB/s (raw)": []}
        for what in ("write", "read")
        for label in ("checksum", "no checksum")
    }
    for checksum in (True, False):  # warm-up, and the files the reads need
        write(checksum)
        read(checksum)
    for _ in range(times):
        for checksum in (True, False):
            label = "checksum" if checksum else "no checksum"
            rows[f"write, {label}"]["MB/s (raw)"].append(write(checksum))
            rows[f"read, {label}"]["MB/s (raw)"].append(read(checksum))
    title = f"zstd-3 content checksum, {len(records):,} records ({len(raw) / 1e6:.0f} MB raw)"
    table(title, "MB/s of raw JSON lines", rows, 1, 1)
    for what in ("write", "read"):
        with_sum = ratio(rows, f"{what}, checksum", f"{what}, no checksum", "MB/s (raw)")
        print(f"  {what}: checksum / none = {with_sum}")
    extra = paths[True].stat().st_size - paths[False].stat().st_size
    print(f"  size: +{extra:,} bytes ({extra / paths[False].stat().st_size:.3%}): 4 bytes a frame")


def bench_reading(raw: bytes, work: Path, times: int) -> None:
    path = work / "read.jsonl"
    path.write_bytes(raw)
    rows = {
        way: {"s per run": repeat(seconds_of(lambda way=way: read_experiment(path, how=way)), times)}
        for way in READ_WAYS
    }
    # No index at all: every lookup reads from the start. 20 lookups, scaled to 10,000.
    few = [int(i) for i in range(0, raw.count(b"\n"), max(1, raw.count(b"\n") // 20))][:20]

    def scan_from_start() -> None:
        with open(path, "rb") as f:
            for i in few:
                f.seek(0)
                for _ in range(i + 1):
                    f.readline()

    scan = f"scan from the start per lookup (x{10_000 // len(few)} of {len(few)})"
    rows[scan] = {"s per run": [s * 10_000 / len(few) for s in repeat(timed(scan_from_start), times)]}
    gz, zst = work / "read.jsonl.gz", work / "read.jsonl.zst"
    for target, codec, level in ((gz, "gzip", 6), (zst, "zstd", 3)):
        with CompressedWriter(target, level, codec=codec, max_writes=10**9) as w:  # type: ignore[arg-type]
            for line in raw.splitlines():
                w.write_line(line)
    for label, target in (("read_jsonl .jsonl.gz (gzip-6)", gz), ("read_jsonl .jsonl.zst (zstd-3)", zst)):
        rows[label] = {
            "s per run": repeat(
                seconds_of(lambda t=target: read_experiment(t, how="read_jsonl records")), times
            )
        }
    lines = raw.count(b"\n")
    table(f"Reading {lines:,} lines ({len(raw) / 1e6:.0f} MB, hot cache), wall", "s", rows, 1, 3)
    print(
        f"  line(i), {scan}: {ratio(rows, scan, 'mmap line(i)', 's per run', digits=0)} the time of line(i)"
    )
    reading_ratios(raw, work, times)


def _as_log(path: Path, data: bytes) -> None:
    with BufferedWriter(path) as writer:
        for line in data.splitlines():
            writer.write_line(line)


#: How the file under test is written. It decides what the page cache holds, and so what a
#: mapping costs: one large write leaves 2 MiB folios that a mapping maps whole (40 MB in
#: ~20 page-table entries), while a log appended 64 KiB at a time leaves small folios,
#: mapped and unmapped 4 KiB at a time (~0.4 us a page on this machine).
FILE_WRITES: dict[str, Callable[[Path, bytes], object]] = {
    "written in one write (2 MiB page-cache folios)": Path.write_bytes,
    "written as a log, by BufferedWriter (64 KiB flushes, small folios)": _as_log,
}


def reading_ratios(raw: bytes, work: Path, times: int) -> None:
    """The reader against its baselines at 10k, 200k and 1M lines, for each way of writing
    the file: each repeat runs the pair back to back, so a ratio compares two runs taken
    moments apart."""
    print("\nMemoryMappedReader against the baselines (ratio of seconds, median [min-max])")
    print(
        f"  line index: {'compiled (perflab.jsonl._lineindex)' if COMPILED_INDEX else 'numpy (not compiled)'}"
    )
    for written, write in FILE_WRITES.items():
        print(f"  files {written}:")
        for lines in (10_000, 200_000, 1_000_000):
            cut = _nth_line_end(raw, lines)
            if cut is None:
                print(f"    {lines:>9,} lines: the data set is smaller; pass --records {lines}")
                continue
            path = work / f"lines-{lines}.jsonl"
            write(path, raw[:cut])
            cells = []
            for label, baseline, ours in READER_RATIOS:
                for how in (baseline, ours):
                    read_experiment(path, how=how)  # warm-up
                pairs = []
                for _ in range(max(times, 5)):
                    base = read_experiment(path, how=baseline)["seconds"]
                    mine = read_experiment(path, how=ours)["seconds"]
                    pairs.append(base / mine)
                cells.append(f"{label}: {fmt(pairs, 1, 2)}x")
            print(f"    {lines:>9,} lines ({cut / lines:.0f} B/line)")
            for cell in cells:
                print(f"        {cell}")
            path.unlink()  # a new file: its page cache starts from this way of writing


def _nth_line_end(raw: bytes, lines: int) -> int | None:
    """The offset just after the ``lines``-th newline, or None if there are fewer."""
    position = -1
    for _ in range(lines):
        position = raw.find(b"\n", position + 1)
        if position < 0:
            return None
    return position + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (>= 5 for the report)")
    parser.add_argument("--only", choices=["write", "compress", "checksum", "read"], nargs="*")
    args = parser.parse_args()
    print(__doc__.strip().splitlines()[0])
    started = time.perf_counter()
    records = list(generate_records(args.records))
    print(f"(generated {len(records):,} records in {time.perf_counter() - started:.1f} s)")
    sections = args.only or ["write", "compress", "checksum", "read"]
    with tempfile.TemporaryDirectory(dir=os.environ.get("PERFLAB_BENCH_DIR")) as tmp:
        work = Path(tmp)
        raw = serialize(records)
        if "write" in sections:
            bench_writers(records, work, args.repeat)
        if "compress" in sections:
            bench_compression(records, raw, work, args.repeat)
        if "checksum" in sections:
            bench_checksum(records, raw, work, args.repeat)
        if "read" in sections:
            bench_reading(raw, work, args.repeat)


if __name__ == "__main__":
    main()
