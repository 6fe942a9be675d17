"""Corruption is detected, never read as different values: zstd frames carry a checksum
that the reader verifies; gzip's CRC already does; zero padding after the last gzip member
is padding, not corruption. Values JSON cannot hold are refused, however they are
wrapped; a writer shared by two threads says so."""

from __future__ import annotations

import enum
import math
import random
import threading
from pathlib import Path

import pytest
import zstandard

from perflab import BufferedWriter, CompressedWriter, read_jsonl


def quotes(n: int) -> list[dict[str, object]]:
    rng = random.Random(7)
    return [
        {"id": i, "symbol": f"S{i % 97:03d}", "price": round(100 + rng.random() * 10, 2)} for i in range(n)
    ]


@pytest.mark.parametrize(("codec", "mode"), [("zstd", "frame"), ("zstd", "sync"), ("gzip", "frame")])
def test_no_single_bit_flip_is_read_as_different_values(tmp_path: Path, codec: str, mode: str) -> None:
    records = quotes(400)
    path = tmp_path / f"q.jsonl.{codec}"
    with CompressedWriter(path, 3, codec=codec, flush_mode=mode, max_writes=100) as writer:  # type: ignore[arg-type]
        writer.write_many(records)
    if codec == "zstd":
        assert zstandard.get_frame_parameters(path.read_bytes()).has_checksum
    clean = path.read_bytes()
    rng = random.Random(2026)
    silent = 0
    for _ in range(300):
        data = bytearray(clean)
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(data))
        try:
            got = list(read_jsonl(path))
        except ValueError:
            continue  # detected
        silent += got != records
    assert silent == 0, f"{silent} of 300 flips read back as other values"


def test_zero_padding_after_the_last_gzip_member_is_padding(tmp_path: Path) -> None:
    path = tmp_path / "padded.jsonl.gz"
    with CompressedWriter(path, 6, codec="gzip", max_writes=3) as writer:
        writer.write_many({"i": i} for i in range(7))
    with open(path, "ab") as file:
        file.write(b"\0" * 5000)  # a tape or a block device pads with zeros
    assert [r["i"] for r in read_jsonl(path)] == list(range(7))
    # Appending cuts the padding off first, so the new member follows the last one.
    with pytest.warns(UserWarning, match="zero padding"):
        writer = CompressedWriter(path, 6, codec="gzip", append=True)
    with writer:
        writer.write({"i": 7})
    assert [r["i"] for r in read_jsonl(path)] == list(range(8))
    # Other bytes there are corruption.
    with open(path, "ab") as file:
        file.write(b"\0\0\0garbage")
    with pytest.raises(ValueError, match="neither a member nor zero padding"):
        list(read_jsonl(path))


class Level(enum.Enum):
    UNKNOWN = math.nan
    HIGH = 1.5


class Mood(float, enum.Enum):
    CALM = math.inf


@pytest.mark.parametrize("value", [Level.UNKNOWN, Mood.CALM, [Level.HIGH, {"x": Level.UNKNOWN}]])
def test_an_enum_whose_value_is_not_finite_is_refused_not_written_as_null(
    tmp_path: Path, value: object
) -> None:
    with BufferedWriter(tmp_path / "e.jsonl") as writer:
        with pytest.raises(ValueError, match="JSON has no NaN or infinity"):
            writer.write({"level": value})
        writer.write({"level": Level.HIGH})
    assert list(read_jsonl(tmp_path / "e.jsonl")) == [{"level": 1.5}]


def test_a_writer_flushed_by_two_threads_at_once_raises_saying_so(tmp_path: Path) -> None:
    """While one thread is inside a flush, a second thread's write or flush is refused with
    a RuntimeError that names the cause (not a BufferError, not interleaved bytes)."""
    path = tmp_path / "t.jsonl.zst"
    writer = CompressedWriter(path, 19, codec="zstd", buffer_size=1 << 22, max_writes=10**6)
    writer.write_many({"i": i, "pad": "x" * 200} for i in range(20000))  # a slow flush ahead
    errors: list[BaseException] = []
    started = threading.Event()

    def flush() -> None:
        started.set()
        writer.flush()

    thread = threading.Thread(target=flush)
    thread.start()
    started.wait()
    for _ in range(200_000):
        try:
            writer.write({"from": "main"})
        except RuntimeError as exc:
            errors.append(exc)
            break
        if not thread.is_alive():
            break
    thread.join()
    writer.close()
    # The flush of 4 MB at level 19 takes far longer than a write: the write is refused.
    assert len(errors) == 1 and "another thread" in str(errors[0]), errors
    records = list(read_jsonl(tmp_path / "t.jsonl.zst"))
    assert len(records) == 20000 + sum(1 for r in records if "from" in r)
