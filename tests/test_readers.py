"""MemoryMappedReader and read_jsonl: edge cases, random access, torn tails, corruption."""

from __future__ import annotations

import contextlib
import gc
import gzip
import os
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from perflab import BufferedWriter, CompressedWriter, MemoryMappedReader, read_jsonl
from perflab.jsonl import readers
from perflab.jsonl.readers import FileTruncatedError

#: The two implementations of the line index: every test of line() runs on both.
INDEXES = {"compiled": readers._CompiledLineIndex, "numpy": readers._NumpyLineIndex}


@contextlib.contextmanager
def line_index(kind: str) -> Iterator[None]:
    """Readers opened inside use the ``kind`` line index."""
    if INDEXES[kind] is None:
        raise AssertionError("perflab.jsonl._lineindex was not built (see test_the_compiled_index_is_built)")
    with mock.patch.object(readers, "_LineIndex", INDEXES[kind]):
        yield


def naive_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


# --------------------------------------------------------------------------- MemoryMappedReader


@pytest.mark.parametrize("index", INDEXES)
def test_an_empty_file_is_valid_and_has_nothing_to_read(tmp_path: Path, index: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    with line_index(index), MemoryMappedReader(path) as reader:
        assert reader.size == 0
        assert reader.read() == b""
        assert bytes(reader.view(0, 0)) == b""
        assert list(reader.iter_lines()) == []
        assert list(reader.records()) == []
        assert reader.line_count == 0
        with pytest.raises(IndexError):
            reader.line(0)


def test_a_directory_or_fifo_is_refused_clearly_without_blocking(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="path must be a regular file, .* is a directory"):
        MemoryMappedReader(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(result, lambda: MemoryMappedReader(fifo)))
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive(), "opening a FIFO must not block"
    assert isinstance(result[0], ValueError) and "not a regular file" in str(result[0])
    with pytest.raises(FileNotFoundError):
        MemoryMappedReader(tmp_path / "missing.jsonl")


def _capture(result: list[BaseException], fn) -> None:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - handed to the test thread
        result.append(exc)


@settings(max_examples=60, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=50),
    trailing_newline=st.booleans(),
    index=st.sampled_from(sorted(INDEXES)),
)
def test_lines_and_random_access_match_a_naive_reader(
    tmp_path_factory, lines, trailing_newline, index
) -> None:
    data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    path = tmp_path_factory.mktemp("r") / "f"
    path.write_bytes(data)
    expected = naive_lines(data)
    with line_index(index), MemoryMappedReader(path) as reader:
        assert list(reader.iter_lines()) == expected
        assert reader.line_count == len(expected)
        for i in range(len(expected)):
            assert reader.line(i) == expected[i]
            assert reader.line(-1 - i) == expected[-1 - i]
        assert reader.read() == data


@pytest.mark.parametrize("index", INDEXES)
def test_random_lines_of_a_large_file(tmp_path: Path, index: str) -> None:
    rng = random.Random(7)
    lines = [orjson.dumps({"i": i, "pad": "x" * rng.randint(0, 300)}) for i in range(20_000)]
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with line_index(index), MemoryMappedReader(path) as reader:
        for i in rng.sample(range(20_000), 500):
            assert reader.line(i) == lines[i]
        assert [r["i"] for r in reader.records()] == list(range(20_000))
        assert reader.line(np.int64(5)) == reader.line(-19_995) == lines[5]  # numpy ints index too
        # the pure-Python base that stands in for the compiled one where no compiler is
        assert readers._PyLineAccess.line(reader, 17) == lines[17]
        for bad in (20_000, -20_001, 2**70, -(2**70)):
            with pytest.raises(IndexError, match=f"line index {bad} out of range for 20000 lines"):
                reader.line(bad)
        for bad, kind in (("3", "str"), (True, "bool"), (2.0, "float"), (None, "NoneType")):
            with pytest.raises(TypeError, match=f"index must be an int, got {kind}"):
                reader.line(bad)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=f"index must be an int, got {kind}"):
                readers._PyLineAccess.line(reader, bad)  # type: ignore[arg-type]
    for line in (reader.line, lambda i: readers._PyLineAccess.line(reader, i)):
        with pytest.raises(ValueError, match="closed"):
            line(0)


@settings(max_examples=40, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=3000).map(lambda b: b.replace(b"\n", b"")), max_size=1500),
    trailing_newline=st.booleans(),
    threads=st.integers(1, 4),
)
def test_both_line_indexes_find_the_same_offsets(tmp_path_factory, lines, trailing_newline, threads) -> None:
    """The compiled scan and numpy's, in 1 to 4 threads, over files up to a few MiB (so
    the threads split them at 1 MiB steps), against offsets computed naively."""
    data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    expected = [0]
    for line in naive_lines(data):
        expected.append(expected[-1] + len(line) + 1)
    if data and not data.endswith(b"\n"):
        expected[-1] = len(data) + 1  # a last line without newline still ends at offset - 1
    path = tmp_path_factory.mktemp("i") / "f"
    path.write_bytes(data)
    with open(path, "rb") as file:
        for kind, index_type in INDEXES.items():
            assert index_type is not None, "perflab.jsonl._lineindex was not built"
            index = index_type(data, file.fileno(), lambda seen: None, threads)
            got = np.frombuffer(index.offsets(), dtype=np.int64).tolist()
            assert got == expected, kind
            assert len(index) == len(expected) - 1


@pytest.mark.parametrize("index", INDEXES)
def test_an_index_build_stops_before_a_file_that_shrank(tmp_path: Path, index: str) -> None:
    """The buffer is longer than the file behind ``fd``: its lost pages would SIGBUS, so
    the scan calls ``on_shrink`` before its first step and every lookup does too."""
    small = tmp_path / "small"
    small.write_bytes(b"x\n" * 100)
    buffer = b"y\n" * (3 << 20)
    index_type = INDEXES[index]
    assert index_type is not None, "perflab.jsonl._lineindex was not built"

    def on_shrink(seen: bool) -> None:
        assert seen
        raise FileTruncatedError("it shrank")

    with open(small, "rb") as file:
        with pytest.raises(FileTruncatedError, match="it shrank"):
            index_type(buffer, file.fileno(), on_shrink, 2)
        with pytest.raises(RuntimeError, match="the file shrank under the line index"):
            index_type(buffer, file.fileno(), lambda seen: None, 1)  # an on_shrink that did not raise
    large = tmp_path / "large"
    large.write_bytes(buffer)
    with open(large, "rb") as file:
        built = index_type(buffer, file.fileno(), on_shrink, 1)
        assert built.line(-1) == b"y"
        built.release()
        with pytest.raises(ValueError, match="released"):
            built.line(0)


@pytest.mark.parametrize("index", INDEXES)
def test_the_line_index_does_not_keep_its_reader_alive(tmp_path: Path, index: str) -> None:
    """Dropping a reader unmaps its file at once (no reference cycle left for the GC)."""
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n' * 1000)
    gc.disable()
    try:
        with line_index(index):
            reader = MemoryMappedReader(path)
            assert reader.line(3) == b'{"a": 1}'
            alive = weakref.ref(reader)
            with pytest.warns(ResourceWarning, match="unclosed file"):  # finalized right here
                del reader
        assert alive() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("index", INDEXES)
def test_threads_racing_to_the_first_line_all_read_right(tmp_path: Path, index: str) -> None:
    """Four threads call line() on a fresh reader at once: the index is built while the
    others wait or build their own (the scan releases the GIL); every line comes out right."""
    rng = random.Random(11)
    lines = [orjson.dumps({"i": i, "pad": "z" * rng.randint(0, 400)}) for i in range(90_000)]
    path = tmp_path / "shared.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")  # ~19 MB: the scan runs in two threads
    wrong: list[str] = []
    with line_index(index), MemoryMappedReader(path) as reader:
        start = threading.Barrier(4)

        def lookups(seed: int) -> None:
            mine = random.Random(seed)
            start.wait()
            try:
                for i in (mine.randrange(len(lines)) for _ in range(2_000)):
                    if reader.line(i) != lines[i]:
                        wrong.append(f"line {i}")
            except Exception as exc:  # noqa: BLE001 - reported by the test thread
                wrong.append(repr(exc))

        threads = [threading.Thread(target=lookups, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
    assert wrong == []


def test_the_compiled_index_is_built() -> None:
    """``pip install`` compiles perflab.jsonl._lineindex where a C compiler is (it is optional so
    that an install without one still works, on numpy's slower path)."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        assert not readers.COMPILED_INDEX and readers._LineIndex is readers._NumpyLineIndex
    else:
        assert readers.COMPILED_INDEX, f"{compiler} is installed but perflab.jsonl._lineindex was not built"
        assert readers._LineIndex is readers._CompiledLineIndex


def test_the_reader_works_where_the_index_was_not_compiled(tmp_path: Path) -> None:
    """Without perflab.jsonl._lineindex (an install with no C compiler) the reader falls back to
    the pure-Python base and the numpy index, in a fresh interpreter that cannot import it."""
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"".join(b'{"i": %d}\n' % i for i in range(5000)) + b'{"i": "last"}')
    script = f"""
import os, sys
sys.modules["perflab.jsonl._lineindex"] = None  # import fails, as where it was never built
from perflab.jsonl import readers
from perflab.jsonl.readers import FileTruncatedError, MemoryMappedReader
assert not readers.COMPILED_INDEX
assert MemoryMappedReader.__mro__[1] is readers._PyLineAccess
with MemoryMappedReader({str(path)!r}) as reader:
    assert reader.line(4999) == b'{{"i": 4999}}' and reader.line(-1) == b'{{"i": "last"}}'
    assert reader.line_count == 5001
    os.truncate({str(path)!r}, 100)
    try:
        reader.line(1)
    except FileTruncatedError as error:
        print("raised:", error)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "raised:" in done.stdout and "to 100 bytes" in done.stdout


def test_views_are_zero_copy_and_released_on_close(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    reader = MemoryMappedReader(path)
    view = reader.view(2, 5)
    derived = view[1:3]
    assert bytes(view) == b"23456" and bytes(derived) == b"34"
    assert view.readonly
    reader.close()  # does not fail on the views it handed out
    with pytest.raises(ValueError):
        bytes(view)
    with pytest.raises(ValueError, match="MemoryMappedReader is closed"):
        reader.read()
    reader.close()


def test_read_and_view_check_their_bounds(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abcdef")
    with MemoryMappedReader(path) as reader:
        assert reader.read(2) == b"cdef"
        assert reader.read(2, 2) == b"cd"
        assert reader.read(4, 100) == b"ef"
        with pytest.raises(ValueError, match=r"offset must be an int in 0\.\.6, got 7"):
            reader.read(7)
        with pytest.raises(ValueError, match="size must be an int >= 0, or -1"):
            reader.view(0, -2)


def test_the_mapping_is_a_snapshot_of_the_size_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "grow.jsonl"
    path.write_bytes(b'{"a":1}\n')
    with MemoryMappedReader(path) as reader:
        with open(path, "ab") as more:
            more.write(b'{"a":2}\n')
        assert reader.size == 8
        assert list(reader.records()) == [{"a": 1}]


def test_records_name_the_line_and_offset_of_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"a":1}\n\n{"a":\n{"a":3}\n')
    with (
        MemoryMappedReader(path) as reader,
        pytest.raises(ValueError, match=r"line 3 \(byte 9\) is not JSON"),
    ):
        list(reader.records())


# --------------------------------------------------------------------------- read_jsonl


def write(path: Path, codec: str, records: list[object], **options) -> None:
    if codec == "plain":
        writer = BufferedWriter(path, **options)
    else:
        writer = CompressedWriter(path, codec=codec, **options)
    with writer:
        for record in records:
            writer.write(record)


CODECS = ["plain", "gzip", "zstd"]
RECORDS = [{"i": i, "symbol": "AAPL", "pad": "z" * (i % 50)} for i in range(400)]


@pytest.mark.parametrize("codec", CODECS)
def test_read_jsonl_reads_every_member_and_frame(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "data"
    write(path, codec, RECORDS, max_writes=7)  # many gzip members / zstd frames
    assert list(read_jsonl(path)) == RECORDS


def test_a_multi_frame_zstd_file_is_read_past_its_first_frame(tmp_path: Path) -> None:
    # python-zstandard's one-shot decompress() stops after the first frame: we don't.
    path = tmp_path / "frames.zst"
    frames = [zstandard.ZstdCompressor().compress(b'{"frame":%d}\n' % i) for i in range(3)]
    path.write_bytes(b"".join(frames))
    assert zstandard.ZstdDecompressor().decompress(path.read_bytes()) == b'{"frame":0}\n'
    assert list(read_jsonl(path)) == [{"frame": 0}, {"frame": 1}, {"frame": 2}]


def test_concatenated_gzip_members_from_the_standard_library(tmp_path: Path) -> None:
    path = tmp_path / "members.gz"
    path.write_bytes(gzip.compress(b'{"a":1}\n') + gzip.compress(b'{"a":2}\n'))
    assert list(read_jsonl(path)) == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("codec", CODECS)
def test_a_torn_tail_raises_unless_recovering(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "torn"
    write(path, codec, RECORDS, max_writes=50)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 7])  # a crash in the middle of the last flush
    got: list[object] = []
    with pytest.raises(ValueError, match=rf"{path.name}.*(byte \d+)") as caught:
        for record in read_jsonl(path):
            got.append(record)
    assert "recover=True" in str(caught.value)
    recovered = list(read_jsonl(path, recover=True))
    assert got == recovered, "strict mode yields the intact records before raising"
    assert recovered == RECORDS[: len(recovered)]
    assert len(recovered) >= 350  # everything up to the last complete flush


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_sync_flush_files_recover_every_flushed_record(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "sync"
    writer = CompressedWriter(path, 3, codec=codec, flush_mode="sync", max_writes=10)
    for record in RECORDS[:95]:
        writer.write(record)
    flushed = writer.stats.flushed_records
    data = path.read_bytes()  # the stream is still open: no end marker yet
    writer.close()
    path.write_bytes(data)
    assert list(read_jsonl(path, recover=True)) == RECORDS[:flushed]
    # Where the file was cut (its end), not where the one sync-mode member began (0).
    where = f"truncated at byte {len(data)}: the last .* from byte 0, ends early"
    with pytest.raises(ValueError, match=where):
        list(read_jsonl(path))


def test_a_whole_last_line_without_newline_is_a_record(tmp_path: Path) -> None:
    path = tmp_path / "hand.jsonl"
    path.write_bytes(b'{"a":1}\n{"a":2}')
    assert list(read_jsonl(path)) == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("recover", [False, True])
def test_a_corrupt_line_in_the_middle_raises_in_both_modes(tmp_path: Path, recover: bool) -> None:
    path = tmp_path / "corrupt.jsonl"
    path.write_bytes(b'{"a":1}\n{"a":2}\nnot json\n{"a":4}\n')
    with pytest.raises(ValueError, match=r"corrupt\.jsonl: line 3 \(byte 16\) is not JSON"):
        list(read_jsonl(path, recover=recover))
    gz = tmp_path / "corrupt.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(ValueError, match=r"line 3 \(decompressed byte 16\)"):
        list(read_jsonl(gz, recover=recover))


def test_read_jsonl_of_an_empty_file_and_a_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    assert list(read_jsonl(tmp_path / "empty")) == []
    with pytest.raises(ValueError, match="is a directory"):
        list(read_jsonl(tmp_path))


@settings(max_examples=40, deadline=None)
@given(
    codec=st.sampled_from(CODECS),
    max_writes=st.integers(min_value=1, max_value=30),
    cut=st.floats(min_value=0.0, max_value=1.0),
)
def test_any_truncation_recovers_an_intact_prefix(tmp_path_factory, codec, max_writes, cut) -> None:
    path = tmp_path_factory.mktemp("t") / "data"
    write(path, codec, RECORDS[:120], max_writes=max_writes)
    whole = path.read_bytes()
    path.write_bytes(whole[: int(len(whole) * cut)])
    recovered = list(read_jsonl(path, recover=True))
    assert recovered == RECORDS[: len(recovered)]


@pytest.mark.parametrize("index", INDEXES)
def test_a_file_truncated_under_the_reader_raises_instead_of_killing_the_process(
    tmp_path: Path, index: str
) -> None:
    """A writer that restarts and truncates the log: every kind of access afterwards gets
    FileTruncatedError; without the size check reading the lost pages is a SIGBUS."""
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"".join(b'{"i": %d, "pad": "%s"}\n' % (i, b"x" * 200) for i in range(20_000)))
    with line_index(index), MemoryMappedReader(path) as reader:
        lines = reader.iter_lines()
        first = next(lines)
        assert reader.line(19_999).startswith(b'{"i": 19999')
        os.truncate(path, 1000)
        with pytest.raises(FileTruncatedError, match="shrank from .* to 1,000 bytes"):
            list(lines)  # mid-iteration
        for access in (reader.iter_lines, reader.records, lambda: [reader.line(19_999)]):
            with pytest.raises(FileTruncatedError):
                list(access())
        with pytest.raises(FileTruncatedError):
            reader.read(0, 10)
    assert first.startswith(b'{"i": 0')


RACING_READER = """
import random, sys
from perflab.jsonl.readers import FileTruncatedError, MemoryMappedReader
path, want = sys.argv[1], int(sys.argv[2])
lines = open(path, "rb").read().splitlines()
ok = truncated = 0
with MemoryMappedReader(path) as reader:
    count = reader.line_count
    print("ready", flush=True)  # the writer starts now
    while truncated < want or ok < want:
        i = random.randrange(count)
        try:
            line = reader.line(i)
        except FileTruncatedError:
            truncated += 1
            continue
        assert line == lines[i], (i, line[:40])
        ok += 1
print(ok, truncated)
"""


def test_a_truncation_racing_with_line_raises_and_never_kills(tmp_path: Path) -> None:
    """A real writer process truncates and rewrites the log (the same bytes) over and over
    while another process reads random lines: every line read is right or raises
    FileTruncatedError, and a page removed under a read is caught (SIGBUS) instead of
    killing the reader (without the guard this reader dies of SIGBUS every time)."""
    assert readers.COMPILED_INDEX, "perflab.jsonl._lineindex was not built"
    path = tmp_path / "restarted.jsonl"
    data = b"".join(b'{"i": %d, "pad": "%s"}\n' % (i, b"r" * (i % 300)) for i in range(40_000))
    path.write_bytes(data)
    reader = subprocess.Popen(
        [sys.executable, "-c", RACING_READER, str(path), "2000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert reader.stdout is not None and reader.stdout.readline() == "ready\n", reader.stderr
        deadline = time.monotonic() + 120
        while reader.poll() is None and time.monotonic() < deadline:
            with open(path, "r+b") as file:  # a writer restarting: cut, then write it all again
                file.truncate(random.randrange(len(data)))
                file.seek(0)
                file.write(data)
        out, err = reader.communicate(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
    assert reader.returncode == 0, f"the reader died ({reader.returncode}): {err[-2000:]}"
    ok, truncated = map(int, out.split())
    assert ok >= 2000 and truncated >= 2000


@pytest.mark.parametrize("faulthandler", ["off", "on before", "on after"])
def test_a_sigbus_elsewhere_still_kills_through_the_handlers_before_ours(
    tmp_path: Path, faulthandler: str
) -> None:
    """The guard only catches its own reads: a SIGBUS from any other code (here a plain
    mmap slice of a truncated file) kills the process as before, through faulthandler when
    it is on (pytest and ipykernel turn it on first; turned on after us it holds ours, and
    a second reader puts ours in front of it again: a circle that must still end)."""
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n' * 100_000)
    script = f"""
import faulthandler, mmap, os
from perflab import MemoryMappedReader
if {faulthandler!r} == "on before":
    faulthandler.enable()
reader = MemoryMappedReader({str(path)!r})
assert reader.line(5) == b'{{"a": 1}}'  # the index is built: our handler is installed
if {faulthandler!r} == "on after":
    faulthandler.enable()
    assert MemoryMappedReader({str(path)!r}).line(6) == b'{{"a": 1}}'  # installs ours again
other = mmap.mmap(os.open({str(path)!r}, os.O_RDONLY), 0, access=mmap.ACCESS_READ)
os.truncate({str(path)!r}, 0)
print(other[500_000:500_010])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGBUS, (done.returncode, done.stderr[-2000:])
    assert ("Fatal Python error: Bus error" in done.stderr) == (faulthandler != "off")


@pytest.mark.parametrize("index", INDEXES)
def test_a_file_rewritten_as_long_is_read_as_it_is_now(tmp_path: Path, index: str) -> None:
    """A rewrite that leaves the file at least as long is not a truncation: lines read as
    the file is now (the last byte changed, so every lookup checks the size). A file that
    ends in a zero byte has no last-byte sentinel and checks the size every time too."""
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"aaaa\nbbbb\ncccc\n")
    zeros = tmp_path / "zeros.bin"
    zeros.write_bytes(b"x\ny\n\0")
    with line_index(index), MemoryMappedReader(path) as reader, MemoryMappedReader(zeros) as ending:
        assert reader.line(1) == b"bbbb"
        path.write_bytes(b"AAAA\nBBBB\nCCCC!!\n")  # truncates to 0, then writes more
        assert reader.line(1) == b"BBBB"
        assert reader.line(2) == b"CCCC"  # cut where the snapshot's line ended
        assert ending.line(1) == b"y" and ending.line(2) == b"\0"
        os.truncate(zeros, 2)
        with pytest.raises(FileTruncatedError, match="shrank from 5 to 2 bytes"):
            ending.line(0)


@pytest.mark.parametrize("index", INDEXES)
def test_lines_and_records_keep_their_semantics_across_step_boundaries(tmp_path: Path, index: str) -> None:
    """Lines longer than one 64 KiB block, blank lines, a last line without newline."""
    long = b'{"big": "' + b"y" * 600_000 + b'"}'
    data = b'{"a": 1}\n\n' + long + b"\n  \n" + b'{"a": 2}\n' * 3 + b'{"a": 3}'
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(data)
    with line_index(index), MemoryMappedReader(path) as reader:
        assert list(reader.iter_lines()) == data.split(b"\n")
        assert [r.get("a") for r in reader.records()] == [1, None, 2, 2, 2, 3]
        assert reader.line_count == len(data.split(b"\n"))
        assert reader.line(2) == long and reader.line(-1) == b'{"a": 3}'


@pytest.mark.parametrize("index", INDEXES)
def test_the_index_of_a_threaded_scan_matches_a_naive_one(tmp_path: Path, index: str) -> None:
    """Past 16 MiB the index is built 1 MiB at a time in two threads (numpy's from packed
    bit masks): newlines at the edges of those steps and of the packed bytes, runs of blank
    lines and lines of every length in between must all come out where a naive split puts
    them."""
    rng = random.Random(3)
    chunk = 1 << 20
    data = bytearray()
    while len(data) < 17 * chunk:
        edge = (len(data) // chunk + 1) * chunk  # end the next line exactly at a chunk edge
        if edge - len(data) < 400 and rng.random() < 0.5:
            data += b"e" * (edge - len(data) - 1) + b"\n"
        else:
            data += b"x" * rng.choice([0, 0, 1, 7, 8, 9, 63, 200, 4000]) + b"\n"
    path = tmp_path / "large.jsonl"
    path.write_bytes(bytes(data) + b"no newline at the end")
    expected = naive_lines(bytes(data) + b"no newline at the end")
    with line_index(index), MemoryMappedReader(path) as reader:
        assert reader.line_count == len(expected)
        assert list(reader.iter_lines()) == expected
        for i in [0, 1, len(expected) - 1, *rng.sample(range(len(expected)), 3_000)]:
            assert reader.line(i) == expected[i]
        assert reader.line(-1) == b"no newline at the end"
