"""Crash safety with real processes: a writer killed with SIGKILL at random moments loses
no record it had flushed, and leaves nothing corrupt before its torn tail."""

from __future__ import annotations

import gzip
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from perflab import read_jsonl

CHILD = textwrap.dedent(
    """
    import sys
    from perflab import BufferedWriter, CompressedWriter

    path, codec, mode, buffer_size = sys.argv[1:5]
    options = dict(buffer_size=int(buffer_size), max_writes=10**9 if int(buffer_size) > 65536 else 40)
    if codec == "plain":
        writer = BufferedWriter(path, **options)
    else:
        writer = CompressedWriter(path, 3, codec=codec, flush_mode=mode, **options)
    flushes = 0
    i = 0
    while True:
        writer.write({"i": i, "symbol": "SYM%04d" % (i % 2000), "payload": "x" * (i % 97)})
        i += 1
        if writer._flushes != flushes:  # report what is in the OS now
            flushes = writer._flushes
            print(i - writer._count, flush=True)
    """
)

CASES = [
    ("plain", "frame", 15),
    ("gzip", "frame", 15),
    ("zstd", "frame", 15),
    ("gzip", "sync", 6),
    ("zstd", "sync", 6),
]


def kill_after_flushes(
    path: Path, codec: str, mode: str, flushes: int, buffer_size: int = 4096, delay: float = 0.0
) -> int:
    """Start a writer, SIGKILL it ``delay`` seconds after it reported ``flushes`` flushes;
    return the last flushed count it reported."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), codec, mode, str(buffer_size)],
        stdout=subprocess.PIPE,
        text=True,
    )
    reported = 0
    try:
        for _ in range(flushes):
            line = child.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            reported = int(line)
        time.sleep(delay)  # the child goes on writing: the kill lands anywhere, mid-write too
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]
    # A report can still be in the pipe when the kill lands: count it too.
    return reported


@pytest.mark.slow
@pytest.mark.parametrize(("codec", "mode", "kills"), CASES)
def test_no_flushed_record_is_lost_when_the_writer_is_killed(tmp_path: Path, codec, mode, kills) -> None:
    rng = random.Random(f"{codec}-{mode}")
    started = time.monotonic()
    for kill in range(kills):
        path = tmp_path / f"{codec}-{mode}-{kill}"
        # Small buffers flush often; 4 MiB ones make each write long enough to be cut.
        big = kill % 2 == 1
        reported = kill_after_flushes(
            path,
            codec,
            mode,
            rng.randint(1, 5 if big else 60),
            4 << 20 if big else 4096,
            rng.uniform(0, 0.02),
        )
        records = list(read_jsonl(path, recover=True))
        assert len(records) >= reported, f"kill {kill}: {len(records)} readable, {reported} acked"
        assert [r["i"] for r in records] == list(range(len(records))), "in order, none corrupt"
        if codec == "gzip" and mode == "frame" and path.stat().st_size:
            # Complete members decode with the standard library too.
            members_ok = gzip.decompress(path.read_bytes()[: _last_complete_member_end(path)])
            assert members_ok.count(b"\n") >= reported
    assert time.monotonic() - started < 30


def _last_complete_member_end(path: Path) -> int:
    """Byte offset after the last complete gzip member (perflab's reader finds it)."""
    import zlib

    data = path.read_bytes()
    end = 0
    while end < len(data):
        decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
        decompressor.decompress(data[end:])
        if not decompressor.eof:
            break
        end = len(data) - len(decompressor.unused_data)
    return end
