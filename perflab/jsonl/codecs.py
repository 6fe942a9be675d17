"""The compression codecs, in one place: which levels each accepts, the "zstd-3" spelling
the notebooks and the collector use, one self-contained frame (or a sync-flushed stream)
for the writers, and every frame decoded back for the readers and the I/O experiments.

"gzip" and "isal" (the gzip format by ISA-L, ``pip install perflab[isal]``) write gzip
members; "zstd" writes zstd frames. A file of many members/frames is valid for ``zcat``
and ``zstd -d``.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Callable
from typing import Any, Literal, Protocol

import zstandard

from perflab._validate import check_int

__all__ = [
    "CODEC_LEVELS",
    "Codec",
    "CodecLevel",
    "Compressor",
    "DataFormat",
    "check_codec",
    "compressor",
    "decompress_all",
    "decompressor",
    "format_of",
    "format_of_path",
    "suffix_of",
]

Codec = Literal["gzip", "zstd", "isal"]
DataFormat = Literal["gzip", "zstd"]

#: Compression levels each codec accepts ("isal" is gzip by the ISA-L library).
CODEC_LEVELS: dict[str, range] = {"gzip": range(10), "zstd": range(1, 23), "isal": range(4)}
_CODECS: dict[str, Codec] = {"gzip": "gzip", "isal": "isal", "zstd": "zstd"}
_FORMATS: dict[str, DataFormat] = {"gzip": "gzip", "isal": "gzip", "zstd": "zstd"}
_SUFFIXES = {"gzip": ".gz", "zstd": ".zst"}
_GZIP_WBITS = 31  # 16 + 15: gzip header and trailer, 32 KiB window


def check_codec(codec: Any, level: Any, *, level_name: str = "compression_level") -> tuple[Codec, int]:
    """``(codec, level)`` if the codec exists and offers that level; else a ValueError
    naming the argument and the allowed range."""
    if codec not in CODEC_LEVELS:
        raise ValueError(f"codec must be one of {sorted(CODEC_LEVELS)}, got {codec!r}")
    check_int(level_name, level)
    levels = CODEC_LEVELS[codec]
    if level not in levels:
        bounds = f"{levels.start}-{levels.stop - 1}"
        raise ValueError(f"{level_name} must be {bounds} for {codec}, got {level}")
    return codec, level


def format_of(codec: str) -> DataFormat:
    """The file format a codec writes: "gzip" or "zstd"."""
    if codec not in _FORMATS:
        raise ValueError(f"codec must be one of {sorted(CODEC_LEVELS)}, got {codec!r}")
    return _FORMATS[codec]


#: What a file's (last, lower-case) suffix names: the one table the writers' users, the
#: reader's check and ``perflab gen-data`` go by.
PATH_FORMATS: dict[str, str] = {
    ".jsonl": "plain",
    ".ndjson": "plain",
    ".json": "plain",
    ".gz": "gzip",
    ".zst": "zstd",
    ".zstd": "zstd",
}


def format_of_path(path: str | os.PathLike[str]) -> str | None:
    """ "plain", "gzip" or "zstd" as the file's suffix names it, or None for another suffix."""
    return PATH_FORMATS.get(os.path.splitext(os.fspath(path))[1].lower())


def suffix_of(codec: str) -> str:
    """The file suffix for a codec: ".gz" or ".zst"."""
    return _SUFFIXES[format_of(codec)]


@dataclasses.dataclass(frozen=True, slots=True)
class CodecLevel:
    """A codec at a level, spelled "zstd-3" (or "plain": no compression, level 0).

    ``CodecLevel.parse("zstd-99")`` fails here, naming the argument and the range, not
    later inside a writer."""

    codec: Codec | Literal["plain"]
    level: int

    @classmethod
    def parse(cls, text: Any, *, name: str = "codec", allow_plain: bool = True) -> CodecLevel:
        if not isinstance(text, str):
            raise TypeError(f"{name} must be a string like 'zstd-3', got {type(text).__name__} {text!r}")
        if text == "plain" and allow_plain:
            return cls("plain", 0)
        codec, dash, level = text.partition("-")
        if not dash or not level.isdigit():
            plain = "'plain' or " if allow_plain else ""
            raise ValueError(f"{name} must be {plain}CODEC-LEVEL like 'zstd-3', got {text!r}")
        if codec not in CODEC_LEVELS:
            raise ValueError(f"{name} {text!r}: the codec must be one of {sorted(CODEC_LEVELS)}")
        levels = CODEC_LEVELS[codec]
        if int(level) not in levels:
            bounds = f"{levels.start}-{levels.stop - 1}"
            raise ValueError(f"{name} {text!r}: the level must be {bounds} for {codec}")
        return cls(_CODECS[codec], int(level))

    @property
    def is_plain(self) -> bool:
        return self.codec == "plain"

    @property
    def compressed(self) -> Codec:
        """The codec, for a writer; "plain" has none."""
        if self.codec == "plain":
            raise ValueError("'plain' is not compressed: use BufferedWriter")
        return self.codec

    def __str__(self) -> str:
        return "plain" if self.codec == "plain" else f"{self.codec}-{self.level}"


# --------------------------------------------------------------------------- compressing


class Stream(Protocol):
    """One compressed stream: ``sync(data)`` ends a flush (decodable up to it), ``finish()``
    closes the stream."""

    def sync(self, data: bytes | memoryview) -> bytes: ...

    def finish(self) -> bytes: ...


class Compressor(Protocol):
    """A codec at a level: ``frame(data)`` gives one self-contained member/frame;
    ``stream()`` one stream with sync flushes."""

    def frame(self, data: bytes | memoryview) -> bytes: ...

    def stream(self) -> Stream: ...


class _Deflate:
    def __init__(self, module: Any, level: int) -> None:
        self.module = module
        self.level = level

    def frame(self, data: bytes | memoryview) -> bytes:
        compressor = self.module.compressobj(self.level, self.module.DEFLATED, _GZIP_WBITS)
        return bytes(compressor.compress(data) + compressor.flush(self.module.Z_FINISH))

    def stream(self) -> Stream:
        return _DeflateStream(
            self.module.compressobj(self.level, self.module.DEFLATED, _GZIP_WBITS), self.module
        )


class _DeflateStream:
    def __init__(self, compressor: Any, module: Any) -> None:
        self.compressor = compressor
        self.module = module

    def sync(self, data: bytes | memoryview) -> bytes:
        return bytes(self.compressor.compress(data) + self.compressor.flush(self.module.Z_SYNC_FLUSH))

    def finish(self) -> bytes:
        return bytes(self.compressor.flush(self.module.Z_FINISH))


class _Zstd:
    def __init__(self, level: int, checksum: bool = True) -> None:
        # The checksum (4 bytes a frame) makes a flipped bit an error on read, not a changed
        # value; ``checksum=False`` exists for the benchmark that prices it.
        self.context = zstandard.ZstdCompressor(level=level, write_checksum=checksum)

    def frame(self, data: bytes | memoryview) -> bytes:
        return self.context.compress(data)

    def stream(self) -> Stream:
        return _ZstdStream(self.context.compressobj())


class _ZstdStream:
    def __init__(self, compressor: Any) -> None:
        self.compressor = compressor

    def sync(self, data: bytes | memoryview) -> bytes:
        return bytes(
            self.compressor.compress(data) + self.compressor.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        )

    def finish(self) -> bytes:
        return bytes(self.compressor.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))


def compressor(codec: str, level: int) -> Compressor:
    """The compressor for ``codec`` at ``level`` (checked)."""
    check_codec(codec, level)
    if codec == "zstd":
        return _Zstd(level)
    if codec == "gzip":
        return _Deflate(zlib, level)
    try:
        from isal import isal_zlib
    except ImportError:
        raise ValueError("codec='isal' needs the isal package: pip install 'perflab[isal]'") from None
    return _Deflate(isal_zlib, level)


# --------------------------------------------------------------------------- decompressing


def decompressor(data_format: str) -> tuple[Callable[[], Any], type[Exception]]:
    """(a factory of decompressors for one member/frame, the error they raise) for a file
    format, "gzip" or "zstd"."""
    if data_format == "gzip":
        return (lambda: zlib.decompressobj(zlib.MAX_WBITS | 16)), zlib.error
    if data_format == "zstd":
        return zstandard.ZstdDecompressor().decompressobj, zstandard.ZstdError
    raise ValueError(f"data_format must be 'gzip' or 'zstd', got {data_format!r}")


def decompress_all(codec: str, data: bytes) -> bytes:
    """Every member/frame of ``data`` decoded and joined (a one-shot ``decompress`` of
    either library stops after the first). A truncated last frame raises ValueError."""
    new, error = decompressor(format_of(codec))
    out = []
    while data:
        unit = new()
        try:
            out.append(unit.decompress(data))
        except error as exc:
            raise ValueError(f"corrupt {codec} data: {exc}") from None
        if not unit.eof:
            raise ValueError(f"{codec} data ends inside a member/frame")
        data = unit.unused_data
    return b"".join(out)
