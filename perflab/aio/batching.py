"""BatchProcessor: Kafka-style batching for asyncio (size, bytes, linger), one batch at a
time and in order, with retries and no silent drops.

A batch is sealed when it holds ``batch_size`` items, when its bytes reach
``max_batch_bytes``, or ``flush_interval`` seconds after its FIRST item arrived (Kafka's
``linger.ms``), whichever comes first; also on ``flush()`` and ``close()``. Sealed batches
go to a single background flusher task, so the producer keeps filling the next batch
while the sink works (at most :data:`MAX_PENDING_BATCHES` sealed batches; then ``add``
waits: backpressure). A batch that still fails after its retries is kept in
``failed_batches`` and its error is raised from the next ``add``/``flush``/``close``.

No item is stranded: a cancelled ``close()`` stops the flusher but keeps the unprocessed
items pending (``stats.pending_items``), and the next ``close()`` processes them (a batch
the cancel interrupted goes to the processor again: delivery is at least once). A
processor used in one event loop that has since ended (``add`` in one ``asyncio.run``,
``close`` in the next) moves to the running one with its items; one still running in
another thread's loop is refused with RuntimeError.
"""

from __future__ import annotations

import asyncio
import dataclasses
import operator
import warnings
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import orjson

from perflab._validate import (
    check_async_callable,
    check_int,
    check_number,
    check_optional_int,
    check_optional_number,
)
from perflab.aio.histogram import Histogram, HistogramSnapshot

__all__ = ["BatchProcessor", "BatchStats", "MAX_PENDING_BATCHES"]

T = TypeVar("T")

#: Sealed batches (the one in the processor included) before ``add`` waits for the sink.
MAX_PENDING_BATCHES = 2

FLUSH_REASONS = ("size", "bytes", "time", "explicit", "close")


#: Upper bounds of the items-per-batch histogram.
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


@dataclasses.dataclass(frozen=True, slots=True)
class BatchStats:
    """Counters of a :class:`BatchProcessor`.

    ``flush_reasons`` counts every sealed batch by what sealed it, so
    ``sum(flush_reasons.values()) == batches + failed_batches + sealed batches still
    waiting``. ``max_item_wait_seconds`` is the longest an item waited from ``add`` until
    the processor finished its batch.
    """

    batches: int
    items: int
    failed_batches: int
    failed_items: int
    retries: int
    pending_items: int
    flush_reasons: dict[str, int]
    mean_batch_size: float
    max_item_wait_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Sealed:
    __slots__ = ("items", "reason", "first_added")

    def __init__(self, items: list[Any], reason: str, first_added: float) -> None:
        self.items = items
        self.reason = reason
        self.first_added = first_added


class BatchProcessor(Generic[T]):
    """Group items into batches for ``processor``, an ``async def f(batch: list)``.

    Usage::

        async with BatchProcessor(write_rows, batch_size=500, flush_interval=0.2) as bp:
            async for row in rows:
                await bp.add(row)
        print(bp.stats)
    """

    __slots__ = (
        "_processor",
        "batch_size",
        "flush_interval",
        "max_batch_bytes",
        "max_retries",
        "retry_backoff",
        "failed_batches",
        "_batch",
        "_batch_bytes",
        "_first_added",
        "_fast",
        "_loop",
        "_linger",
        "_sealed",
        "_flusher",
        "_wakeup",
        "_idle_waiters",
        "_space_waiters",
        "_errors",
        "_failure_errors",
        "_sealed_items",
        "_closed",
        "_batches",
        "_items",
        "_failed_items",
        "_retries",
        "_reasons",
        "_max_wait",
        "_sizes",
    )

    def __init__(
        self,
        processor: Callable[[list[T]], Awaitable[Any]],
        batch_size: int = 100,
        flush_interval: float | None = 5.0,
        *,
        max_batch_bytes: int | None = None,
        max_retries: int = 0,
        retry_backoff: float = 0.1,
    ) -> None:
        self._processor = check_async_callable("processor", processor)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.flush_interval = check_optional_number("flush_interval", flush_interval, positive=True)
        self.max_batch_bytes = check_optional_int("max_batch_bytes", max_batch_bytes, minimum=1)
        self.max_retries = check_int("max_retries", max_retries, minimum=0)
        self.retry_backoff = check_number("retry_backoff", retry_backoff, minimum=0)
        self.failed_batches: list[list[T]] = []
        self._batch: list[T] = []
        self._batch_bytes = 0
        self._first_added = 0.0
        self._fast = False  # add() may just append: open, no error, batch started, no byte limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._sealed: deque[_Sealed] = deque()  # head is in the processor while it runs
        self._flusher: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._space_waiters: deque[asyncio.Future[None]] = deque()
        self._errors: list[BaseException] = []  # failures nobody has heard of yet
        self._failure_errors: list[BaseException] = []  # the error of each failed batch
        self._sealed_items = 0  # items in _sealed: stats never walk the deque (a scrape thread may read)
        self._closed = False
        self._batches = self._items = self._failed_items = self._retries = 0
        self._reasons = dict.fromkeys(FLUSH_REASONS, 0)
        self._max_wait = 0.0
        self._sizes = Histogram(BATCH_SIZE_BUCKETS)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<BatchProcessor {state} batch_size={self.batch_size} flush_interval={self.flush_interval} "
            f"buffered={len(self._batch)} sealed={len(self._sealed)} failed={len(self.failed_batches)}>"
        )

    def batch_size_histogram(self) -> HistogramSnapshot:
        """Items per processed batch, by bucket (one observation per batch, not per add)."""
        return self._sizes.snapshot()

    @property
    def stats(self) -> BatchStats:
        """A consistent snapshot, also from another thread (an exporter's scrape): the
        counters are read in one C call, which no other Python thread can interleave."""
        batch, sealed, batches, items, failed, failed_items, retries, reasons, max_wait = _COUNTERS(self)
        return BatchStats(
            batches=batches,
            items=items,
            failed_batches=len(failed),
            failed_items=failed_items,
            retries=retries,
            pending_items=len(batch) + sealed,
            flush_reasons=reasons.copy(),
            mean_batch_size=items / batches if batches else 0.0,
            max_item_wait_seconds=max_wait,
        )

    # ----------------------------------------------------------------- public API

    async def add(self, item: T) -> None:
        """Add one item; seals the batch when it is full and waits if the sink is behind."""
        if self._fast and _running_loop() is self._loop:
            batch = self._batch
            batch.append(item)
            if len(batch) < self.batch_size:
                return
            self._seal("size")
            if len(self._sealed) > MAX_PENDING_BATCHES:
                await self._wait_for_space()
            return
        await self._add_slow(item)

    async def flush(self) -> None:
        """Seal what is buffered and wait until the processor has every sealed batch."""
        if self._closed:
            raise RuntimeError("BatchProcessor is closed: flush() refused")
        self._start()
        failed_before = len(self._failure_errors)
        if self._batch:
            self._seal("explicit")
        await self._wait_idle()
        # Every caller whose wait saw a batch fail hears of it, not only the first.
        self._raise_errors(since=failed_before)

    async def close(self) -> None:
        """Flush what is left and stop. ``add`` after close raises RuntimeError.

        If ``close`` itself is cancelled, the flusher stops and the unprocessed items stay
        pending; calling ``close`` again processes them. Once everything is processed,
        further calls return at once.
        """
        if not self._closed:
            self._closed = True
            self._fast = False
        self._start()  # in this loop; items a cancelled close left are processed now
        failed_before = len(self._failure_errors)
        if self._batch:
            self._seal("close")
        try:
            await self._wait_idle()
        except asyncio.CancelledError:
            await self._stop_flusher()
            raise
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            self._wake_flusher()
            await flusher
        self._raise_errors(since=failed_before)

    async def __aenter__(self) -> BatchProcessor[T]:
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            await self.close()
            return
        try:
            await self.close()
        except Exception as close_error:  # don't hide the body's exception behind ours
            exc.add_note(
                f"BatchProcessor.close() also failed: {close_error!r}; "
                f"{len(self.failed_batches)} batch(es) kept in failed_batches"
            )

    def __del__(self) -> None:
        try:
            pending = len(self._batch) + self._sealed_items
        except AttributeError:  # __init__ rejected its arguments
            return
        if pending:
            warnings.warn(
                f"BatchProcessor destroyed with {pending} unprocessed item(s); call close()",
                ResourceWarning,
                stacklevel=1,
            )

    # ----------------------------------------------------------------- internals

    async def _add_slow(self, item: T) -> None:
        if self._closed:
            raise RuntimeError("BatchProcessor is closed: add() refused")
        self._raise_errors()
        loop = self._start()
        size = _item_size(item) if self.max_batch_bytes is not None else 0
        batch = self._batch
        batch.append(item)
        if len(batch) == 1:
            self._first_added = loop.time()
            if self.flush_interval is not None:
                self._linger = loop.call_at(self._first_added + self.flush_interval, self._on_linger)
        self._batch_bytes += size
        if len(batch) >= self.batch_size:
            self._seal("size")
        elif self.max_batch_bytes is not None and self._batch_bytes >= self.max_batch_bytes:
            self._seal("bytes")
        else:
            self._fast = self.max_batch_bytes is None
        if len(self._sealed) > MAX_PENDING_BATCHES:
            await self._wait_for_space()

    def _start(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._move_to(loop)
        if self._flusher is None or self._flusher.done():
            # (Re)start it; a flusher cancelled from outside left its batch at the head of
            # _sealed, so that batch is processed again: delivery is at least once.
            self._flusher = loop.create_task(self._run_flusher())
        return loop

    def _move_to(self, loop: asyncio.AbstractEventLoop) -> None:
        """Carry the items over from a loop that has ended to the running one."""
        old = self._loop
        if old is not None and not old.is_closed() and old.is_running():
            raise RuntimeError(
                "BatchProcessor is in use by an event loop that is still running (another thread?): "
                "use one processor per loop"
            )
        self._loop = loop
        # The old loop's tasks, timers and futures are gone with it; a batch its flusher
        # was processing is still at the head of _sealed and is processed again.
        self._flusher = None
        self._wakeup = None
        self._idle_waiters.clear()
        self._space_waiters.clear()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._batch:
            self._first_added = loop.time()  # the old loop's clock does not carry over
            if self.flush_interval is not None:
                self._linger = loop.call_at(self._first_added + self.flush_interval, self._on_linger)

    def _on_linger(self) -> None:
        self._linger = None
        if self._batch:
            self._seal("time")

    def _seal(self, reason: str) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._sealed.append(_Sealed(self._batch, reason, self._first_added))
        self._sealed_items += len(self._batch)
        self._reasons[reason] += 1
        self._batch = []
        self._batch_bytes = 0
        self._fast = False
        self._wake_flusher()

    def _wake_flusher(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _wait_for_space(self) -> None:
        while len(self._sealed) > MAX_PENDING_BATCHES:
            waiter = asyncio.get_running_loop().create_future()
            self._space_waiters.append(waiter)
            await waiter

    async def _wait_idle(self) -> None:
        while self._sealed:
            waiter = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(waiter)
            await waiter

    def _raise_errors(self, since: int | None = None) -> None:
        """Raise the first failure nobody has heard of, or (``since``) the first of the
        batches that failed while this caller waited, even if another caller heard of it."""
        seen = self._failure_errors[since:] if since is not None else []
        errors = list({id(exc): exc for exc in [*seen, *self._errors]}.values())
        if not errors:
            return
        self._errors.clear()
        first, *others = errors
        note = f"{len(others)} more batch(es) failed after it; all are in failed_batches"
        if others and note not in getattr(first, "__notes__", ()):
            first.add_note(note)
        self._fast = False
        raise first

    async def _run_flusher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._sealed:
                if self._closed:
                    return
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
                continue
            sealed = self._sealed[0]
            await self._process(loop, sealed)
            self._sealed.popleft()
            self._sealed_items -= len(sealed.items)
            _wake_all(self._space_waiters)
            if not self._sealed:
                _wake_all(self._idle_waiters)

    async def _process(self, loop: asyncio.AbstractEventLoop, sealed: _Sealed) -> None:
        attempt = 0
        while True:
            try:
                # A copy: a processor that takes items out of its batch and then fails must
                # not take them out of failed_batches (or out of the retry).
                await self._processor(list(sealed.items))
            except Exception as exc:
                if attempt < self.max_retries:
                    attempt += 1
                    self._retries += 1
                    await asyncio.sleep(self.retry_backoff * 2 ** (attempt - 1))
                    continue
                self.failed_batches.append(sealed.items)
                self._failed_items += len(sealed.items)
                self._failure_errors.append(exc)
                self._errors.append(exc)
                self._fast = False
                return
            waited = loop.time() - sealed.first_added
            if waited > self._max_wait:
                self._max_wait = waited
            self._batches += 1
            self._items += len(sealed.items)
            self._sizes.observe(len(sealed.items))
            return

    async def _stop_flusher(self) -> None:
        """Stop the flusher now; unprocessed items stay in ``_sealed`` for the next close."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None and not flusher.done():
            flusher.cancel()
            while not flusher.done():
                try:
                    await asyncio.wait([flusher])
                except asyncio.CancelledError:
                    pass  # we are being cancelled too; the flusher must still finish
        _wake_all(self._space_waiters)
        _wake_all(self._idle_waiters)


_running_loop = asyncio._get_running_loop  # the C getter: the fast add path checks its loop
_COUNTERS = operator.attrgetter(
    "_batch",
    "_sealed_items",
    "_batches",
    "_items",
    "failed_batches",
    "_failed_items",
    "_retries",
    "_reasons",
    "_max_wait",
)


def _wake_all(waiters: Any) -> None:
    while waiters:
        waiter = waiters.pop()
        if not waiter.done():
            waiter.set_result(None)


def _item_size(item: Any) -> int:
    """Bytes an item adds to a batch: its length if bytes-like, UTF-8 length if str,
    else the length of its JSON encoding (what a JSON-lines sink would write)."""
    if isinstance(item, bytes | bytearray):
        return len(item)
    if isinstance(item, memoryview):
        return item.nbytes
    if isinstance(item, str):
        return len(item) if item.isascii() else len(item.encode())
    try:
        return len(orjson.dumps(item))
    except TypeError:
        raise TypeError(
            f"max_batch_bytes needs items that are bytes, str or JSON-serializable, got {type(item).__name__}"
        ) from None
