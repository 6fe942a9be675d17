"""The one codec module: "zstd-3" parsed and checked once, frames and sync streams that
the standard decoders read, every frame decoded back."""

from __future__ import annotations

import gzip

import pytest
import zstandard

from perflab.jsonl.codecs import CODEC_LEVELS, CodecLevel, check_codec, compressor, decompress_all, suffix_of
from perflab.workbench.collector import CollectorConfig

DATA = b"".join(b'{"symbol":"S%04d","price":%d.25}\n' % (i, i) for i in range(2000))


@pytest.mark.parametrize(
    ("text", "expected"), [("zstd-3", ("zstd", 3)), ("gzip-0", ("gzip", 0)), ("plain", ("plain", 0))]
)
def test_parse_reads_codec_and_level(text: str, expected: tuple[str, int]) -> None:
    spec = CodecLevel.parse(text)
    assert (spec.codec, spec.level) == expected
    assert str(spec) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lz4-3", r"codec 'lz4-3': the codec must be one of \['gzip', 'isal', 'zstd'\]"),
        ("zstd-99", r"codec 'zstd-99': the level must be 1-22 for zstd"),
        ("gzip-10", r"the level must be 0-9 for gzip"),
        ("zstd", r"codec must be 'plain' or CODEC-LEVEL like 'zstd-3', got 'zstd'"),
        ("zstd-x", r"CODEC-LEVEL like 'zstd-3', got 'zstd-x'"),
    ],
)
def test_parse_refuses_what_no_writer_offers(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CodecLevel.parse(text)


def test_parse_refuses_plain_where_a_codec_is_needed_and_a_non_string() -> None:
    with pytest.raises(ValueError, match="codecs must be CODEC-LEVEL"):
        CodecLevel.parse("plain", name="codecs", allow_plain=False)
    with pytest.raises(TypeError, match="codec must be a string like 'zstd-3', got int 3"):
        CodecLevel.parse(3)


@pytest.mark.parametrize("text", ["lz4-3", "zstd-99"])
def test_the_collector_refuses_a_bad_codec_at_construction(text: str) -> None:
    with pytest.raises(ValueError, match=f"codec '{text}'"):
        CollectorConfig(codec=text)


def test_check_codec_names_the_level_argument() -> None:
    with pytest.raises(ValueError, match="compression_level must be 0-3 for isal, got 5"):
        check_codec("isal", 5)
    with pytest.raises(TypeError, match="level must be an int"):
        check_codec("gzip", 1.5, level_name="level")


@pytest.mark.parametrize("codec", ["gzip", "zstd", "isal"])
def test_frames_and_sync_streams_decode_with_the_standard_tools(codec: str) -> None:
    level = CODEC_LEVELS[codec].stop - 1
    packer = compressor(codec, level)
    halves = [DATA[: len(DATA) // 2], DATA[len(DATA) // 2 :]]
    frames = b"".join(packer.frame(half) for half in halves)
    stream = packer.stream()
    synced = b"".join(stream.sync(half) for half in halves) + stream.finish()
    for packed in (frames, synced):
        assert decompress_all(codec, packed) == DATA
        if suffix_of(codec) == ".gz":
            assert gzip.decompress(packed) == DATA
        else:
            reader = zstandard.ZstdDecompressor().stream_reader(packed, read_across_frames=True)
            assert reader.read() == DATA


def test_decompress_all_refuses_a_truncated_frame() -> None:
    packed = compressor("zstd", 3).frame(DATA)
    with pytest.raises(ValueError, match="zstd data ends inside a member/frame"):
        decompress_all("zstd", packed[:-10])
