"""JSON-lines writers: BufferedWriter (plain) and CompressedWriter (gzip, zstd, isal).

Both share one buffering core, :class:`_LineBuffer`: each record is serialized by orjson
into one line, appended to an in-memory buffer that is reused (never shrunk) from flush to
flush, and the buffer goes out in one write call when it reaches ``buffer_size`` bytes or
holds ``max_writes`` records. A flush therefore writes whole lines only, and the cost stays
flat from 4 KiB to 8 MiB buffers (joining a list of lines into large chunks does not: a
page fault per line once chunks pass malloc's mmap threshold; nor does a bytearray
cleared after each flush, which gives its memory back and faults again refilling it).

Crash safety: a record is "flushed" once its bytes are in the OS (a kill -9 cannot lose
them; a power cut can, unless ``fsync``). CompressedWriter ends every flush so that the
file decodes up to there. By default it writes a complete gzip member or zstd frame per
flush (``flush_mode="frame"``): after a kill the file is a valid multi-member gzip or
multi-frame zstd file that ``zcat``/``zstd -d`` read to the end with exit status 0, at a
cost of about 3% of the ratio at 64 KiB flushes (less at larger ones). The alternative,
``flush_mode="sync"`` (a zlib sync flush or a zstd block flush inside one stream), keeps
the full ratio, and perflab's ``read_jsonl(recover=True)`` reads every flushed record back,
but standard tools report "unexpected end of file" on a file whose writer died.

A write cut short (a full disk, a file-size limit, a quota, a signal): the file is cut back
to where the flush began (it ends on a whole record), or, where it cannot be cut (a FIFO,
a file someone else changed), only the bytes that did not get out are kept; the error is
raised and the flush's records stay queued, already encoded, in front of the next flush.
Nothing is written twice, and a sync-mode stream is fed each line once. The bookkeeping is
per flush (an offset and one ``fstat`` on failure), nothing per record.

Appending after a crash: ``append=True`` first finds the end of the file's intact part
(see :mod:`perflab.jsonl._recovery`) and cuts a torn tail off there with a
:class:`TornTailWarning` that names the file, the offset and the bytes dropped, so new
records never glue onto half a line or into an unfinished member/frame. A torn sync-mode
stream is closed at its last flush instead, keeping every record flushed before the
crash. Appending one format to a file of another (gzip onto zstd, plain onto gzip) is
refused. NaN and infinities, which JSON cannot hold (orjson would write ``null``), are
refused with ValueError naming the key unless ``nan_as_null=True`` asks for ``null``.
The check searches each serialized line for ``null`` (and walks only records that hold
one): about 0.1-0.2 us per record, 1.4-1.6x the cost of a plain ``write_many`` of the
generated records on a 2-core VM; ``nan_as_null=True`` skips it.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import math
import os
import re
import stat
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, NoReturn

import orjson

from perflab._validate import check_int
from perflab.jsonl._recovery import detect_format, find_tail
from perflab.jsonl.codecs import Codec, Stream, compressor, format_of, suffix_of

__all__ = ["BufferedWriter", "CompressedWriter", "TornTailWarning", "WriterStats"]

_dumps = orjson.dumps
_NEWLINE_OPTION = orjson.OPT_APPEND_NEWLINE

_FSYNC_POLICIES = {False: "never", "never": "never", True: "flush", "flush": "flush", "close": "close"}


class TornTailWarning(UserWarning):
    """``append=True`` found a torn tail (a writer that crashed) and cut it off."""


@dataclasses.dataclass(frozen=True, slots=True)
class WriterStats:
    """What a writer has done so far.

    ``raw_bytes`` counts the serialized lines; ``bytes_written`` what reached the file
    (compressed, for CompressedWriter). ``compression_ratio = bytes_written / raw_bytes``
    (0.26 means the file is 26% of the raw size: 74% saved); ``compress_seconds`` is the
    wall time spent compressing. Both are ``None`` for the plain writer.
    """

    records: int
    raw_bytes: int
    bytes_written: int
    flushes: int
    bytes_per_flush: float
    buffered_records: int
    buffered_bytes: int
    fsyncs: int
    compression_ratio: float | None = None
    compress_seconds: float | None = None

    @property
    def flushed_records(self) -> int:
        """Records whose bytes are in the OS: they survive a kill of this process."""
        return self.records - self.buffered_records

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _refuse(message: str) -> Any:
    def refuse(data: Any) -> int:
        raise ValueError(message)

    return refuse


class _LineBuffer:
    """The shared core: serialize, buffer, flush on thresholds. Subclasses encode and write."""

    __slots__ = (
        "path",
        "buffer_size",
        "max_writes",
        "_file",
        "_buffer",
        "_append",
        "_size",
        "_count",
        "_records",
        "_raw_bytes",
        "_bytes_written",
        "_flushes",
        "_fsyncs",
        "_nan_as_null",
        "_end",
        "_pending",
        "_pending_records",
        "_pending_raw",
        "_owner",
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        buffer_size: int,
        max_writes: int,
        append: bool,
        data_format: str,
        nan_as_null: bool,
    ) -> None:
        self.buffer_size = check_int("buffer_size", buffer_size, minimum=1)
        self.max_writes = check_int("max_writes", max_writes, minimum=1)
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        if not isinstance(append, bool):
            raise TypeError(f"append must be a bool, got {type(append).__name__} {append!r}")
        if not isinstance(nan_as_null, bool):
            raise TypeError(f"nan_as_null must be a bool, got {type(nan_as_null).__name__} {nan_as_null!r}")
        self._nan_as_null = nan_as_null
        self.path = Path(path)
        # A BytesIO written from the start again after each flush keeps its memory: a
        # bytearray cleared after a flush gives it back, and refilling an 8 MiB buffer
        # then page-faults 2,048 times per flush.
        self._buffer = io.BytesIO()
        self._append = self._buffer.write
        self._size = 0  # bytes buffered (the BytesIO may hold older bytes past this)
        self._count = 0
        self._records = self._raw_bytes = self._bytes_written = self._flushes = self._fsyncs = 0
        self._file = None
        # A flush whose write failed (ENOSPC, EFBIG, EDQUOT, a signal): its encoded bytes,
        # sent again in front of the next flush's, so nothing goes out twice or not at all.
        self._pending = b""
        self._pending_records = self._pending_raw = 0
        self._owner = threading.Lock()  # held inside flush(): a second thread is refused
        if append:
            _cut_torn_tail(self.path, data_format)
        # Unbuffered: every flush is exactly one write call (the OS error names the path).
        self._file = open(self.path, "ab" if append else "wb", buffering=0)  # noqa: SIM115
        # Where the file ends on a record boundary: a failed write is cut back to it. None
        # for a FIFO or a device, which cannot be cut.
        status = os.fstat(self._file.fileno())
        self._end: int | None = status.st_size if stat.S_ISREG(status.st_mode) else None

    def __enter__(self) -> _LineBuffer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"<{type(self).__name__} {state} path={str(self.path)!r} buffered={self._count} "
            f"records={self._records} flushes={self._flushes}>"
        )

    @property
    def closed(self) -> bool:
        return self._file is None

    def __del__(self) -> None:
        # Like io's own files: a writer dropped without close() still gets its buffer out.
        if getattr(self, "_file", None) is not None:
            warnings.warn(f"unclosed {type(self).__name__} {str(self.path)!r}", ResourceWarning, stacklevel=1)
            self.close()

    def write(self, record: Any) -> None:
        """Write one JSON-serializable value as one line.

        A value orjson cannot serialize raises TypeError, and one holding NaN or an
        infinity ValueError naming the key; either leaves the buffer as it was.
        """
        line = _dumps(record, None, _NEWLINE_OPTION)
        if not self._nan_as_null and _has_null(line):  # orjson writes NaN and inf as null
            _refuse_non_finite(record)
        # After close() _append refuses: no closed check on this hot path.
        try:
            size = self._size = self._size + self._append(line)
        except BufferError:
            self._refuse_concurrent()
        count = self._count = self._count + 1
        if count >= self.max_writes or size >= self.buffer_size:
            self.flush()

    def write_many(self, records: Iterable[Any]) -> int:
        """Write every record as :meth:`write` would, without a method call per record
        (the fastest way to write many); return how many were written."""
        append, buffer_size, max_writes = self._append, self.buffer_size, self.max_writes
        check_nulls = not self._nan_as_null
        size, count, written = self._size, self._count, 0
        try:
            for record in records:
                line = _dumps(record, None, _NEWLINE_OPTION)
                if check_nulls and _has_null(line):
                    _refuse_non_finite(record)
                size += append(line)
                count += 1
                written += 1
                if count >= max_writes or size >= buffer_size:
                    self._size, self._count = size, count
                    try:
                        self.flush()
                    finally:  # what the flush took is queued in the writer, not here
                        size, count = self._size, self._count
        except BufferError:
            self._refuse_concurrent()
        finally:  # a record that fails to serialize leaves what came before it buffered
            self._size, self._count = size, count
        return written

    def write_line(self, line: str | bytes | bytearray | memoryview) -> None:
        """Write one raw line; a single trailing newline is optional, any other is refused."""
        if self._file is None:
            raise ValueError(f"write to a closed {type(self).__name__} ({self.path})")
        if isinstance(line, str):
            data = line.encode()
        elif isinstance(line, bytes | bytearray | memoryview):
            data = bytes(line)
        else:
            raise TypeError(f"line must be str or bytes, got {type(line).__name__}")
        if data.endswith(b"\n"):
            data = data[:-1]
        if b"\n" in data:
            raise ValueError("line must be one line: it contains a newline")
        try:
            self._size += self._append(data + b"\n")
        except BufferError:
            self._refuse_concurrent()
        self._count += 1
        if self._size >= self.buffer_size or self._count >= self.max_writes:
            self.flush()

    def flush(self) -> None:
        """Send the buffered lines to the file in one write (whole lines only).

        If the write fails (a full disk, a file-size limit), the file is cut back to its
        last whole record and the error raised; the records stay queued, already encoded,
        and go out exactly once with the next flush (``stats.buffered_records`` counts
        them). A sync-mode stream is never fed the same lines twice.
        """
        if self._file is None:
            raise ValueError(f"flush of a closed {type(self).__name__} ({self.path})")
        size = self._size
        if not size and not self._pending:
            return
        owner = self._owner
        if not owner.acquire(False):  # another thread is inside a flush: they would interleave
            self._refuse_concurrent()
        try:
            if size:
                count = self._count
                with self._buffer.getbuffer() as whole, whole[:size] as lines:
                    data = self._encode(lines)
                    self._size = self._count = 0
                    if self._pending:
                        self._send(data, count, size)
                    else:  # the usual flush, inline: nothing left over from a failed one
                        try:
                            self._write_all(data)
                        except BaseException:
                            self._pending_records, self._pending_raw = count, size
                            raise
                        self._records += count
                        self._raw_bytes += size
                        self._flushes += 1
                        self._after_flush()
            else:
                self._send(b"", 0, 0)
        except BaseException as exc:
            if self._pending_records:
                exc.add_note(
                    f"{type(self).__name__}: {self._pending_records} record(s) not written to "
                    f"{self.path}; the file ends on its last whole record, and the next flush() "
                    "or close() writes them, once"
                )
            raise
        finally:
            if size:
                self._buffer.seek(0)
            owner.release()

    def _refuse_concurrent(self) -> NoReturn:
        raise RuntimeError(
            f"{type(self).__name__} ({self.path}) is being flushed by another thread: "
            "a writer is not thread-safe; use one writer per thread or a lock"
        )

    def _send(self, data: bytes | memoryview, records: int, raw: int, *, flush: bool = True) -> None:
        """Write ``data`` (after what a failed flush left); count it once it is all out."""
        pending = self._pending
        if pending:
            data = pending + data
            records += self._pending_records
            raw += self._pending_raw
        try:
            self._write_all(data)
        except BaseException:
            self._pending_records, self._pending_raw = records, raw
            raise
        if pending:
            self._pending = b""
            self._pending_records = self._pending_raw = 0
        self._records += records
        self._raw_bytes += raw
        if flush:
            self._flushes += 1
            self._after_flush()

    def close(self) -> None:
        """Flush what is buffered, finish the file and close it; idempotent."""
        if self._file is None:
            return
        try:
            self.flush()
            tail = self._finish()
            if tail or self._pending:
                self._send(tail, 0, 0, flush=False)
            self._before_close()
        except BaseException as exc:
            if self._pending_records or self._pending:
                exc.add_note(
                    f"{type(self).__name__}.close(): the writer is closed with {self._pending_records} "
                    f"record(s) not written; {self.path} ends on its last whole record"
                )
            raise
        finally:
            file, self._file = self._file, None
            self._append = _refuse(f"write to a closed {type(self).__name__} ({self.path})")
            self._buffer = io.BytesIO()  # give the memory back
            file.close()

    @property
    def stats(self) -> WriterStats:
        queued = self._pending_records
        return WriterStats(
            records=self._records + queued + self._count,
            raw_bytes=self._raw_bytes,
            bytes_written=self._bytes_written,
            flushes=self._flushes,
            bytes_per_flush=self._bytes_written / self._flushes if self._flushes else 0.0,
            buffered_records=queued + self._count,
            buffered_bytes=self._pending_raw + self._size,
            fsyncs=self._fsyncs,
        )

    # Hooks for the subclasses.

    def _encode(self, lines: memoryview) -> bytes | memoryview:
        return lines

    def _finish(self) -> bytes:
        return b""

    def _after_flush(self) -> None:
        return None

    def _before_close(self) -> None:
        return None

    def _open_file(self) -> io.FileIO:
        if self._file is None:
            raise ValueError(f"{self.path}: the writer is closed")
        return self._file

    def _write_all(self, data: bytes | memoryview) -> None:
        """Write ``data`` whole; if that fails, cut the file back to where it ended (or,
        where it cannot be cut, keep only the rest) and keep it for the next attempt."""
        file = self._open_file()
        size = len(data)
        written = 0
        try:
            written = file.write(data)  # one call, all of it, but for a full disk or a signal
            if written != size:
                view = memoryview(data)
                while written < size:
                    written += file.write(view[written:])
        except BaseException:
            self._pending = bytes(memoryview(data)[self._cut_back(file, written) :])
            raise
        self._bytes_written += written
        if self._end is not None:
            self._end += written

    def _cut_back(self, file: io.FileIO, written: int) -> int:
        """After a write failed with ``written`` bytes out: truncate them off if the file
        is ours to cut (regular, and its size is what we wrote); return how many of the
        bytes stay written (0 after a cut)."""
        end = self._end
        if not written:
            return 0
        if end is not None:
            try:
                fd = file.fileno()
                if os.fstat(fd).st_size == end + written:
                    os.ftruncate(fd, end)
                    os.lseek(fd, end, os.SEEK_SET)
                    return 0
            except OSError:
                pass
        self._end = None  # the file was changed by someone else: never cut it again
        self._bytes_written += written
        return written

    def _fsync(self) -> None:
        os.fsync(self._open_file().fileno())
        self._fsyncs += 1


def _cut_torn_tail(path: Path, data_format: str) -> None:
    """Before appending: refuse a file of another format; cut a torn tail off (warning),
    or finish what a crash left unfinished, so the next write starts on a clean end."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        return  # a FIFO or a device: nothing to repair; open() says what else is wrong
    with open(path, "r+b") as file:
        found = detect_format(file.read(4))
        if file.tell() == 0:
            return  # empty
        if found != data_format:
            raise ValueError(
                f"cannot append {data_format} data to {str(path)!r}: it holds {found} data "
                "(pass append=False to replace it, or write to another file)"
            )
        tail = find_tail(file, data_format)
        if tail.clean:
            return
        file.truncate(tail.intact)
        file.seek(tail.intact)
        file.write(tail.closing)
        file.flush()
        os.fsync(file.fileno())
    if tail.dropped:
        warnings.warn(
            f"{path}: torn tail cut off at byte {tail.intact}: {tail.dropped} bytes dropped "
            f"({tail.detail}; a writer that crashed?)",
            TornTailWarning,
            stacklevel=4,
        )


# A compiled literal search scans with memchr: several times faster than ``in`` here.
_has_null = re.compile(rb"null").search


def _refuse_non_finite(record: Any) -> None:
    """Raise ValueError naming the first NaN/inf in ``record`` (JSON has no such numbers)."""
    if _all_finite(record):
        return  # the null was a None or inside a string
    found = _non_finite(record, "record")
    if found is not None:
        where, value = found
        raise ValueError(
            f"{where} is {value}: JSON has no NaN or infinity (orjson would write null); "
            "pass nan_as_null=True to write them as null"
        )


def _all_finite(value: Any) -> bool:
    """True if no float inside ``value`` is NaN or infinite (the fast check, no names)."""
    kind = value.__class__
    if kind is float:
        return value - value == 0.0  # nan - nan and inf - inf are nan
    if kind is dict:
        items: Any = value.values()
    elif kind is list or kind is tuple:
        items = value
    elif kind in _SCALARS:
        return True
    else:
        return _non_finite(value, "") is None  # dataclasses and other containers
    for item in items:
        kind = item.__class__
        if kind is float:
            if item - item != 0.0:
                return False
        elif kind not in _SCALARS and not _all_finite(item):
            return False
    return True


_SCALARS = frozenset({str, int, bool, type(None)})


def _non_finite(value: Any, where: str) -> tuple[str, float] | None:
    """Where the first non-finite float in ``value`` is, as ``record['key'][2]``."""
    if isinstance(value, enum.Enum):  # orjson writes an Enum as its value
        return _non_finite(value.value, f"{where}.value")
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, value)
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((field.name, getattr(value, field.name)) for field in dataclasses.fields(value))
    else:
        return None
    for key, item in items:
        found = _non_finite(item, f"{where}[{key!r}]")
        if found is not None:
            return found
    return None


class BufferedWriter(_LineBuffer):
    """Write JSON lines through a buffer that goes out in one write call per flush.

    Usage::

        with BufferedWriter("quotes.jsonl", buffer_size=256 * 1024) as out:
            for quote in quotes:
                out.write(quote)

    ``fsync``: ``False``/"never" (the default: a kill -9 loses nothing flushed, a power
    cut may), ``True``/"flush" (fsync after every flush) or "close" (once, at close).
    """

    __slots__ = ("fsync",)

    def __init__(
        self,
        path: str | os.PathLike[str],
        buffer_size: int = 65536,
        max_writes: int = 1000,
        *,
        append: bool = False,
        fsync: bool | Literal["never", "flush", "close"] = False,
        nan_as_null: bool = False,
    ) -> None:
        policy = _FSYNC_POLICIES.get(fsync) if isinstance(fsync, bool | str) else None
        if policy is None:
            raise ValueError(f"fsync must be True, False, 'never', 'flush' or 'close', got {fsync!r}")
        self.fsync = policy
        super().__init__(path, buffer_size, max_writes, append, "plain", nan_as_null)

    def _after_flush(self) -> None:
        if self.fsync == "flush":
            self._fsync()

    def _before_close(self) -> None:
        if self.fsync == "close":
            self._fsync()


class CompressedWriter(_LineBuffer):
    """Write compressed JSON lines; every flush leaves a file that decodes up to it.

    Usage::

        with CompressedWriter("quotes.jsonl.zst", compression_level=3, codec="zstd") as out:
            out.write({"symbol": "AAPL", "price": 187.23})

    ``codec``: "gzip" (levels 0-9), "zstd" (levels 1-22) or "isal" (gzip format by
    ISA-L, levels 0-3, several times faster; ``pip install perflab[isal]``).
    ``flush_mode``: "frame" (default; a complete gzip member or zstd frame per flush) or
    "sync" (one stream with a sync/block flush per flush); see the module docstring.
    """

    __slots__ = ("codec", "compression_level", "flush_mode", "_compressor", "_stream", "_compress_seconds")

    def __init__(
        self,
        path: str | os.PathLike[str],
        compression_level: int = 6,
        *,
        codec: Codec = "gzip",
        buffer_size: int = 65536,
        max_writes: int = 1000,
        append: bool = False,
        flush_mode: Literal["frame", "sync"] = "frame",
        nan_as_null: bool = False,
    ) -> None:
        self._compressor = compressor(codec, compression_level)  # checks codec and level
        if flush_mode not in ("frame", "sync"):
            raise ValueError(f"flush_mode must be 'frame' or 'sync', got {flush_mode!r}")
        self.codec = codec
        self.compression_level = compression_level
        self.flush_mode = flush_mode
        self._stream: Stream | None = None  # the open sync-mode stream
        self._compress_seconds = 0.0
        super().__init__(path, buffer_size, max_writes, append, format_of(codec), nan_as_null)

    @property
    def suffix(self) -> str:
        """The file suffix for this codec: ".gz" or ".zst"."""
        return suffix_of(self.codec)

    @property
    def stats(self) -> WriterStats:
        base = super().stats
        ratio = base.bytes_written / base.raw_bytes if base.raw_bytes else None
        return dataclasses.replace(base, compression_ratio=ratio, compress_seconds=self._compress_seconds)

    def _encode(self, lines: memoryview) -> bytes:
        started = time.perf_counter()
        if self.flush_mode == "frame":
            data = self._compressor.frame(lines)
        else:
            if self._stream is None:
                self._stream = self._compressor.stream()
            data = self._stream.sync(lines)
        self._compress_seconds += time.perf_counter() - started
        return data

    def _finish(self) -> bytes:
        if self._stream is None:
            return b""
        started = time.perf_counter()
        data = self._stream.finish()
        self._compress_seconds += time.perf_counter() - started
        self._stream = None
        return data
