"""Reading JSON lines back: MemoryMappedReader (zero-copy, random access) and read_jsonl
(plain, gzip and zstd, with crash recovery).

``read_jsonl`` tells a crash artifact from corruption. A writer killed mid-flush leaves
a torn tail: a last line without its newline, or a last gzip member / zstd frame that
ends early. With ``recover=True`` reading stops cleanly after the last intact record;
without it the torn tail raises ``ValueError`` naming the file and byte offset (after the
intact records have been yielded). A line that is not JSON in the middle of a file is not
a crash artifact: it raises in both modes. A record line counts once its newline is there:
``recover=True`` stops before a plain file's last line without one even if it parses (a
torn ``6789`` reads as ``67``). zstd frames carry a checksum (CompressedWriter writes it),
so a flipped bit raises instead of changing a value; zero bytes after the last gzip
member are padding, as for ``gzip -dc``.
"""

from __future__ import annotations

import functools
import io
import itertools
import mmap
import os
import stat
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from perflab.jsonl._recovery import detect_format
from perflab.jsonl.codecs import decompressor as new_decompressor_of
from perflab.jsonl.codecs import format_of_path

try:
    from perflab.jsonl import _lineindex as _compiled
except ImportError:  # built where no C compiler was found: numpy finds the newlines
    _compiled = None  # type: ignore[assignment]
_CompiledLineAccess: Any = _compiled.LineAccess if _compiled is not None else None
_CompiledLineIndex: Any = _compiled.LineIndex if _compiled is not None else None

__all__ = ["COMPILED_INDEX", "FileTruncatedError", "MemoryMappedReader", "read_jsonl"]

#: Whether ``line()`` and its index run in the compiled ``perflab.jsonl._lineindex`` (a memchr scan
#: at memory speed, lookups without bytecode) rather than on numpy: the same results, slower.
COMPILED_INDEX = _CompiledLineIndex is not None

_CHUNK = 1 << 20
_LINES_CHUNK = 1 << 16  # bytes read per block of whole lines (less: glibc mmaps large blocks)
_THREADED_INDEX_BYTES = 1 << 24  # index larger files in two threads


def _open_regular(path: str | os.PathLike[str]) -> tuple[Path, Any]:
    """Open ``path`` for binary reading if it is a regular file (a FIFO would block)."""
    path = Path(path)
    mode = os.stat(path).st_mode  # FileNotFoundError names the path
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise ValueError(f"path must be a regular file, {str(path)!r} is {kind}")
    return path, open(path, "rb")  # noqa: SIM115


class FileTruncatedError(OSError):
    """The file got shorter than the mapping: reading its lost pages would kill the process
    with SIGBUS, so the reader refuses before touching them."""


class _PyLineAccess:
    """MemoryMappedReader's base where ``perflab.jsonl._lineindex`` was not compiled; the compiled
    ``LineAccess`` does the same in C, so that ``reader.line(i)`` runs no bytecode."""

    __slots__ = ("_lines",)
    _lines: Any  # the line index, None until it is built

    def _index(self) -> Any:
        raise NotImplementedError

    def line(self, index: int) -> bytes:
        """Line ``index`` (negative counts from the end) without its newline; O(1).

        One size check (an ``lseek``, the cheapest system call that tells) and one copy out
        of the mapping: a file that shrank raises FileTruncatedError instead of a SIGBUS.
        The offsets index is built on first use.
        """
        lines = self._lines  # None until indexed, and after close()
        if lines is None:
            lines = self._index()
        return lines.line(index)


if TYPE_CHECKING:
    _LineAccess = _PyLineAccess
else:
    _LineAccess = _CompiledLineAccess if _CompiledLineAccess is not None else _PyLineAccess


class MemoryMappedReader(_LineAccess):
    """Read a file through a read-only memory map: zero-copy views, fast lines, random access.

    Usage::

        with MemoryMappedReader("quotes.jsonl") as reader:
            for record in reader.records():
                ...
            middle = reader.line(reader.line_count // 2)

    The mapping is a snapshot of the file's size when it was opened: bytes appended later
    are not seen. A file truncated under the reader (a writer that restarted) raises
    :class:`FileTruncatedError` from the next call instead of a SIGBUS that would kill the
    process: ``read`` and ``view`` check the file's size (one ``lseek``) before they touch
    the mapping, the index build checks before each 1 MiB it scans, ``iter_lines`` and
    ``records`` read with ``pread``, which a shrunk file cuts short, and ``line`` reads the
    snapshot's last byte, which a shorter file has zeroed or removed, around a copy that
    runs under a SIGBUS guard (compiled index; the numpy one uses an ``lseek``). Not
    covered: a truncation racing with ``read``, or with ``line`` on the numpy index, and
    zero-copy :meth:`view` objects, which read the mapping directly whenever they are used.
    An empty file is valid and has no lines.
    """

    __slots__ = ("path", "size", "_file", "_fd", "_map", "_views", "__weakref__")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path, self._file = _open_regular(path)
        self._fd = self._file.fileno()
        self.size = os.fstat(self._fd).st_size
        if not self.size and os.pread(self._fd, 1, 0):
            self._file.close()
            raise ValueError(
                f"{str(self.path)!r} cannot be memory-mapped: its size reads 0 but it has content "
                "(a /proc or /sys file, made as it is read); read it with open() instead"
            )
        self._views: weakref.WeakSet[memoryview] = weakref.WeakSet()
        self._lines = None  # the line index, built on first use (see _LineAccess)
        # mmap refuses an empty file ("cannot mmap an empty file"): it just has no bytes.
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if self.size else None

    def __enter__(self) -> MemoryMappedReader:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<MemoryMappedReader {state} path={str(self.path)!r} size={self.size}>"

    @property
    def closed(self) -> bool:
        return self._file is None

    def close(self) -> None:
        """Unmap and close; views handed out are released (using one raises ValueError)."""
        if self._file is None:
            return
        for view in list(self._views):
            view.release()
        self._views.clear()
        if self._lines is not None:
            self._lines.release()  # its export of the mapping
            self._lines = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass  # slices of our views still exist: the OS unmaps when they are gone
            self._map = None
        self._file.close()
        self._file = None

    def _mapping(self) -> mmap.mmap | None:
        """The mapping, after checking that the reader is open and the file not shorter."""
        if self._file is None:
            raise ValueError(f"MemoryMappedReader is closed ({self.path})")
        self._check_size()
        return self._map

    def _check_size(self) -> None:
        _check_size(self._fd, self.path, self.size)

    def read(self, offset: int = 0, size: int = -1) -> bytes:
        """Copy ``size`` bytes from ``offset`` (``-1``: to the end)."""
        mapping = self._mapping()
        start, end = self._span(offset, size)
        return mapping[start:end] if mapping is not None else b""

    def view(self, offset: int, size: int) -> memoryview:
        """A zero-copy view of ``size`` bytes at ``offset``, valid until :meth:`close`."""
        mapping = self._mapping()
        start, end = self._span(offset, size)
        if mapping is None:
            return memoryview(b"")
        view = memoryview(mapping)[start:end]
        self._views.add(view)
        return view

    def _span(self, offset: int, size: int) -> tuple[int, int]:
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= self.size:
            raise ValueError(f"offset must be an int in 0..{self.size}, got {offset!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < -1:
            raise ValueError(f"size must be an int >= 0, or -1 for the rest, got {size!r}")
        end = self.size if size == -1 else min(self.size, offset + size)
        return offset, end

    def iter_lines(self) -> Iterator[bytes]:
        """Every line, without its newline (a last line without one is yielded too)."""
        strip, newline, repeat = bytes.rstrip, b"\n", itertools.repeat
        return itertools.chain.from_iterable(map(strip, lines, repeat(newline)) for lines in self._blocks())

    def records(self) -> Iterator[Any]:
        """Each non-blank line parsed as JSON; a bad line raises ValueError with its place."""
        return _LineParser(self.path, "byte").parse(self._blocks())

    def _blocks(self) -> Iterator[io.BytesIO]:
        """The file as in-memory streams of whole lines, about 64 KiB each (the last may end
        without a newline), read with ``pread`` rather than copied from the mapping.

        Where the time went: ``bytes.split`` compares byte by byte (66 ns a 200-byte line),
        while iterating an ``io.BytesIO`` finds each newline with ``memchr`` (15 ns); a
        ``pread`` into a fresh 64 KiB block costs less than faulting in the pages of a new
        mapping, and a file that shrank gives a short read (FileTruncatedError), never a
        SIGBUS.
        """
        self._mapping()  # open, and not shorter than when mapped
        fd, size = self._fd, self.size
        begin = 0
        while begin < size:
            length = _LINES_CHUNK
            while True:
                want = min(length, size - begin)
                data = os.pread(fd, want, begin)
                if len(data) < want:
                    self._check_size()
                    raise FileTruncatedError(f"{self.path}: short read at byte {begin:,}")
                if begin + want == size:
                    cut = want
                    break
                cut = data.rfind(b"\n") + 1
                if cut:
                    break
                length *= 2  # a line longer than the block: read it whole
            block = io.BytesIO(data)
            if cut < want:
                block.truncate(cut)
            yield block
            begin += cut

    @property
    def line_count(self) -> int:
        """Number of lines (builds the offsets index on first use)."""
        return len(self._lines if self._lines is not None else self._index())

    def _index(self) -> Any:
        """Build the line index: line i is ``[offsets[i], offsets[i + 1] - 1)``, the newline
        excluded, and a last line without a newline ends at ``size + 1``, so the same rule
        holds. Past 16 MiB the scan runs in two threads (both implementations release the
        GIL)."""
        mapping = self._mapping()  # raises if closed
        if self._lines is None:
            threads = 2 if self.size >= _THREADED_INDEX_BYTES and _usable_cpus() > 1 else 1
            # on_shrink must not hold the reader: the index would keep it alive in a cycle.
            on_shrink = functools.partial(_check_size, self._fd, self.path, self.size)
            lines = _LineIndex(mapping if mapping is not None else b"", self._fd, on_shrink, threads)
            if self._file is None:  # closed by another thread while the scan ran
                lines.release()
                self._mapping()  # raises: closed
            self._lines = lines
        return self._lines


def _check_size(fd: int, path: Path, size: int, seen: bool = False) -> None:
    """Raise FileTruncatedError if the file open as ``fd`` is now shorter than ``size``, or
    if ``seen``: the line index saw it shorter (it may have grown back since).

    ``lseek`` to the end returns the size: a third of an fstat's cost (no stat object); the
    file position it moves is never used (all reads are mapped or pread)."""
    now = os.lseek(fd, 0, os.SEEK_END)
    if now < size:
        raise FileTruncatedError(
            f"{path} shrank from {size:,} to {now:,} bytes while it was mapped "
            "(a writer truncated or restarted it?): reading the lost pages would crash "
            "the process; open a new MemoryMappedReader"
        )
    if seen:
        raise FileTruncatedError(
            f"{path} shrank below {size:,} bytes while a line was read from it (it is {now:,} "
            "bytes again now: a writer truncated and rewrote it?); open a new MemoryMappedReader"
        )


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def __getattr__(name: str) -> Any:
    """``_NumpyLineIndex`` loads (with numpy) only when something asks for it."""
    if name == "_NumpyLineIndex":
        from perflab.jsonl._numpy_index import _NumpyLineIndex

        return _NumpyLineIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if _CompiledLineIndex is not None:
    _LineIndex: Any = _CompiledLineIndex
else:  # the fallback needs numpy
    from perflab.jsonl._numpy_index import _NumpyLineIndex as _LineIndex


# --------------------------------------------------------------------------- read_jsonl


class _Torn(Exception):
    """The stream ended inside a gzip member or zstd frame (a crashed writer): the member
    began at byte ``start`` and the file ends at byte ``end``."""

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end


def read_jsonl(path: str | os.PathLike[str], *, recover: bool = False) -> Iterator[Any]:
    """Yield the records of a .jsonl, .jsonl.gz or .jsonl.zst file.

    The codec is recognised from the file's first bytes, so names don't matter; gzip files
    may hold many members and zstd files many frames (what CompressedWriter writes). Blank
    lines are skipped.
    """
    path, file = _open_regular(path)
    with file:
        head = file.read(4)
        file.seek(0)
        found = detect_format(head)
        named = format_of_path(path)
        if head and named in ("gzip", "zstd") and found != named:
            raise ValueError(
                f"{path}: named like a {named} file but its first bytes {head!r} are not {named} "
                f"data (it looks like {found} data)"
            )
        if found in ("gzip", "zstd"):
            chunks, kind = _frame_chunks(file, found), "gzip member" if found == "gzip" else "zstd frame"
        else:
            chunks, kind = iter(lambda: file.read(_CHUNK), b""), ""
        yield from _records(path, chunks, kind, recover)


class _LineParser:
    """Parses lines as JSON, counting lines and bytes so an error can say where it is."""

    def __init__(self, path: Path, place: str) -> None:
        self.path = path
        self.place = place  # "byte", or "decompressed byte" in a compressed file
        self.number = 0  # lines seen
        self.offset = 0  # where the next line starts

    def parse(self, blocks: Iterable[io.BytesIO]) -> Iterator[Any]:
        """Parse blocks of whole lines: each block in one ``map`` (no Python code per line;
        orjson takes the newline for whitespace); a block with a blank or bad line is parsed
        again line by line to skip or place it."""
        loads, error = orjson.loads, orjson.JSONDecodeError
        for block in blocks:
            try:
                records = list(map(loads, block))
            except error:
                block.seek(0)
                yield from self._one_by_one(block)
                continue
            self.number += len(records)
            self.offset += block.tell()
            yield from records

    def _one_by_one(self, block: io.BytesIO) -> Iterator[Any]:
        loads = orjson.loads
        for line in block:
            self.number += 1
            if line.strip():
                try:
                    yield loads(line)
                except orjson.JSONDecodeError as exc:
                    raise ValueError(f"{self.where()} is not JSON: {exc}") from None
            self.offset += len(line)

    def where(self) -> str:
        return f"{self.path}: line {self.number} ({self.place} {self.offset})"


def _records(path: Path, chunks: Iterator[bytes], kind: str, recover: bool) -> Iterator[Any]:
    """Split decoded chunks into lines and parse them; handle a torn tail."""
    parser = _LineParser(path, "decompressed byte" if kind else "byte")
    tail: list[bytes] = []
    try:
        yield from parser.parse(_whole_lines(chunks, tail))
    except _Torn as torn:
        if recover:
            return
        raise ValueError(
            f"{path}: truncated at byte {torn.end}: the last {kind}, from byte {torn.start}, ends "
            f"early (a writer that crashed?); {parser.number} intact lines were read. "
            "Use recover=True to stop there."
        ) from None
    rest = tail[0]
    if rest.strip():
        # A last line without its newline: a whole record typed by hand, or a torn one.
        # Inside a complete member/frame (its CRC or checksum held) it was written whole;
        # in a plain file a torn "6789" may still parse as "67", so recovery stops before it.
        if recover and not kind:
            return
        try:
            record = orjson.loads(rest)
        except orjson.JSONDecodeError:
            if recover:
                return
            parser.number += 1
            raise ValueError(
                f"{parser.where()} is cut off (no newline, not JSON): a torn tail. "
                "Use recover=True to stop before it."
            ) from None
        yield record


def _whole_lines(chunks: Iterator[bytes], tail: list[bytes]) -> Iterator[io.BytesIO]:
    """The chunks re-cut after their last newline, as streams of whole lines; what follows
    the file's last newline goes to ``tail``."""
    rest = b""
    for chunk in chunks:
        if rest:
            chunk = rest + chunk
        cut = chunk.rfind(b"\n") + 1
        rest = chunk[cut:]
        if cut:
            block = io.BytesIO(chunk)
            if rest:
                block.truncate(cut)
            yield block
    tail.append(rest)


def _frame_chunks(file: Any, codec: str) -> Iterator[bytes]:
    """Decompress a sequence of self-contained gzip members or zstd frames, tracking where
    each starts; raise _Torn if the last one never finishes (python-zstandard's one-shot
    ``decompress()`` returns only the first frame, and a truncated stream can end without
    an error)."""
    new_decompressor, error = new_decompressor_of(codec)
    decompressor = new_decompressor()
    frame_start = 0
    consumed = 0
    while data := file.read(_CHUNK):
        while data:
            if codec == "gzip" and consumed == frame_start and frame_start and data[0] == 0:
                _check_padding(file, data, frame_start)
                return
            try:
                out = decompressor.decompress(data)
            except error as exc:
                raise ValueError(
                    f"{file.name}: corrupt {codec} data after byte {frame_start}: {exc}"
                ) from None
            if out:
                yield out
            if not decompressor.eof:
                consumed += len(data)
                break
            consumed += len(data) - len(decompressor.unused_data)
            data = decompressor.unused_data
            frame_start = consumed
            decompressor = new_decompressor()
    if consumed != frame_start:  # bytes of a member/frame that never finished
        raise _Torn(frame_start, consumed)


def _check_padding(file: Any, data: bytes, start: int) -> None:
    """Zero bytes after the last gzip member are padding (``gzip -dc`` accepts them, as
    tape and block devices leave them); anything else there is corruption."""
    while data:
        if data.strip(b"\0"):
            raise ValueError(
                f"{file.name}: corrupt gzip data after byte {start}: neither a member nor zero padding"
            )
        data = file.read(_CHUNK)
