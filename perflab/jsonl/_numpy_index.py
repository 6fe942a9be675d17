"""The reader's line index where ``perflab.jsonl._lineindex`` was not compiled: numpy finds
the newlines. Imported only then (or when asked for), so the core reader needs no numpy
when the extension is there."""

from __future__ import annotations

import concurrent.futures
import operator
import os
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

__all__: list[str] = []

_INDEX_CHUNK = 1 << 20  # bytes scanned per numpy pass when building the line index


class _NumpyLineIndex:
    """The line index where ``perflab.jsonl._lineindex`` was not compiled: the same interface and
    results, the newlines found with numpy and each lookup a few bytecodes more.

    ``LineIndex(buffer, fd, on_shrink, threads)`` scans the mapping 1 MiB at a time, calling
    ``on_shrink(True)`` (which raises) before each step and before each lookup if the file
    got shorter than the buffer. Offsets are kept as an int64 ``memoryview``, whose items index
    as plain ints far faster than numpy's.
    """

    __slots__ = ("_buffer", "_fd", "_size", "_on_shrink", "_offsets")

    def __init__(self, buffer: Any, fd: int, on_shrink: Callable[[bool], None], threads: int = 1) -> None:
        self._buffer = buffer
        self._fd = fd
        self._size = size = len(buffer)
        self._on_shrink = on_shrink
        starts = [np.zeros(1, dtype=np.int64)]
        if size:
            data = np.frombuffer(buffer, dtype=np.uint8)
            try:
                starts += _newline_ends(data, self._check, threads)
            finally:
                del data  # drop the export so the mapping can close
            if buffer[size - 1] != 10:  # the last line has no newline
                starts.append(np.array([size + 1], dtype=np.int64))
        self._offsets = memoryview(np.concatenate(starts).tobytes()).cast("q")

    def _check(self) -> None:
        if os.lseek(self._fd, 0, os.SEEK_END) < self._size:
            self._shrunk()

    def _shrunk(self) -> NoReturn:
        self._on_shrink(True)
        raise RuntimeError("the file shrank under the line index")

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def line(self, index: int) -> bytes:
        try:  # the common case, a plain int in range, on the fewest bytecodes
            if index.__class__ is not int or index < 0:
                raise TypeError
            offsets = self._offsets
            start = offsets[index]
            end = offsets[index + 1] - 1  # the newline's offset
        except (TypeError, IndexError):
            start, end = self._span(index)
        buffer = self._buffer
        if buffer is None:
            raise ValueError("the line index was released (its reader is closed)")
        if os.lseek(self._fd, 0, os.SEEK_END) < self._size:
            self._shrunk()
        return buffer[start:end]

    def _span(self, index: Any) -> tuple[int, int]:
        """Where line ``index`` starts and ends; the errors for anything but an index in range."""
        if isinstance(index, bool) or not hasattr(index, "__index__"):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        count = len(self._offsets) - 1
        at = operator.index(index)
        at = at + count if at < 0 else at
        if not 0 <= at < count:
            raise IndexError(f"line index {index} out of range for {count} lines")
        return self._offsets[at], self._offsets[at + 1] - 1

    def offsets(self) -> bytes:
        return self._offsets.tobytes()

    def release(self) -> None:
        self._buffer = None


def _newline_ends(data: np.ndarray, check: Callable[[], None], threads: int) -> list[np.ndarray]:
    """The offset after every newline of ``data``, as int64 arrays in order."""
    size = data.size
    halves = [(0, size)]
    if threads > 1:
        middle = size // 2 // _INDEX_CHUNK * _INDEX_CHUNK
        halves = [(0, middle), (middle, size)]

    def scan(low: int, high: int) -> list[np.ndarray]:
        found = []
        is_newline = np.empty(_INDEX_CHUNK, dtype=bool)  # reused: stays in cache
        any_in_byte = np.empty(_INDEX_CHUNK // 8, dtype=bool)
        for begin in range(low, high, _INDEX_CHUNK):
            check()
            chunk = data[begin : min(begin + _INDEX_CHUNK, high)]
            found.append(_ends_in(chunk, begin, is_newline, any_in_byte))
        return found

    if len(halves) == 1:
        return scan(0, size)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first, second = [pool.submit(scan, low, high) for low, high in halves]
        return first.result() + second.result()


def _ends_in(chunk: np.ndarray, base: int, is_newline: np.ndarray, any_in_byte: np.ndarray) -> np.ndarray:
    """Offsets after the newlines of ``chunk`` (which starts at ``base``).

    ``flatnonzero`` over a byte mask costs more than the comparison that made it, and
    newlines are sparse (one in ~200 bytes): so the mask is packed to bits, only the packed
    bytes that hold a newline are unpacked again and searched. 2.5x faster than
    ``flatnonzero(chunk == 10)`` on 200-byte lines.
    """
    mask = is_newline[: chunk.size]
    np.equal(chunk, 10, out=mask)
    bits = np.packbits(mask, bitorder="little")
    holds = any_in_byte[: bits.size]
    np.not_equal(bits, 0, out=holds)
    which = np.flatnonzero(holds)
    within = np.flatnonzero(np.unpackbits(bits[which], bitorder="little").view(bool))
    return (which[within >> 3] << 3) + (within & 7) + (base + 1)
