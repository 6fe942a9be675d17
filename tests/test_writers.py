"""BufferedWriter and CompressedWriter: round trips, exact thresholds, whole lines, errors."""

from __future__ import annotations

import gzip
import io
import math
import os
from pathlib import Path

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from perflab import BufferedWriter, CompressedWriter, read_jsonl
from perflab.jsonl.codecs import CODEC_LEVELS

RECORDS = [
    {"symbol": "AAPL", "price": 187.23, "track": "A"},
    {"symbol": "日経225", "price": 38_000.5, "note": "non-ASCII symbol"},
    {"symbol": "SAMSUNG\u00e9", "emoji": "📈", "nested": {"a": [1, 2, None]}},
    ["a list", True, None],
    "a bare string",
    42,
]

WRITERS = {
    "plain": lambda path, **kw: BufferedWriter(path, **kw),
    "gzip": lambda path, **kw: CompressedWriter(path, codec="gzip", **kw),
    "gzip-sync": lambda path, **kw: CompressedWriter(path, codec="gzip", flush_mode="sync", **kw),
    "zstd": lambda path, **kw: CompressedWriter(path, 3, codec="zstd", **kw),
    "zstd-sync": lambda path, **kw: CompressedWriter(path, 3, codec="zstd", flush_mode="sync", **kw),
    "isal": lambda path, **kw: CompressedWriter(path, 1, codec="isal", **kw),
}


def standard_decode(path: Path) -> bytes:
    """Decode with the standard library / reference tools, not with perflab."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)  # reads every member
    if data[:4] == b"\x28\xb5\x2f\xfd":
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
        return reader.read()
    return data


@pytest.mark.parametrize("kind", sorted(WRITERS))
@pytest.mark.parametrize("buffer_size", [1, 64, 65536])
def test_round_trip_through_perflab_and_standard_tools(tmp_path: Path, kind: str, buffer_size: int) -> None:
    path = tmp_path / "out.jsonl"
    with WRITERS[kind](path, buffer_size=buffer_size, max_writes=4) as writer:
        for record in RECORDS * 5:
            writer.write(record)
        writer.write_line('{"raw": "line"}')
    expected = RECORDS * 5 + [{"raw": "line"}]
    assert list(read_jsonl(path)) == expected
    lines = standard_decode(path).splitlines()
    assert [orjson.loads(line) for line in lines] == expected
    stats = writer.stats
    assert stats.records == len(expected) and stats.buffered_records == 0
    assert stats.raw_bytes == len(standard_decode(path))
    assert stats.bytes_written == path.stat().st_size


def test_flushes_exactly_at_buffer_size_with_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    line = orjson.dumps({"k": "x" * 20}) + b"\n"  # 29 bytes
    writer = BufferedWriter(path, buffer_size=100, max_writes=1000)
    sizes = []
    for _ in range(10):
        writer.write({"k": "x" * 20})
        sizes.append(path.stat().st_size)
    # The buffer reaches 100 bytes at the 4th line (116 bytes): one write of 4 whole lines.
    assert sizes == [0, 0, 0, 116, 116, 116, 116, 232, 232, 232]
    assert path.read_bytes() == line * 8
    writer.close()
    assert writer.stats.flushes == 3
    total = len(line) * 10
    assert writer.stats.flushes <= math.ceil(total / 100)


def test_flushes_exactly_at_max_writes(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with BufferedWriter(path, buffer_size=1 << 20, max_writes=3) as writer:
        for i in range(7):
            writer.write(i)
            assert writer.stats.flushed_records == (i + 1) // 3 * 3
            assert path.read_bytes().count(b"\n") == (i + 1) // 3 * 3
    assert writer.stats.flushes == 3  # 3 + 3 + the 1 left at close


@settings(max_examples=50, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=60),
    buffer_size=st.integers(min_value=1, max_value=2000),
    max_writes=st.integers(min_value=1, max_value=20),
)
def test_every_write_call_carries_whole_lines_and_the_threshold_rule(
    tmp_path_factory, sizes, buffer_size, max_writes
) -> None:
    path = tmp_path_factory.mktemp("w") / "out.jsonl"
    writes: list[bytes] = []
    writer = BufferedWriter(path, buffer_size=buffer_size, max_writes=max_writes)
    real_write = writer._file.write

    def spy(data):  # record every write call the writer makes
        writes.append(bytes(data))
        return real_write(data)

    writer._file = _Spy(writer._file, spy)
    expected_flushes, buffered, count = 0, 0, 0
    for size in sizes:
        writer.write("y" * size)
        buffered += size + 3  # quotes and newline
        count += 1
        if buffered >= buffer_size or count >= max_writes:
            expected_flushes, buffered, count = expected_flushes + 1, 0, 0
    writer.close()
    assert len(writes) == expected_flushes + (1 if count else 0)
    assert all(chunk.endswith(b"\n") for chunk in writes)
    assert b"".join(writes) == b"".join(b'"' + b"y" * s + b'"\n' for s in sizes)


class _Spy:
    def __init__(self, file, write) -> None:
        self._file = file
        self.write = write

    def __getattr__(self, name):
        return getattr(self._file, name)


def test_write_many_writes_like_write(tmp_path: Path) -> None:
    one, many = tmp_path / "one.jsonl", tmp_path / "many.jsonl"
    with BufferedWriter(one, buffer_size=100, max_writes=7) as a:
        for record in RECORDS * 9:
            a.write(record)
    with BufferedWriter(many, buffer_size=100, max_writes=7) as b:
        assert b.write_many(iter(RECORDS * 9)) == len(RECORDS) * 9
    assert one.read_bytes() == many.read_bytes()
    assert a.stats == b.stats
    with pytest.raises(ValueError, match="write to a closed"):
        b.write_many([1])


def test_an_unserializable_record_raises_type_error_and_keeps_the_buffer(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with BufferedWriter(path) as writer:
        writer.write({"ok": 1})
        writer.write({"ok": 2})
        with pytest.raises(TypeError):
            writer.write({"bad": object()})
        assert writer.stats.buffered_records == 2
        writer.write({"ok": 3})
    assert list(read_jsonl(path)) == [{"ok": 1}, {"ok": 2}, {"ok": 3}]


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_using_a_closed_writer_raises_and_close_is_idempotent(tmp_path: Path, kind: str) -> None:
    writer = WRITERS[kind](tmp_path / "out")
    writer.write(1)
    writer.close()
    writer.close()
    assert writer.closed
    with pytest.raises(ValueError, match="write to a closed"):
        writer.write(2)
    with pytest.raises(ValueError, match="write to a closed"):
        writer.write_line("2")
    with pytest.raises(ValueError, match="flush of a closed"):
        writer.flush()
    assert list(read_jsonl(tmp_path / "out")) == [1]


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_append_mode_adds_to_what_is_there(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "out"
    for start in (0, 10, 20):
        with WRITERS[kind](path, append=start > 0) as writer:
            for i in range(start, start + 10):
                writer.write({"i": i})
    assert [r["i"] for r in read_jsonl(path)] == list(range(30))
    with WRITERS[kind](path) as writer:  # not appending: truncates
        writer.write({"i": -1})
    assert list(read_jsonl(path)) == [{"i": -1}]


def test_write_line_takes_one_line_of_str_or_bytes(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with BufferedWriter(path) as writer:
        writer.write_line("1")
        writer.write_line(b"2\n")
        writer.write_line(bytearray(b"3"))
        with pytest.raises(ValueError, match="line must be one line: it contains a newline"):
            writer.write_line("4\n5")
        with pytest.raises(TypeError, match="line must be str or bytes, got int"):
            writer.write_line(6)  # type: ignore[arg-type]
    assert path.read_bytes() == b"1\n2\n3\n"


@pytest.mark.parametrize(
    ("policy", "expected"), [(False, 0), ("never", 0), (True, 4), ("flush", 4), ("close", 1)]
)
def test_fsync_policy(tmp_path: Path, policy, expected: int) -> None:
    with BufferedWriter(tmp_path / "out", max_writes=2, fsync=policy) as writer:
        for i in range(7):
            writer.write(i)
    assert writer.stats.fsyncs == expected
    assert writer.stats.flushes == 4


def test_compressed_stats_report_ratio_and_time(tmp_path: Path) -> None:
    with CompressedWriter(tmp_path / "out.gz") as writer:
        for i in range(2000):
            writer.write({"symbol": "AAPL", "i": i})
    stats = writer.stats
    assert stats.compression_ratio == pytest.approx(stats.bytes_written / stats.raw_bytes)
    assert 0 < stats.compression_ratio < 0.5
    assert stats.compress_seconds > 0
    assert writer.suffix == ".gz"
    with BufferedWriter(tmp_path / "plain") as plain:
        assert plain.stats.compression_ratio is None


def test_a_writer_dropped_without_close_still_writes_its_buffer(tmp_path: Path) -> None:
    writer = CompressedWriter(tmp_path / "out.gz")
    writer.write({"kept": True})
    with pytest.warns(ResourceWarning, match="unclosed CompressedWriter"):
        del writer
    assert list(read_jsonl(tmp_path / "out.gz")) == [{"kept": True}]


@pytest.mark.parametrize(
    ("factory", "error", "message"),
    [
        (lambda p: BufferedWriter(p, buffer_size=0), ValueError, "buffer_size must be >= 1, got 0"),
        (lambda p: BufferedWriter(p, max_writes=0), ValueError, "max_writes must be >= 1, got 0"),
        (lambda p: BufferedWriter(p, buffer_size=1.5), TypeError, "buffer_size must be an int"),
        (lambda p: BufferedWriter(p, fsync="always"), ValueError, "fsync must be True, False"),
        (lambda p: CompressedWriter(p, codec="lz4"), ValueError, r"codec must be one of \['gzip', 'isal'"),
        (lambda p: CompressedWriter(p, 10), ValueError, "compression_level must be 0-9 for gzip, got 10"),
        (
            lambda p: CompressedWriter(p, 0, codec="zstd"),
            ValueError,
            "compression_level must be 1-22 for zstd",
        ),
        (lambda p: CompressedWriter(p, 23, codec="zstd"), ValueError, "1-22 for zstd, got 23"),
        (
            lambda p: CompressedWriter(p, 4, codec="isal"),
            ValueError,
            "compression_level must be 0-3 for isal",
        ),
        (lambda p: CompressedWriter(p, "6"), TypeError, "compression_level must be an int"),
        (
            lambda p: CompressedWriter(p, flush_mode="block"),
            ValueError,
            "flush_mode must be 'frame' or 'sync'",
        ),
    ],
)
def test_bad_arguments_are_rejected_before_anything_reaches_the_disk(tmp_path: Path, factory, error, message):
    path = tmp_path / "never-created"
    with pytest.raises(error, match=message):
        factory(path)
    assert not path.exists()


def test_a_bad_path_raises_the_os_error_with_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "out.jsonl"
    with pytest.raises(FileNotFoundError) as caught:
        BufferedWriter(missing)
    assert caught.value.filename == str(missing)
    with pytest.raises(IsADirectoryError) as caught:
        CompressedWriter(tmp_path)
    assert caught.value.filename == str(tmp_path)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        BufferedWriter(3)  # type: ignore[arg-type]


def test_every_codec_level_is_accepted(tmp_path: Path) -> None:
    for codec, levels in CODEC_LEVELS.items():
        for level in levels:
            path = tmp_path / f"{codec}-{level}"
            with CompressedWriter(path, level, codec=codec) as writer:
                writer.write({"level": level})
            assert list(read_jsonl(path)) == [{"level": level}]
            os.remove(path)
