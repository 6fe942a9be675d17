"""Appending after a crash: ``append=True`` finds the intact end of a file a killed writer
left, cuts the torn tail (or closes a torn sync-mode stream), and every acked record of
every round stays readable, in order, exactly once. Real processes, real SIGKILLs."""

from __future__ import annotations

import gzip
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perflab import BufferedWriter, CompressedWriter, read_jsonl
from perflab.jsonl._recovery import find_tail
from perflab.jsonl.writers import TornTailWarning

CASES = [("plain", "frame"), ("gzip", "frame"), ("zstd", "frame"), ("gzip", "sync"), ("zstd", "sync")]


def open_writer(path: Path, codec: str, mode: str, *, append: bool, **options: Any) -> Any:
    if codec == "plain":
        return BufferedWriter(path, append=append, **options)
    return CompressedWriter(path, 3, codec=codec, flush_mode=mode, append=append, **options)


def standard_decode(path: Path, codec: str) -> bytes:
    """The file decoded by the standard tools' libraries (not perflab's reader)."""
    data = path.read_bytes()
    if codec == "gzip":
        return gzip.decompress(data)
    if codec == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
        return reader.read()
    return data


# --------------------------------------------------------------------------- one torn tail each


def test_a_torn_plain_line_is_cut_with_a_warning_naming_file_offset_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"i": 0}\n{"i": 1}\n{"i": 2, "sym')
    with pytest.warns(TornTailWarning, match=r"log\.jsonl: torn tail cut off at byte 18: 13 bytes dropped"):
        writer = BufferedWriter(path, append=True)
    with writer:
        writer.write({"i": 3})
    assert list(read_jsonl(path)) == [{"i": 0}, {"i": 1}, {"i": 3}]


def test_a_plain_last_line_without_its_newline_is_cut_even_when_it_parses(tmp_path: Path) -> None:
    # A record counts once its newline is written: "6789" torn to "67" still parses.
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"i": 0}\n{"i": 1}\n67')
    with pytest.warns(TornTailWarning, match=r"2 bytes dropped \(the last line has no newline and is JSON"):
        writer = BufferedWriter(path, append=True)
    with writer:
        writer.write(6789)
    assert list(read_jsonl(path)) == [{"i": 0}, {"i": 1}, 6789]
    path.write_bytes(b'{"i": 0}\n67')
    assert list(read_jsonl(path, recover=True)) == [{"i": 0}]  # not the torn 67


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
@pytest.mark.parametrize("frames", [1, 3])
def test_appending_to_a_compressed_file_without_a_final_newline_never_glues(
    tmp_path: Path, codec: str, frames: int
) -> None:
    """Written by another tool: complete members/frames whose text lacks the last newline
    (a whole record gets one), or whose boundaries fall inside lines (cut back to a line)."""
    from perflab.jsonl._recovery import encode_unit

    path = tmp_path / "other-tool"
    text = b'{"i": 0}\n{"i": 1}\n{"i": 2}'
    pieces = [text[:5], text[5:14], text[14:]] if frames == 3 else [text]
    path.write_bytes(b"".join(encode_unit(codec, piece) for piece in pieces))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a whole record: nothing is dropped
        with CompressedWriter(path, 3, codec=codec, append=True) as writer:  # type: ignore[arg-type]
            writer.write({"i": 3})
    assert [r["i"] for r in read_jsonl(path)] == [0, 1, 2, 3]
    assert standard_decode(path, codec).endswith(b'{"i": 2}\n{"i":3}\n')

    # A last line that is not JSON, split over frames: cut back to the last newline.
    torn = b'{"i": 0}\n{"i": 1}\n{"i": 2, "pri'
    pieces = [torn[:5], torn[5:22], torn[22:]] if frames == 3 else [torn]
    path.write_bytes(b"".join(encode_unit(codec, piece) for piece in pieces))
    with pytest.warns(TornTailWarning, match="re-encoded up to its last newline"):
        writer = CompressedWriter(path, 3, codec=codec, append=True)  # type: ignore[arg-type]
    with writer:
        writer.write({"i": 3})
    assert [r["i"] for r in read_jsonl(path)] == [0, 1, 3]


@pytest.mark.parametrize("mode", ["frame", "sync"])
def test_a_checksummed_zstd_file_whose_last_frame_was_cut_never_glues(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "log.zst"
    with CompressedWriter(path, 3, codec="zstd", flush_mode=mode, max_writes=5) as writer:
        for i in range(23):
            writer.write({"i": i})
    data = path.read_bytes()
    assert zstandard.get_frame_parameters(data).has_checksum
    path.write_bytes(data[:-9])  # the last frame loses its checksum and some of its block
    with pytest.warns(TornTailWarning):
        writer = CompressedWriter(path, 3, codec="zstd", flush_mode=mode, append=True)
    with writer:
        writer.write({"i": 100})
    got = [r["i"] for r in read_jsonl(path)]
    assert got[-1] == 100 and got[:-1] == list(range(len(got) - 1))  # a clean prefix, then ours
    assert len(got) - 1 >= 15  # a sync stream keeps what its blocks held; frames lose one frame at most
    assert standard_decode(path, "zstd").endswith(b'{"i":100}\n')


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_a_truncated_last_frame_is_cut_and_the_file_stays_standard(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "log"
    with CompressedWriter(path, codec=codec, max_writes=10) as writer:
        writer.write_many({"i": i} for i in range(30))
    path.write_bytes(path.read_bytes()[:-5])  # the last frame lost its end
    with pytest.warns(TornTailWarning, match="never finished"):
        writer = CompressedWriter(path, codec=codec, append=True)
    with writer:
        writer.write({"i": 30})
    assert [r["i"] for r in read_jsonl(path)] == [*range(20), 30]
    assert standard_decode(path, codec).count(b"\n") == 21


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_a_torn_sync_stream_is_closed_at_its_last_flush_keeping_every_flushed_record(
    tmp_path: Path, codec: str
) -> None:
    path = tmp_path / "log"
    writer = CompressedWriter(path, codec=codec, flush_mode="sync", max_writes=7)
    writer.write_many({"i": i} for i in range(50))  # 49 flushed, 1 buffered
    flushed = writer.stats.flushed_records
    data = path.read_bytes() + b"\x8c\x11\x02"  # a kill landed inside the next flush's write
    writer.close()
    path.write_bytes(data)
    with pytest.warns(TornTailWarning, match="3 bytes dropped"):
        writer = CompressedWriter(path, codec=codec, flush_mode="sync", append=True)
    with writer:
        writer.write({"i": 100})
    assert [r["i"] for r in read_jsonl(path)] == [*range(flushed), 100]
    assert standard_decode(path, codec).count(b"\n") == flushed + 1


def test_a_sync_stream_killed_right_after_a_flush_is_closed_without_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "log.gz"
    writer = CompressedWriter(path, codec="gzip", flush_mode="sync", max_writes=5)
    writer.write_many({"i": i} for i in range(10))
    data = path.read_bytes()
    writer.close()
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CompressedWriter(path, codec="gzip", flush_mode="sync", append=True).close()
    assert len(gzip.decompress(path.read_bytes()).splitlines()) == 10


@pytest.mark.parametrize(
    ("existing", "codec", "found"),
    [
        ("gzip", "zstd", "gzip"),
        ("zstd", "gzip", "zstd"),
        ("gzip", "plain", "gzip"),
        ("plain", "zstd", "plain"),
    ],
)
def test_appending_one_format_to_a_file_of_another_is_refused(
    tmp_path: Path, existing: str, codec: str, found: str
) -> None:
    path = tmp_path / "log"
    with open_writer(path, existing, "frame", append=False) as writer:
        writer.write({"i": 0})
    before = path.read_bytes()
    with pytest.raises(ValueError, match=f"cannot append .* it holds {found} data"):
        open_writer(path, codec, "frame", append=True)
    assert path.read_bytes() == before


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_corruption_before_the_tail_is_refused_not_cut(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "log"
    with CompressedWriter(path, codec=codec, max_writes=10) as writer:
        writer.write_many({"i": i} for i in range(40))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte is not a crash artifact
    data[len(data) // 2 + 1] ^= 0xFF
    data[len(data) // 2 + 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        CompressedWriter(path, codec=codec, append=True)
    assert path.read_bytes() == bytes(data)


# --------------------------------------------------------------------------- property: random crashes


def crash(writer: Any, fraction: float) -> None:
    """What a SIGKILL leaves: the flushes that returned, plus a prefix of the one in progress."""
    if writer._size:
        with writer._buffer.getbuffer() as whole, whole[: writer._size] as lines:
            pending = bytes(writer._encode(lines))
        writer._file.write(pending[: int(len(pending) * fraction)])
    writer._file.close()
    writer._file = None  # the process is gone: no close(), no flush


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(1, 40)),
        st.tuples(st.just("flush"), st.just(0)),
        st.tuples(st.just("crash"), st.floats(0, 1)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(CASES), operations=OPERATIONS, max_writes=st.integers(1, 15))
def test_random_crash_restart_interleavings_lose_and_duplicate_no_acked_record(
    tmp_path: Path, case: tuple[str, str], operations: list[tuple[str, Any]], max_writes: int
) -> None:
    codec, mode = case
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "log"  # one file per example
    acked: list[int] = []  # ids whose flush returned, in order
    written: list[int] = []  # ids handed to the writer since the last restart
    next_id = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornTailWarning)
        writer = open_writer(path, codec, mode, append=True, max_writes=max_writes)
        for operation, argument in operations:
            if operation == "write":
                for _ in range(argument):
                    writer.write({"id": next_id})
                    written.append(next_id)
                    next_id += 1
            elif operation == "flush":
                writer.flush()
            else:
                acked.extend(written[: writer.stats.flushed_records])
                crash(writer, argument)
                written = []
                writer = open_writer(path, codec, mode, append=True, max_writes=max_writes)
        acked.extend(written[: writer.stats.flushed_records])
        crash(writer, 0.5)
        open_writer(path, codec, mode, append=True).close()  # the last restart repairs too
    ids = [record["id"] for record in read_jsonl(path)]  # strict: the whole file is readable
    assert len(ids) == len(set(ids)), "no record twice"
    assert ids == sorted(ids), "in order"
    assert set(acked) <= set(ids), f"acked records lost: {sorted(set(acked) - set(ids))[:10]}"


# --------------------------------------------------------------------------- real processes, real kills

CHILD = textwrap.dedent(
    """
    import random, sys, time, warnings
    from perflab import BufferedWriter, CompressedWriter

    path, codec, mode, round_, buffer_size, tear_at = sys.argv[1:7]
    warnings.simplefilter("ignore")
    options = dict(buffer_size=int(buffer_size), max_writes=40, append=True)
    base = BufferedWriter if codec == "plain" else CompressedWriter

    class Tearing(base):
        # A kill inside write() leaves part of the flush in the file (the kernel stops
        # between pages): at flush number tear_at, write part of it, say so and wait.
        __slots__ = ()

        def _write_all(self, data):
            if self._flushes + 1 == int(tear_at):
                cut = random.randrange(1, len(data))
                super()._write_all(memoryview(data)[:cut])
                print("torn", flush=True)
                time.sleep(60)
            super()._write_all(data)

    print("opening", flush=True)
    if codec == "plain":
        writer = Tearing(path, **options)
    else:
        writer = Tearing(path, 3, codec=codec, flush_mode=mode, **options)
    flushes = 0
    i = 0
    while True:
        writer.write({"round": int(round_), "i": i, "payload": "x" * (i % 97)})
        i += 1
        if writer._flushes != flushes:  # report what is in the OS now
            flushes = writer._flushes
            print(i - writer._count, flush=True)
    """
)

ROUNDS = 30


def run_and_kill(path: Path, codec: str, mode: str, round_: int, rng: random.Random) -> tuple[int, str]:
    """Start an appending writer and SIGKILL it while it opens (and repairs), after part
    of a flush reached the file, or at a random moment; return what it acked."""
    moment = rng.choice(["opening", "mid-write", "mid-write", "any"])
    flushes = rng.randint(1, 30)
    tear_at = flushes + 1 if moment == "mid-write" else 0
    command = [sys.executable, "-c", CHILD, str(path), codec, mode, str(round_), "4096", str(tear_at)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    stdout = child.stdout
    assert stdout is not None
    acked = 0
    try:
        stdout.readline()  # "opening"
        if moment == "opening":
            time.sleep(rng.uniform(0, 0.002))
        elif moment == "mid-write":
            while (line := stdout.readline()) and line.strip() != "torn":
                acked = int(line)
        else:
            for _ in range(flushes):
                acked = int(stdout.readline() or acked)
            time.sleep(rng.uniform(0, 0.01))  # the child goes on writing: the kill lands anywhere
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    # Acks still in the pipe when the kill landed count too.
    acked = max([acked, *(int(line) for line in stdout.read().split() if line.isdigit())])
    stdout.close()
    return acked, moment


@pytest.mark.slow
@pytest.mark.parametrize(("codec", "mode"), CASES)
def test_kill_restart_append_rounds_keep_every_acked_record_in_order(
    tmp_path: Path, codec: str, mode: str
) -> None:
    rng = random.Random(f"append-{codec}-{mode}")
    path = tmp_path / "collector.log"
    acked, torn, tearing = [], 0, 0
    for round_ in range(ROUNDS):
        count, moment = run_and_kill(path, codec, mode, round_, rng)
        acked.append(count)
        tearing += moment == "mid-write"
        with open(path, "rb") as file:
            torn += find_tail(file, codec).dropped > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornTailWarning)
        open_writer(path, codec, mode, append=True).close()  # one last restart, closed cleanly
    records = list(read_jsonl(path))  # strict: no torn tail anywhere
    by_round: dict[int, list[int]] = {}
    order = []
    for record in records:
        by_round.setdefault(record["round"], []).append(record["i"])
        if not order or order[-1] != record["round"]:
            order.append(record["round"])
    assert order == sorted(set(order)), "rounds are contiguous and in order"
    for round_, count in enumerate(acked):
        seen = by_round.get(round_, [])
        assert seen == list(range(len(seen))), f"round {round_}: in order, none twice"
        assert len(seen) >= count, f"round {round_}: {len(seen)} readable, {count} acked"
    assert sum(acked) > ROUNDS  # the kills did land after real work
    # A cut that happens to fall just after a newline leaves nothing to repair.
    assert tearing > 5 and torn >= tearing // 2, f"{torn} torn tails after {tearing} kills mid-write"
    if codec != "plain":
        assert standard_decode(path, codec).count(b"\n") == len(records)
