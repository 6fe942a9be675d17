"""Where a crashed writer's file stops being intact, so that appending never glues new
records onto a torn tail.

A writer killed mid-flush leaves a torn tail: a plain file whose last line has no newline,
or a last gzip member / zstd frame that never finished. :func:`find_tail` locates the end
of the intact part without trusting the file's name:

- plain: the byte after the last newline (a record line must end in a newline to count:
  ``6789`` cut to ``67`` still parses, so a last line without one is cut whatever it holds);
- gzip: the end of the last complete member, or, inside a torn member written with sync
  flushes, the last sync point after which the decoded text ends with a newline: the
  member is then *closed* there (a final empty deflate block and the CRC/size trailer) so
  that every record flushed before the crash stays readable by any gzip reader;
- zstd: the same with frames and blocks: a torn frame of unknown content size (what a
  block-flushing stream writes) is closed after its last block that ends a line, with an
  empty last block and, for a checksummed frame, the XXH64 checksum of what it holds.

Then the decoded text must end in a newline, or the next record would glue onto the last
line: a complete member/frame (written whole, its CRC or checksum verified) whose text
ends without one, as another tool may write it, gets a newline if that last line is
JSON; otherwise, and whenever what follows was torn off, the last member/frame holding a
newline is re-encoded up to it and what came after is cut. Zero bytes after the last gzip
member (padding, which ``gzip -dc`` accepts) are cut too.

Every closing is verified by decoding it before it is used. Compressed files are walked
from the start: zstd by its block headers (no decompression except of a torn frame),
gzip by decompressing it once (members carry no length).
"""

from __future__ import annotations

import dataclasses
import os
import struct
import zlib
from collections import deque
from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson
import xxhash
import zstandard

__all__ = ["Tail", "detect_format", "find_tail"]

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
_SYNC_MARK = b"\x00\x00\xff\xff"  # the empty stored block a zlib sync flush ends with
_DEFLATE_END = b"\x03\x00"  # a final, empty fixed-Huffman block
_ZSTD_LAST_EMPTY_BLOCK = b"\x01\x00\x00"  # last block, raw, size 0
_SKIPPABLE = 0x184D2A50  # zstd skippable frames: magic 0x184D2A50-0x184D2A5F


@dataclasses.dataclass(frozen=True, slots=True)
class Tail:
    """The intact part of a file: keep ``intact`` bytes, then write ``closing``."""

    size: int  # the file's size when it was scanned
    intact: int  # bytes to keep
    closing: bytes = b""  # bytes that finish the kept part (a newline, a stream's end)
    detail: str = ""  # what was torn, for the warning

    @property
    def dropped(self) -> int:
        return self.size - self.intact

    @property
    def clean(self) -> bool:
        return self.intact == self.size and not self.closing


def detect_format(head: bytes) -> str:
    """ "gzip", "zstd" or "plain" from a file's first bytes (a magic number cut short by a
    crash counts: JSON text never starts with those bytes)."""
    if head.startswith(GZIP_MAGIC) or (head and GZIP_MAGIC.startswith(head)):
        return "gzip"
    if (
        head.startswith(ZSTD_MAGIC)
        or (head and ZSTD_MAGIC.startswith(head))
        or (len(head) >= 4 and int.from_bytes(head[:4], "little") & 0xFFFFFFF0 == _SKIPPABLE)
    ):
        return "zstd"
    return "plain"


def find_tail(file: BinaryIO, kind: str) -> Tail:
    """Scan ``file`` (opened for binary reading) holding ``kind`` data ("plain", "gzip" or
    "zstd"); corruption that a crash cannot explain raises ValueError naming the offset."""
    size = os.fstat(file.fileno()).st_size
    if kind == "plain":
        return _plain_tail(file, size)
    if kind == "gzip":
        scan = _GzipScan(file, size)
        tail = scan.tail()
        return _end_on_a_line(file, kind, tail, scan.members)
    if kind == "zstd":
        frames: list[tuple[int, int]] = []
        tail = _zstd_tail(file, size, frames)
        return _end_on_a_line(file, kind, tail, frames)
    raise ValueError(f"kind must be 'plain', 'gzip' or 'zstd', got {kind!r}")


def _decode_unit(file: BinaryIO, kind: str, start: int, end: int) -> bytes:
    """The text of one complete gzip member or zstd frame at ``[start, end)``."""
    data = os.pread(file.fileno(), end - start, start)
    if kind == "gzip":
        unit: Any = zlib.decompressobj(zlib.MAX_WBITS | 16)
    else:
        unit = zstandard.ZstdDecompressor().decompressobj()
    return bytes(unit.decompress(data))


def encode_unit(kind: str, text: bytes) -> bytes:
    """``text`` as one self-contained gzip member or checksummed zstd frame."""
    if kind == "gzip":
        compressor = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        return compressor.compress(text) + compressor.flush()
    return bytes(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(text))


def _end_on_a_line(file: BinaryIO, kind: str, tail: Tail, units: list[tuple[int, int]]) -> Tail:
    """Make the kept text end in a newline (see the module docstring); ``units`` are the
    complete members/frames, in order, as ``(start, end)``."""
    if tail.closing:
        return tail  # a torn stream closed at a sync point that ends a line
    torn = tail.intact < tail.size
    rest = b""  # the text after the last newline, over every later unit
    for start, end in reversed([unit for unit in units if unit[1] <= tail.intact]):
        text = _decode_unit(file, kind, start, end)
        cut = text.rfind(b"\n") + 1
        rest = text[cut:] + rest
        if not cut and start > 0:
            continue  # no newline here: the last line began in an earlier unit
        if not rest.strip() and not (torn and rest):
            if not rest:
                return tail
            return dataclasses.replace(tail, closing=encode_unit(kind, b"\n"))  # blanks only
        if not torn and _is_json(rest):
            detail = "its last line, a whole record, had no newline: one was added"
            return Tail(tail.size, tail.intact, encode_unit(kind, b"\n"), detail)
        detail = (
            f"the decoded text ended inside a line ({len(rest)} bytes after the last newline); "
            f"the {_UNIT[kind]} from byte {start} was re-encoded up to its last newline"
        )
        if tail.detail:
            detail = f"{tail.detail}; {detail}"
        return Tail(tail.size, start, encode_unit(kind, text[:cut]) if cut else b"", detail)
    return tail


_UNIT = {"gzip": "gzip member", "zstd": "zstd frame"}


def _is_json(text: bytes) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _name(file: Any) -> str:
    return str(getattr(file, "name", "file"))


# --------------------------------------------------------------------------- plain


def _plain_tail(file: BinaryIO, size: int) -> Tail:
    """Search backwards for the last newline; judge what follows it."""
    end = size
    last_newline = -1
    while end > 0:
        start = max(0, end - 65536)
        file.seek(start)
        found = file.read(end - start).rfind(b"\n")
        if found >= 0:
            last_newline = start + found
            break
        end = start
    keep = last_newline + 1
    if keep == size:
        return Tail(size, size)
    file.seek(keep)
    rest = file.read()
    if not rest.strip():
        return Tail(size, size, b"\n")  # trailing blanks: nothing to lose
    # A line counts once its newline is written: a torn "6789" may read as the JSON "67".
    what = "is JSON, but may be a torn record" if _is_json(rest) else "is not JSON"
    return Tail(size, keep, detail=f"the last line has no newline and {what}")


# --------------------------------------------------------------------------- gzip


class _GzipScan:
    """Decompress every member; remember the sync points of the current one that end a line."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self.file = file
        self.size = size
        self.members: list[tuple[int, int]] = []  # complete members, (start, end)
        self.padding: int | None = None  # where zero padding after the last member starts
        self._new_member(0)

    def _new_member(self, start: int) -> None:
        self.start = start  # where the current member begins
        self.decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
        self.crc = 0
        self.total = 0
        self.ends_line = False
        # (offset just after a sync mark, decompressor state there, crc, total)
        self.candidates: deque[tuple[int, Any, int, int]] = deque(maxlen=4)

    def _feed(self, data: bytes, offset: int) -> None:
        """Feed ``data`` (which starts at file ``offset``), starting members as they end."""
        while data:
            if self.padding is not None or (self.total == 0 and self.start == offset and data[0] == 0):
                if data.strip(b"\0"):
                    raise ValueError(f"{_name(self.file)}: corrupt gzip data at byte {self.start}")
                self.padding = self.start  # zeros to the end so far: padding, not a member
                return
            try:
                out = self.decompressor.decompress(data)
            except zlib.error as exc:
                raise ValueError(
                    f"{_name(self.file)}: corrupt gzip data in the member at byte {self.start}: {exc}"
                ) from None
            if out:
                self.crc = zlib.crc32(out, self.crc)
                self.total += len(out)
                self.ends_line = out.endswith(b"\n")
            if not self.decompressor.eof:
                return
            unused = self.decompressor.unused_data
            offset += len(data) - len(unused)
            self.members.append((self.start, offset))
            self._new_member(offset)
            data = unused

    def tail(self) -> Tail:
        self.file.seek(0)
        offset = 0
        previous = b""  # the last bytes of the previous chunk: a mark may straddle chunks
        while chunk := self.file.read(_CHUNK):
            window = previous + chunk
            base = offset - len(previous)
            fed = offset
            mark = window.find(_SYNC_MARK)
            while mark >= 0:
                point = base + mark + len(_SYNC_MARK)
                if point > fed:
                    self._feed(chunk[fed - offset : point - offset], fed)
                    fed = point
                if self.ends_line and self.start < point:
                    state = self.decompressor.copy()
                    self.candidates.append((point, state, self.crc, self.total))
                mark = window.find(_SYNC_MARK, mark + 1)
            self._feed(chunk[fed - offset :], fed)
            offset += len(chunk)
            previous = chunk[-(len(_SYNC_MARK) - 1) :]
        if self.padding is not None:
            return Tail(
                self.size,
                self.padding,
                detail=f"zero padding after the last gzip member, from byte {self.padding}",
            )
        if self.start >= self.size:
            return Tail(self.size, self.size)
        return self._close_torn_member()

    def _close_torn_member(self) -> Tail:
        for point, state, crc, total in reversed(self.candidates):
            closing = _DEFLATE_END + struct.pack("<II", crc, total & 0xFFFFFFFF)
            check = state.copy()
            try:
                leftover = check.decompress(closing)
            except zlib.error:
                continue
            if check.eof and not check.unused_data and not leftover:
                detail = f"the gzip member from byte {self.start} was never finished; closed at byte {point}"
                return Tail(self.size, point, closing, detail)
        detail = f"the gzip member from byte {self.start} was never finished"
        return Tail(self.size, self.start, detail=detail)


# --------------------------------------------------------------------------- zstd


def _zstd_tail(file: BinaryIO, size: int, frames: list[tuple[int, int]]) -> Tail:
    """Walk frames by their headers and block headers; close or cut a torn last frame.
    Every complete data frame is added to ``frames`` as ``(start, end)``."""
    fd = file.fileno()
    name = _name(file)
    position = 0
    while position < size:
        head = os.pread(fd, 18, position)
        magic = int.from_bytes(head[:4], "little")
        if len(head) >= 4 and magic & 0xFFFFFFF0 == _SKIPPABLE:
            if len(head) < 8:
                return _torn_frame(file, size, position, None)
            end = position + 8 + int.from_bytes(head[4:8], "little")
            if end > size:
                return _torn_frame(file, size, position, None)
            position = end
            continue
        if head[:4] != ZSTD_MAGIC:
            if len(head) < 4 and ZSTD_MAGIC.startswith(head):
                return _torn_frame(file, size, position, None)
            raise ValueError(f"{name}: corrupt zstd data: no frame starts at byte {position}")
        try:
            header_size = zstandard.frame_header_size(head)
            parameters = zstandard.get_frame_parameters(head)
        except zstandard.ZstdError:
            if size - position < 18:
                return _torn_frame(file, size, position, None)
            raise ValueError(f"{name}: corrupt zstd frame header at byte {position}") from None
        last = deque(_blocks(fd, name, position + header_size, size), maxlen=1)
        if not last or not last[0][2]:  # the frame's last block never arrived
            return _torn_frame(file, size, position, parameters)
        block = last[0][1]
        if parameters.has_checksum:
            block += 4
            if block > size:
                return _torn_frame(file, size, position, parameters)
        frames.append((position, block))
        position = block
    return Tail(size, size)


def _blocks(fd: int, name: str, block: int, size: int) -> Iterator[tuple[int, int, bool]]:
    """The whole blocks of a frame from offset ``block``: (start, end, is last); stops at
    the last block or at one the file cuts short."""
    while True:
        raw = os.pread(fd, 3, block)
        if len(raw) < 3:
            return
        header = int.from_bytes(raw, "little")
        kind, length = (header >> 1) & 3, header >> 3
        if kind == 3:
            raise ValueError(f"{name}: corrupt zstd block at byte {block}")
        end = block + 3 + (1 if kind == 1 else length)  # an RLE block holds one byte
        if end > size:
            return
        yield block, end, bool(header & 1)
        if header & 1:
            return
        block = end


def _torn_frame(file: BinaryIO, size: int, start: int, parameters: Any) -> Tail:
    """A frame from ``start`` that never finished: close it after its last whole block
    that ends a line if its header allows (unknown content size), else cut it."""
    cut = Tail(size, start, detail=f"the zstd frame from byte {start} was never finished")
    if parameters is None or parameters.content_size != zstandard.CONTENTSIZE_UNKNOWN:
        return cut
    fd = file.fileno()
    header_size = zstandard.frame_header_size(os.pread(fd, 18, start))
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    digest = xxhash.xxh64()  # a checksummed frame ends with XXH64(content)'s low 32 bits
    total = line_total = 0
    point = None
    at_point = digest.copy()
    try:
        decompressor.decompress(os.pread(fd, header_size, start))
        for block, end, _ in _blocks(fd, _name(file), start + header_size, size):
            out = decompressor.decompress(os.pread(fd, end - block, block))
            total += len(out)
            digest.update(out)
            if out.endswith(b"\n"):
                point, line_total, at_point = end, total, digest.copy()
    except zstandard.ZstdError:
        return cut
    if point is None or line_total == 0:
        return cut
    closing = _ZSTD_LAST_EMPTY_BLOCK
    if parameters.has_checksum:
        closing += struct.pack("<I", at_point.intdigest() & 0xFFFFFFFF)
    # Verify: the kept blocks and the closing decode to exactly what was seen.
    check = zstandard.ZstdDecompressor().decompressobj()
    decoded = 0
    try:
        for offset in range(start, point, _CHUNK):
            decoded += len(check.decompress(os.pread(fd, min(_CHUNK, point - offset), offset)))
        decoded += len(check.decompress(closing))
    except zstandard.ZstdError:
        return cut
    if not check.eof or decoded != line_total:
        return cut
    detail = f"the zstd frame from byte {start} was never finished; closed at byte {point}"
    return Tail(size, point, closing, detail)
