"""TaskPool: bounded concurrency for asyncio, with lazy input, per-task timeouts and
structured failure handling.

Design, and why:

* **Workers await inline.** A pool slot is a long-lived worker task that pulls the next
  item and awaits ``fn(item)`` directly, instead of one task per item. That is what makes
  the pool cheap (no task, no semaphore and no gather bookkeeping per item) and what keeps
  the input lazy: an item is taken from the iterable only when a slot is free, so a
  generator of millions of items holds ``max_concurrent`` of them at a time.
* **One deadline mechanism.** Workers only stamp the start time of their current item; a
  single watchdog timer, armed for the earliest deadline, cancels the workers that overran
  and turns that cancellation into ``TimeoutError``. A per-item ``asyncio.timeout`` would
  cost a timer handle and a context manager per item.
* **One bound per pool.** ``map``, ``gather`` and ``submit`` running at the same time share
  the ``max_concurrent`` slots. Slots are handed out first come, first served, and a worker
  whose call holds more slots than a waiting call gives its slot away after its current
  item, so two concurrent calls settle at an even split without churn.
* **Structured.** The first failure cancels the rest of that call's work and is raised;
  when ``map``/``gather`` return or raise, and when ``async with pool:`` exits, none of
  their work is still running.
* **Adaptive limits.** ``max_concurrent`` may be a :class:`~perflab.aio.limits.Limit`
  (``AIMD()``, ``Gradient2()``, ``Vegas()``): every ended call is reported to it, and the
  pool's slots follow its ``limit``. Growing hands slots to waiting work at once;
  shrinking never cancels a running call: workers over the limit leave as their calls end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import operator
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from perflab._validate import check_int, check_number, check_optional_int, check_optional_number
from perflab.aio._clock import CLOCK_SLACK, MIN_REARM_DELAY
from perflab.aio.histogram import Histogram, HistogramSnapshot
from perflab.aio.limits import Limit, Rejected, Throttle, Throttled

__all__ = ["TaskPool", "TaskPoolConfig", "TaskPoolStats"]

T = TypeVar("T")
R = TypeVar("R")


_TIMEOUT = "timeout"
_CANCELLED = "cancelled"


@dataclasses.dataclass(frozen=True, slots=True)
class TaskPoolConfig:
    """Settings of a :class:`TaskPool`.

    ``max_concurrent``: most calls running at once (>= 1), or an adaptive
    :class:`~perflab.aio.limits.Limit` the pool follows. ``timeout_seconds``: longest a
    call may run before it is cancelled and fails with ``TimeoutError`` (> 0, or ``None``
    for no limit). ``max_queue``: most submitted calls waiting for a slot before
    ``submit`` waits (>= 1, or ``None`` for no limit).

    For an adaptive limit, a call *dropped* is one that raised
    :class:`~perflab.aio.limits.Rejected`, timed out, or raised one of ``drops`` (exception
    types of the user's client that mean "refused"). A ``Rejected(retry_after=s)`` holds
    back new calls for ``min(s, max_retry_after)`` seconds (urllib3's cap, 6 hours, by
    default). ``throttle`` (:class:`~perflab.aio.limits.Throttle`) rejects calls locally,
    before they are sent, while the server refuses many: they fail with ``Throttled``.
    """

    max_concurrent: int | Limit = 10
    timeout_seconds: float | None = 30.0
    max_queue: int | None = None
    drops: tuple[type[BaseException], ...] = ()
    max_retry_after: float = 21600.0
    throttle: Throttle | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_concurrent, Limit):
            check_int("max_concurrent", self.max_concurrent, minimum=1)
        timeout = check_optional_number("timeout_seconds", self.timeout_seconds, positive=True)
        object.__setattr__(self, "timeout_seconds", timeout)
        check_optional_int("max_queue", self.max_queue, minimum=1)
        drops = self.drops
        if not isinstance(drops, tuple) or not all(
            isinstance(kind, type) and issubclass(kind, BaseException) for kind in drops
        ):
            raise TypeError(f"drops must be a tuple of exception types, got {drops!r}")
        check_number("max_retry_after", self.max_retry_after, minimum=0.0)
        if self.throttle is not None and not isinstance(self.throttle, Throttle):
            raise TypeError(f"throttle must be a Throttle or None, got {type(self.throttle).__name__}")

    def as_dict(self) -> dict[str, Any]:
        return {
            field.name: value if isinstance(value, int | float | type(None)) else repr(value)
            for field in dataclasses.fields(self)
            for value in [getattr(self, field.name)]
        }


@dataclasses.dataclass(frozen=True, slots=True)
class TaskPoolStats:
    """Counters of a :class:`TaskPool` since it was created.

    Every call the pool accepted is in exactly one state, so
    ``submitted == completed + failed + timed_out + cancelled + in_flight + queued``.
    ``map`` accepts its items lazily (one when a slot is free), so it never queues;
    ``gather`` accepts all its awaitables at once and ``submit`` queues under backpressure.
    """

    submitted: int
    completed: int
    failed: int
    timed_out: int
    cancelled: int
    in_flight: int
    queued: int
    peak_in_flight: int
    max_queue_depth: int
    limit: int  # the calls allowed at once now (max_concurrent, or an adaptive limit's)

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class _Counters:
    """The pool's counters. Every call the pool accepted is in exactly one state:
    queued, in flight, completed, failed, timed out or cancelled."""

    __slots__ = (
        "submitted",
        "completed",
        "failed",
        "timed_out",
        "cancelled",
        "in_flight",
        "queued",
        "peak_in_flight",
        "max_queue_depth",
        "limit",
    )

    def __init__(self, limit: int) -> None:
        self.submitted = self.completed = self.failed = self.timed_out = self.cancelled = 0
        self.in_flight = self.queued = self.peak_in_flight = self.max_queue_depth = 0
        self.limit = limit

    def accept(self, calls: int, depth: int) -> None:
        """``calls`` were accepted into a queue now ``depth`` deep."""
        self.submitted += calls
        self.queued += calls
        if depth > self.max_queue_depth:
            self.max_queue_depth = depth

    def drop(self, calls: int) -> None:
        """``calls`` queued but never started were cancelled."""
        self.cancelled += calls
        self.queued -= calls

    def start(self, accepted: bool) -> None:
        """A call starts: it leaves the queue, or (map) is accepted as it starts."""
        if accepted:
            self.queued -= 1
        else:
            self.submitted += 1
        in_flight = self.in_flight = self.in_flight + 1
        if in_flight > self.peak_in_flight:
            self.peak_in_flight = in_flight

    def snapshot(self) -> TaskPoolStats:
        # One C call reads them all: a scrape from another thread sees one moment's counts.
        return TaskPoolStats(*_READ_COUNTERS(self))


_READ_COUNTERS = operator.attrgetter(*_Counters.__slots__)


class _Worker:
    """One pool slot in use: the task running it and the call it is awaiting."""

    __slots__ = ("task", "began", "started", "interrupt", "key", "pause")

    def __init__(self) -> None:
        self.pause: asyncio.Future[None] | None = None  # set while it waits out a Retry-After
        self.task: asyncio.Task[None] | None = None
        self.began = False  # its task has run (one cancelled before it first ran never does)
        self.started: float | None = None  # loop time the current call began, or None
        self.interrupt: str | None = None  # why the pool cancelled the current call
        self.key: Any = None  # the submit future of the current call

    def interrupt_call(self, reason: str) -> None:
        """Cancel the running call, remembering why (a timeout, or its future cancelled)."""
        self.interrupt = reason
        self._cancel()

    def stop_call(self) -> None:
        """Cancel the running call because its job stops (no reason kept)."""
        self._cancel()

    def forget_interrupt(self) -> None:
        """The call ended on its own although we had cancelled it: withdraw that cancel."""
        if self.interrupt is not None:
            self.interrupt = None
            if self.task is not None:
                self.task.uncancel()

    def _cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


class _Watchdog:
    """One timer for every call's deadline, armed for the earliest; it cancels the calls
    that ran past ``timeout`` (their workers turn that into TimeoutError)."""

    __slots__ = ("workers", "timeout", "_loop", "_handle")

    def __init__(self, workers: set[_Worker], timeout: float) -> None:
        self.workers = workers
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Use ``loop`` from now on (a timer of an earlier loop is forgotten)."""
        self._loop = loop
        self._handle = None

    def started(self, when: float) -> None:
        """A call started at ``when``: make sure a timer will look at it."""
        if self._handle is None:
            self._arm(when + self.timeout)

    def _arm(self, when: float) -> None:
        if self._loop is not None:
            self._handle = self._loop.call_at(when, self._check)

    def _check(self) -> None:
        self._handle = None
        if self._loop is None:
            return
        now = self._loop.time()
        earliest: float | None = None
        for worker in self.workers:
            started = worker.started
            if started is None or worker.interrupt is not None:
                continue
            if started + self.timeout <= now + CLOCK_SLACK:
                worker.interrupt_call(_TIMEOUT)
            elif earliest is None or started < earliest:
                earliest = started
        if earliest is not None:
            self._arm(max(earliest + self.timeout, now + MIN_REARM_DELAY))


class _Job:
    """One stream of work sharing the pool's slots: a map/gather call or a submit block.

    The pool drives every job the same way; what differs between them is in the hooks
    (``take``, ``settle*``, ``on_*``)."""

    __slots__ = ("workers", "limit", "stopping", "registered", "waiter", "failure", "accepted", "accepted_at")

    def __init__(self, limit: int, accepted: bool) -> None:
        self.accepted = accepted  # its calls are counted as submitted before they start
        self.accepted_at = 0.0  # loop time the call ``take`` handed out last was accepted
        self.workers: set[_Worker] = set()
        self.limit = limit  # most workers this job can use
        self.stopping = False
        self.registered = False  # waiting in the pool's slot queue
        self.waiter: asyncio.Future[None] | None = None  # woken when the last worker exits
        self.failure: BaseException | None = None

    def wants_worker(self) -> bool:
        raise NotImplementedError

    def take(self) -> tuple[Any, Callable[..., Awaitable[Any]], tuple[Any, ...]]:
        """Return ``(key, fn, args)`` of the next call; raise StopIteration when empty."""
        raise NotImplementedError

    def settle(self, key: Any, value: Any) -> None:
        raise NotImplementedError

    def settle_error(self, key: Any, exc: BaseException) -> bool:
        """Record a failed call; return True if the whole job must stop."""
        raise NotImplementedError

    def settle_cancelled(self, key: Any) -> None:
        """The pool cancelled a running call (stop, or its submit future was cancelled)."""

    def discard_unstarted(self) -> int:
        """Drop calls accepted but never started; return how many."""
        return 0

    def on_spawn(self) -> None:
        """A worker was created for this job (it starts on the next loop iteration)."""

    def on_worker_start(self) -> None:
        """A worker of this job began running."""

    def on_exhausted(self) -> None:
        """``take`` found nothing left."""

    def on_failure(self) -> None:
        """A call failed and the job was stopped: stop whatever else feeds it."""

    def may_grow(self) -> bool:
        """Whether a worker should ask for more slots as it takes work (a lazy input whose
        length is unknown ramps up instead of starting every worker at once)."""
        return False

    def finished(self) -> bool:
        return not self.workers and not self.wants_worker()


class _SequenceJob(_Job):
    """``map`` (fn over a lazy iterable) or ``gather`` (awaitables accepted up front)."""

    __slots__ = ("items", "fn", "results", "return_exceptions", "exhausted", "sized")

    def __init__(
        self,
        fn: Callable[[Any], Awaitable[Any]],
        items: Iterable[Any],
        limit: int,
        return_exceptions: bool,
        accepted: bool,
        sized: bool,
    ) -> None:
        super().__init__(limit, accepted)
        self.items = iter(items)
        self.fn = fn
        self.results: list[Any] = []
        self.return_exceptions = return_exceptions
        self.exhausted = False
        self.sized = sized  # length known: start every worker at once instead of ramping

    def wants_worker(self) -> bool:
        return not (self.exhausted or self.stopping) and len(self.workers) < self.limit

    def take(self) -> tuple[Any, Callable[..., Awaitable[Any]], tuple[Any, ...]]:
        item = next(self.items)
        key = len(self.results)
        self.results.append(None)
        return key, self.fn, (item,)

    def settle(self, key: Any, value: Any) -> None:
        self.results[key] = value

    def settle_error(self, key: Any, exc: BaseException) -> bool:
        if self.return_exceptions and isinstance(exc, Exception):
            self.results[key] = exc
            return False
        if self.failure is None:
            self.failure = exc
        return True

    def discard_unstarted(self) -> int:
        if not self.accepted:
            return 0  # map: items not taken yet were never accepted
        dropped = 0
        for awaitable in self.items:
            _discard_awaitable(awaitable)
            dropped += 1
        return dropped

    def on_exhausted(self) -> None:
        self.exhausted = True

    def may_grow(self) -> bool:
        return len(self.workers) < self.limit


class _SubmitJob(_Job):
    """The calls submitted inside one ``async with pool:`` block."""

    __slots__ = ("pending", "starting", "parent", "cancelled_parent", "exiting", "space_waiters")

    def __init__(self, limit: int, parent: asyncio.Task[Any] | None) -> None:
        super().__init__(limit, accepted=True)
        self.pending: deque[
            tuple[asyncio.Future[Any], Callable[..., Awaitable[Any]], tuple[Any, ...], float]
        ] = deque()
        self.starting = 0  # workers created but not yet running: each will take one call
        self.parent = parent
        self.cancelled_parent = False
        self.exiting = False
        self.space_waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return len(self.pending) - self.starting

    def wants_worker(self) -> bool:
        return not self.stopping and self.queued > 0 and len(self.workers) < self.limit

    def take(self) -> tuple[Any, Callable[..., Awaitable[Any]], tuple[Any, ...]]:
        if not self.pending:
            raise StopIteration
        self.wake_space_waiter()
        fut, fn, args, self.accepted_at = self.pending.popleft()
        return fut, fn, args

    def settle(self, key: Any, value: Any) -> None:
        if not key.done():
            key.set_result(value)

    def settle_error(self, key: Any, exc: BaseException) -> bool:
        if not key.done():
            key.set_exception(exc)
            key.exception()  # the pool reports it (raised from the block, or counted in stats)
        if self.failure is None:
            self.failure = exc
        return True

    def settle_cancelled(self, key: Any) -> None:
        key.cancel()

    def discard_unstarted(self) -> int:
        dropped = 0
        while self.pending:
            fut = self.pending.popleft()[0]
            if fut.cancel():
                dropped += 1
        self.wake_space_waiter(all_of_them=True)
        return dropped

    def unqueue(self, fut: asyncio.Future[Any]) -> bool:
        """Remove a queued call whose future was cancelled; False if it is not queued."""
        for entry in self.pending:
            if entry[0] is fut:
                self.pending.remove(entry)
                self.wake_space_waiter()
                return True
        return False

    def on_spawn(self) -> None:
        self.starting += 1

    def on_worker_start(self) -> None:
        self.starting -= 1

    def on_failure(self) -> None:
        """Stop the block's body too (unless it is already leaving the block)."""
        if self.exiting or self.cancelled_parent:
            return
        parent = self.parent
        if parent is not None and not parent.done():
            self.cancelled_parent = True
            parent.cancel()

    def wake_space_waiter(self, all_of_them: bool = False) -> None:
        """Let one ``submit`` waiting for queue space go on (or all of them)."""
        waiters = self.space_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not all_of_them:
                    return


def _identity(awaitable: Awaitable[Any]) -> Awaitable[Any]:
    return awaitable


def _discard_awaitable(awaitable: Any) -> None:
    """Make an awaitable that will never be awaited go away quietly."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()  # no "coroutine was never awaited" warning
    elif isinstance(awaitable, asyncio.Future):
        awaitable.cancel()


class TaskPool:
    """Run async calls with at most ``max_concurrent`` at once.

    Usage::

        pool = TaskPool(max_concurrent=20, timeout_seconds=10)
        quotes = await pool.map(fetch_quote, symbols)   # input order, lazily consumed
        print(pool.stats)
    """

    __slots__ = (
        "config",
        "_loop",
        "_free",
        "_slot_waiters",
        "_all_workers",
        "_watchdog",
        "_context",
        "_counts",
        "_queue_waits",
        "_limit",
        "_resume_at",
    )

    def __init__(self, config: TaskPoolConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = TaskPoolConfig(**overrides)
        elif not isinstance(config, TaskPoolConfig):
            raise TypeError(f"config must be a TaskPoolConfig or None, got {type(config).__name__}")
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        limit = config.max_concurrent
        self._limit: Limit | None = None if isinstance(limit, int) else limit
        slots = limit if isinstance(limit, int) else max(1, limit.limit)
        self._free = slots  # < 0 after an adaptive limit shrank below the workers running
        self._resume_at = 0.0  # loop time before which no call starts (a Retry-After)
        self._slot_waiters: deque[_Job] = deque()
        self._all_workers: set[_Worker] = set()
        timeout = config.timeout_seconds
        self._watchdog = _Watchdog(self._all_workers, timeout) if timeout is not None else None
        self._context: _SubmitJob | None = None
        self._counts = _Counters(slots)
        self._queue_waits = Histogram()

    def __repr__(self) -> str:
        counts = self._counts
        return (
            f"<TaskPool max_concurrent={self.config.max_concurrent!r} limit={counts.limit} "
            f"timeout_seconds={self.config.timeout_seconds} in_flight={counts.in_flight} "
            f"queued={counts.queued} completed={counts.completed} failed={counts.failed}>"
        )

    @property
    def stats(self) -> TaskPoolStats:
        """A snapshot of the pool's counters."""
        return self._counts.snapshot()

    def queue_wait_histogram(self) -> HistogramSnapshot:
        """How long queued calls (``gather``, ``submit``) waited for a slot, in seconds, by
        bucket. ``map`` takes an item only when a slot is free, so it never waits here."""
        return self._queue_waits.snapshot()

    # ----------------------------------------------------------------- public API

    async def map(
        self,
        fn: Callable[[T], Awaitable[R]],
        iterable: Iterable[T],
        *,
        return_exceptions: bool = False,
    ) -> list[R]:
        """Return ``[await fn(item) for item in iterable]``, running up to
        ``max_concurrent`` calls at once; the iterable is consumed lazily.

        Without ``return_exceptions`` the first failure (or ``TimeoutError``) cancels the
        calls still running and is raised; with it, exceptions take their item's place.
        """
        if not callable(fn):
            raise TypeError(f"fn must be an async callable, got {type(fn).__name__}")
        self._refuse_nested("map")
        if hasattr(iterable, "__aiter__") and not hasattr(iterable, "__iter__"):
            raise TypeError("iterable must be a (sync) iterable; feed an async iterable through submit()")
        try:
            items = iter(iterable)
        except TypeError:
            raise TypeError(f"iterable must be iterable, got {type(iterable).__name__}") from None
        limit = self._job_limit
        size = _length_hint(iterable)
        if size is not None:
            limit = min(limit, size)
        job = _SequenceJob(fn, items, limit, return_exceptions, accepted=False, sized=size is not None)
        return await self._run_sequence(job)

    async def gather(self, *awaitables: Awaitable[Any], return_exceptions: bool = False) -> list[Any]:
        """Like :func:`asyncio.gather`, with at most ``max_concurrent`` awaited at once.

        Coroutines never started because of a failure are closed; futures are cancelled.
        """
        for position, awaitable in enumerate(awaitables):
            if not inspect.isawaitable(awaitable):
                for other in awaitables:
                    if inspect.isawaitable(other):
                        _discard_awaitable(other)
                raise TypeError(f"awaitables[{position}] must be awaitable, got {type(awaitable).__name__}")
        try:
            self._refuse_nested("gather")
        except RuntimeError:
            for awaitable in awaitables:
                _discard_awaitable(awaitable)
            raise
        limit = min(self._job_limit, len(awaitables))
        job = _SequenceJob(_identity, awaitables, limit, return_exceptions, accepted=True, sized=True)
        job.accepted_at = asyncio.get_running_loop().time()
        self._counts.accept(len(awaitables), self._counts.queued + len(awaitables))
        return await self._run_sequence(job)

    async def submit(self, fn: Callable[..., Awaitable[R]], /, *args: Any) -> asyncio.Future[R]:
        """Queue ``fn(*args)`` and return a future for its result.

        Needs an open ``async with pool:`` block. Waits while ``max_queue`` calls are
        queued (backpressure). Cancelling the returned future cancels the call.
        """
        job = self._context
        if job is None:
            raise RuntimeError("submit() needs an open 'async with pool:' block")
        if not callable(fn):
            raise TypeError(f"fn must be an async callable, got {type(fn).__name__}")
        max_queue = self.config.max_queue
        while True:
            if job.stopping or job is not self._context:
                raise RuntimeError("TaskPool is stopping after a failure: submit() refused") from job.failure
            if max_queue is None or job.queued < max_queue:
                break
            waiter = asyncio.get_running_loop().create_future()
            job.space_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    job.wake_space_waiter()  # pass our turn on
                raise
        loop = self._bind_loop()
        fut: asyncio.Future[R] = loop.create_future()
        job.pending.append((fut, fn, args, loop.time()))
        fut.add_done_callback(self._on_submitted_future_cancelled)
        self._counts.accept(1, job.queued)
        self._request_slots(job)
        return fut

    async def __aenter__(self) -> TaskPool:
        if self._context is not None:
            raise RuntimeError("TaskPool is already open in an 'async with' block; use a second pool to nest")
        self._bind_loop()
        self._context = _SubmitJob(self._job_limit, asyncio.current_task())
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        job = self._context
        assert job is not None  # __aenter__ ran
        job.exiting = True
        got_cancelled = isinstance(exc, asyncio.CancelledError)
        if exc is not None:
            self._stop(job)  # the body failed or was cancelled: nothing more to wait for
        while not job.finished():
            try:
                await self._wait_finished(job)
            except asyncio.CancelledError:
                got_cancelled = True
                self._stop(job)
        self._context = None
        if job.cancelled_parent and job.parent is not None:
            # We cancelled the body to stop it after a failure; any other cancellation
            # request that arrived meanwhile must still propagate.
            outer_cancel = job.parent.uncancel() > 0
        else:
            outer_cancel = got_cancelled
        if outer_cancel:
            if got_cancelled and isinstance(exc, asyncio.CancelledError):
                return False
            raise asyncio.CancelledError
        if exc is not None and not (got_cancelled and job.cancelled_parent):
            return False  # the body's own exception propagates
        if job.failure is not None:
            raise job.failure
        return False

    # ----------------------------------------------------------------- internals

    @property
    def _job_limit(self) -> int:
        """Most workers one job may hold: the pool's size, or any number under a limit that
        moves (the pool's free slots are what bound it then)."""
        limit = self.config.max_concurrent
        return limit if isinstance(limit, int) else 1 << 30

    def _refuse_nested(self, method: str) -> None:
        """A call running in this pool that waits on this pool's map/gather holds a slot
        those calls may need: with every slot so held, nothing ever runs again."""
        current = asyncio.current_task()
        if current is not None and any(worker.task is current for worker in self._all_workers):
            raise RuntimeError(
                f"TaskPool.{method}() called from a call this pool is running: that call holds one "
                f"of the pool's {self._counts.limit} slots while it waits for slots, which "
                "deadlocks once every slot is held so; run the inner work on a second TaskPool"
            )

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._all_workers or self._context is not None or self._slot_waiters:
                raise RuntimeError("TaskPool is busy in another event loop")
            self._loop = loop
            if self._watchdog is not None:
                self._watchdog.bind(loop)
        return loop

    async def _run_sequence(self, job: _SequenceJob) -> list[Any]:
        self._bind_loop()
        self._request_slots(job, most=None if job.sized else 1)
        try:
            while not job.finished():
                await self._wait_finished(job)
        except asyncio.CancelledError:
            self._stop(job)
            while not job.finished():
                try:
                    await self._wait_finished(job)
                except asyncio.CancelledError:
                    pass  # keep waiting: nothing of ours may outlive this call
            raise
        if job.failure is not None:
            raise job.failure
        return job.results

    async def _wait_finished(self, job: _Job) -> None:
        waiter = job.waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            job.waiter = None

    def _request_slots(self, job: _Job, most: int | None = None) -> None:
        """Give ``job`` free slots (at most ``most`` new workers); queue it for more."""
        spawned = 0
        while self._free > 0 and job.wants_worker() and (most is None or spawned < most):
            self._free -= 1
            self._spawn(job)
            spawned += 1
        if self._free <= 0 and not job.registered and job.wants_worker():
            job.registered = True
            self._slot_waiters.append(job)

    def _poorest_waiter(self, exclude: _Job | None = None) -> _Job | None:
        """The waiting job holding the fewest workers (first come on ties); drops stale ones."""
        poorest = None
        for job in list(self._slot_waiters):
            if not job.wants_worker():
                self._slot_waiters.remove(job)
                job.registered = False
            elif job is not exclude and (poorest is None or len(job.workers) < len(poorest.workers)):
                poorest = job
        return poorest

    def _release_slot(self) -> None:
        if self._free < 0:  # the limit shrank: this slot is gone
            self._free += 1
            return
        job = self._poorest_waiter() if self._slot_waiters else None
        if job is None:
            self._free += 1
            return
        self._spawn(job)
        if not job.wants_worker():
            self._slot_waiters.remove(job)
            job.registered = False

    def _spawn(self, job: _Job) -> None:
        worker = _Worker()
        job.workers.add(worker)
        self._all_workers.add(worker)
        job.on_spawn()
        task = worker.task = asyncio.get_running_loop().create_task(self._work(job, worker))
        task.add_done_callback(functools.partial(self._on_worker_done, job, worker))

    def _on_worker_done(self, job: _Job, worker: _Worker, task: asyncio.Task[None]) -> None:
        """A worker task cancelled before it first ran never runs its body (nor its
        ``finally``): retire it here, or the call waiting for its job waits forever."""
        if worker not in job.workers:
            return  # retired by its own body, as usual
        if not worker.began:
            job.on_worker_start()
        if not job.stopping:
            job.failure = job.failure or asyncio.CancelledError("a pool worker was cancelled")
            self._fail(job)
        self._retire(job, worker)

    def _retire(self, job: _Job, worker: _Worker) -> None:
        """A worker leaves: free its slot (to a waiting job, or more work of its own) and
        wake the caller if its job is done."""
        worker.key = None
        job.workers.discard(worker)
        self._all_workers.discard(worker)
        self._release_slot()
        self._request_slots(job)
        if job.waiter is not None and not job.waiter.done() and job.finished():
            job.waiter.set_result(None)

    def _stop(self, job: _Job) -> None:
        """Cancel everything ``job`` still has running or queued (idempotent)."""
        if job.stopping:
            return
        job.stopping = True
        self._counts.drop(job.discard_unstarted())
        for worker in job.workers:
            if worker.started is not None and worker.interrupt is None:
                worker.stop_call()
            elif worker.pause is not None and not worker.pause.done():
                worker.pause.set_result(None)  # it leaves instead of waiting out a Retry-After

    def _fail(self, job: _Job) -> None:
        """A call of ``job`` failed: stop the job, and what feeds it (a submit block's body)."""
        self._stop(job)
        job.on_failure()

    def _on_submitted_future_cancelled(self, fut: asyncio.Future[Any]) -> None:
        """The caller cancelled a submit future: cancel its call, or unqueue it."""
        if not fut.cancelled():
            return
        for worker in self._all_workers:
            if worker.key is fut and worker.started is not None and worker.interrupt is None:
                worker.interrupt_call(_CANCELLED)
                return
        job = self._context
        if job is not None and job.unqueue(fut):
            self._counts.drop(1)

    async def _work(self, job: _Job, worker: _Worker) -> None:
        """A worker: take a call, await it inline, record the outcome, repeat; give the
        slot away to a job holding fewer when one waits."""
        worker.began = True
        job.on_worker_start()
        grow = job.may_grow()
        # The hot path (start, await, complete) stays inline; the rare outcomes are methods.
        counts = self._counts
        loop_time = asyncio.get_running_loop().time
        watchdog = self._watchdog
        accepted = job.accepted
        queue_waits = self._queue_waits
        limit = self._limit
        throttle = self.config.throttle
        try:
            while not job.stopping:
                if self._free < 0:
                    break  # the limit shrank: this worker leaves between calls, never during one
                if self._resume_at > loop_time() + CLOCK_SLACK:
                    await self._pause(job, worker)
                    continue
                try:
                    key, fn, args = job.take()
                except StopIteration:
                    job.on_exhausted()
                    break
                except BaseException as exc:  # the input iterable raised
                    if job.failure is None:
                        job.failure = exc
                    self._fail(job)
                    break
                if grow and self._free > 0:
                    self._request_slots(job, most=len(job.workers))
                    grow = job.may_grow()
                counts.start(accepted)
                in_flight = counts.in_flight
                worker.key = key
                worker.started = started = loop_time()
                if accepted:
                    queue_waits.observe(started - job.accepted_at)
                if watchdog is not None:
                    watchdog.started(started)
                if throttle is not None and not throttle.allow(started):
                    fn, args = _throttled, (throttle.probability(started),)
                awaitable = None
                try:
                    awaitable = fn(*args)
                    value = await awaitable
                except asyncio.CancelledError:
                    if self._cancelled_call(job, worker, key, started, in_flight):
                        raise
                except Exception as exc:
                    self._failed_call(job, worker, key, exc, awaitable)
                    if limit is not None or throttle is not None:
                        self._outcome(started, in_flight, exc)
                except BaseException as exc:
                    # KeyboardInterrupt, SystemExit: asyncio hands them to the loop's caller.
                    # Count the call and stop the job, so that the shutdown that follows finds
                    # nothing of ours running or about to start.
                    self._failed_call(job, worker, key, exc, awaitable, stop=True)
                    raise
                else:
                    worker.started = None
                    if worker.interrupt is not None:
                        worker.forget_interrupt()
                    counts.in_flight -= 1
                    counts.completed += 1
                    job.settle(key, value)
                    if limit is not None or throttle is not None:
                        self._outcome(started, in_flight, None)
                if self._slot_waiters:
                    poorer = self._poorest_waiter(exclude=job)
                    if poorer is not None and len(job.workers) > len(poorer.workers) + 1:
                        break  # give this slot to a call that holds fewer
        finally:
            self._retire(job, worker)

    def _failed_call(
        self, job: _Job, worker: _Worker, key: Any, exc: BaseException, awaitable: Any, stop: bool = False
    ) -> None:
        worker.started = None
        worker.forget_interrupt()
        counts = self._counts
        counts.in_flight -= 1
        counts.failed += 1
        error: BaseException = exc
        if awaitable is not None and not inspect.isawaitable(awaitable):
            error = TypeError(f"fn must return an awaitable, got {type(awaitable).__name__}")
        if stop:
            job.failure = job.failure or error
            self._fail(job)
        elif job.settle_error(key, error):
            self._fail(job)

    def _outcome(self, started: float, in_flight: int, exc: BaseException | None) -> None:
        """Tell the adaptive limit and the throttle how a call ended (a call the throttle
        never sent tells neither), and hold back new calls for a Retry-After."""
        if isinstance(exc, Throttled):
            return
        now = asyncio.get_running_loop().time()
        dropped = isinstance(exc, Rejected | TimeoutError) or isinstance(exc, self.config.drops)
        if isinstance(exc, Rejected) and exc.retry_after:
            resume = now + min(exc.retry_after, self.config.max_retry_after)
            if resume > self._resume_at:
                self._resume_at = resume
        throttle = self.config.throttle
        if throttle is not None:
            throttle.record(now, accepted=not dropped)
        limit = self._limit
        if limit is not None and (exc is None or dropped):
            limit.on_sample(started, now - started, in_flight, dropped)
            self._follow_limit()

    def _follow_limit(self) -> None:
        """Resize the pool to the adaptive limit: new slots go to waiting work at once;
        removed ones leave as their calls end (``_free`` goes below zero meanwhile)."""
        assert self._limit is not None
        new = max(1, self._limit.limit)
        counts = self._counts
        if new == counts.limit:
            return
        self._free += new - counts.limit
        counts.limit = new
        while self._free > 0 and self._slot_waiters:
            job = self._poorest_waiter()
            if job is None:
                break
            self._free -= 1
            self._spawn(job)
            if not job.wants_worker():
                self._slot_waiters.remove(job)
                job.registered = False

    async def _pause(self, job: _Job, worker: _Worker) -> None:
        """Wait until the pool may start calls again (a Retry-After); stopping wakes it."""
        loop = asyncio.get_running_loop()
        waiter = worker.pause = loop.create_future()
        handle = loop.call_at(self._resume_at, _wake, waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if not job.stopping:
                job.failure = job.failure or asyncio.CancelledError("a pool worker was cancelled")
                self._fail(job)
            raise
        finally:
            handle.cancel()
            worker.pause = None

    def _cancelled_call(
        self, job: _Job, worker: _Worker, key: Any, started: float = 0.0, in_flight: int = 0
    ) -> bool:
        """A call was cancelled: by the watchdog (a timeout), by its caller (a cancelled
        submit future), or from outside. Returns True for the last: the cancellation
        must propagate, and the job stops."""
        counts = self._counts
        worker.started = None
        counts.in_flight -= 1
        interrupt = worker.interrupt
        worker.interrupt = None
        task = worker.task
        if interrupt is None or (task is not None and task.uncancel() > 0):
            # Not a timeout of ours: the job is stopping, or the pool's caller (or the
            # loop) cancelled this worker.
            counts.cancelled += 1
            job.settle_cancelled(key)
            if not job.stopping:
                job.failure = job.failure or asyncio.CancelledError("a pool worker was cancelled")
                self._fail(job)
            return True
        if interrupt is _CANCELLED:
            counts.cancelled += 1  # the caller cancelled its submit future
            return False
        counts.timed_out += 1
        timeout = self.config.timeout_seconds or 0.0
        error = TimeoutError(f"task exceeded timeout_seconds={timeout:g}")
        if job.settle_error(key, error):
            self._fail(job)
        if self._limit is not None or self.config.throttle is not None:
            self._outcome(started, in_flight, error)
        return False


async def _throttled(probability: float) -> Any:
    """The call the throttle rejected: it fails without being sent (after yielding to the
    loop once, so that a pool shedding a long input does not starve the loop)."""
    await asyncio.sleep(0)
    raise Throttled(probability)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _length_hint(iterable: Iterable[Any]) -> int | None:
    """The number of items iterating yields, where the type guarantees it: a list, tuple or
    range. Anything else is taken lazily (a DataFrame's ``len`` counts its rows while it
    iterates its columns, and a user's ``__len__`` may say anything)."""
    if type(iterable) in _EXACT_LENGTH:
        return len(iterable)  # type: ignore[arg-type]
    return None


_EXACT_LENGTH = frozenset({list, tuple, range})
