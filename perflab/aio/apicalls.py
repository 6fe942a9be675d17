"""ApiCalls: what a client saw of each call it made to an API.

Per call: its answer (the HTTP status, or ``error``, ``timeout``, ``cancelled`` when none
came), its latency, how many of the client's calls to that API were at the server when it
was sent (counting itself), and the ``Retry-After`` the server asked for. That is what
``perflab observe`` needs to tell a server's rate limit (429s against the send rate) from
its concurrency cap (503s against the calls at the server), and the counts are cheap: a
few additions per call, the histograms read only at scrape time.

"At the server" runs from send to answer, not from a pool slot: a call waiting on the
client's own rate limiter is not at the server. So wrap the request itself::

    quotes = ApiCalls("quotes")                 # or: exporter.add_api("quotes")
    async with pool_slot, limiter:
        async with quotes.call() as call:
            response = await session.get(url)
            call.status = response.status         # and, for a 429/503: call.retry_after = ...

or hand the recorder to the HTTP client: :func:`aiohttp_trace` (aiohttp's ``TraceConfig``)
or :class:`HttpxTransport` (an httpx transport: unlike httpx's event hooks it also sees the
requests that fail without an answer, so none stays counted in flight).

A server's burst (how many calls its rate limit lets through at once beyond its rate)
cannot be read from counters scraped seconds apart, so each answered call also counts the
answered calls sent within each of :data:`BURST_WINDOWS` before it, and the most seen is
held for :data:`PEAK_HOLD_S`: a token bucket of rate R and capacity C answers at most
``R * w + C`` calls sent within any window ``w``, so ``peak - R * w`` bounds C from below.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import dataclasses
import email.utils
import time
from collections.abc import Mapping
from typing import Any

from perflab._validate import check_number, check_str
from perflab.aio.histogram import Histogram, HistogramSnapshot

__all__ = [
    "BURST_WINDOWS",
    "CALL_BUCKETS",
    "PEAK_HOLD_S",
    "IN_FLIGHT_BUCKETS",
    "RETRY_AFTER_BUCKETS",
    "ApiCall",
    "ApiCalls",
    "ApiStats",
    "HttpxTransport",
    "aiohttp_trace",
    "retry_after_seconds",
]

#: Upper bounds (seconds) of the answered-call latency histogram: 1 ms to 2.5 s.
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
#: Upper bounds of the calls-at-the-server histogram: every level up to 64 (a cap is read
#: from the lowest level a refusal came at), then coarser.
IN_FLIGHT_BUCKETS = (*range(1, 65), 80, 96, 128, 192, 256, 384, 512, 1024)
#: Upper bounds (seconds) of the Retry-After histogram.
RETRY_AFTER_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)

#: Windows (seconds) over which answered calls sent close together are counted.
BURST_WINDOWS = (0.05, 0.1, 0.2, 0.5, 1.0)
#: How long (seconds) the most answered calls in a window stays readable: longer than a
#: scrape interval (Prometheus' default is 15 s, many use 60 s).
PEAK_HOLD_S = 60.0
#: A call answered this long after the largest window is counted against sends already
#: forgotten: its count can only come out low, and a lower bound stays one.
_SEND_MEMORY_S = 2.0

_NO_ANSWER = ("error", "timeout", "cancelled")


def _status_text(status: int | str) -> str:
    if isinstance(status, bool) or not isinstance(status, int | str):
        raise TypeError(f"status must be an HTTP status (int) or a short text, got {status!r}")
    text = str(status)
    if not text or len(text) > 32:
        raise ValueError(f"status must be 1-32 characters, got {text!r}")
    return text


def _answered(status: str) -> bool:
    """A 2xx or 3xx status, or ``ok`` (a call left without one): the server did the work
    (its latency is the service time)."""
    return status == "ok" or (status.isdigit() and 200 <= int(status) < 400)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds (delta-seconds or an HTTP date); None when
    absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclasses.dataclass(frozen=True, slots=True)
class ApiStats:
    """An :class:`ApiCalls` so far: calls by answer, how many are at the server now and
    at most, the Retry-After answers."""

    calls: int
    by_status: Mapping[str, int]
    in_flight: int
    peak_in_flight: int
    retry_after: int

    @property
    def answered(self) -> int:
        return sum(n for status, n in self.by_status.items() if _answered(status))

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "by_status": dict(self.by_status), "answered": self.answered}


class _AnsweredPeaks:
    """Per window of :data:`BURST_WINDOWS`: the most answered calls sent within it (the
    call itself among them), over the calls answered in the last :data:`PEAK_HOLD_S`.

    The sends are kept sorted for the last few seconds; each window's peaks sit in a deque
    of decreasing counts (a monotone queue), so the oldest unexpired entry is the peak and
    a scrape thread reads it from a copy without taking a lock."""

    __slots__ = ("_sends", "_peaks")

    def __init__(self) -> None:
        self._sends: list[float] = []
        self._peaks: dict[float, collections.deque[tuple[float, int]]] = {
            window: collections.deque() for window in BURST_WINDOWS
        }

    def add(self, sent: float, now: float) -> None:
        sends = self._sends
        bisect.insort(sends, sent)
        forget = now - BURST_WINDOWS[-1] - _SEND_MEMORY_S
        if sends[0] < forget - 1.0:  # pruned about once a second, not per call
            del sends[: bisect.bisect_left(sends, forget)]
        upto = bisect.bisect_right(sends, sent)
        expired = now - PEAK_HOLD_S
        for window, peaks in self._peaks.items():
            count = upto - bisect.bisect_right(sends, sent - window)
            while peaks and (peaks[-1][1] <= count):
                peaks.pop()
            while peaks and peaks[0][0] < expired:
                peaks.popleft()
            peaks.append((now, count))

    def read(self, now: float) -> dict[float, int]:
        expired = now - PEAK_HOLD_S
        return {
            window: next((count for at, count in tuple(peaks) if at >= expired), 0)
            for window, peaks in self._peaks.items()
        }


class ApiCall:
    """One call in progress (:meth:`ApiCalls.call`): set ``status`` (and ``retry_after``,
    seconds or the header's text) before the block ends. A block left by an exception
    records ``timeout`` (a TimeoutError raised inside it, as a client's own timeout
    does), ``cancelled`` (the task was cancelled from outside, ``asyncio.timeout`` around
    the block included) or ``error``; a block left normally without a status counts as
    answered (``ok``)."""

    __slots__ = ("_calls", "_sent", "_level", "status", "retry_after")

    def __init__(self, calls: ApiCalls) -> None:
        self._calls = calls
        self._sent = 0.0
        self._level = 0
        self.status: int | str | None = None
        self.retry_after: float | str | None = None

    def _enter(self) -> ApiCall:
        self._sent, self._level = self._calls._send()
        return self

    def _exit(self, exc: BaseException | None) -> None:
        if exc is None:
            status: int | str = "ok" if self.status is None else self.status
        elif isinstance(exc, TimeoutError):
            status = "timeout"
        elif isinstance(exc, asyncio.CancelledError):
            status = "cancelled"
        else:
            status = "error" if self.status is None else self.status
        retry = self.retry_after
        if isinstance(retry, str):
            retry = retry_after_seconds(retry)
        self._calls._finish(self._sent, self._level, status, retry)

    async def __aenter__(self) -> ApiCall:
        return self._enter()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._exit(exc)

    def __enter__(self) -> ApiCall:
        return self._enter()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._exit(exc)


class ApiCalls:
    """Counts the calls a client makes to one API (see the module's docstring)."""

    __slots__ = (
        "name",
        "_by_status",
        "_in_flight",
        "_peak",
        "_latency",
        "_levels",
        "_retry_after",
        "_answered_peaks",
    )

    def __init__(self, name: str = "api") -> None:
        check_str("name", name)
        if not name:
            raise ValueError("name must not be empty")
        self.name = name
        self._by_status: dict[str, int] = {}
        self._in_flight = 0
        self._peak = 0
        self._latency = Histogram(CALL_BUCKETS)
        self._levels: dict[str, Histogram] = {}
        self._retry_after = Histogram(RETRY_AFTER_BUCKETS)
        self._answered_peaks = _AnsweredPeaks()

    def __repr__(self) -> str:
        return f"<ApiCalls {self.name!r} in_flight={self._in_flight} by_status={self._by_status}>"

    def call(self) -> ApiCall:
        """``async with calls.call() as call:`` around the request (``with`` works too)."""
        return ApiCall(self)

    def observe(self, status: int | str, seconds: float, *, retry_after: float | str | None = None) -> None:
        """Record a call timed elsewhere (it was never counted at the server)."""
        check_number("seconds", seconds, minimum=0)
        text = _status_text(status)
        if isinstance(retry_after, str):
            retry_after = retry_after_seconds(retry_after)
        self._count(text, seconds, None, retry_after)

    @property
    def stats(self) -> ApiStats:
        by_status = dict(self._by_status)
        return ApiStats(
            calls=sum(by_status.values()),
            by_status=by_status,
            in_flight=self._in_flight,
            peak_in_flight=self._peak,
            retry_after=self._retry_after.snapshot().count,
        )

    def latency_histogram(self) -> HistogramSnapshot:
        """Seconds from send to answer of the answered (2xx, 3xx, ``ok``) calls."""
        return self._latency.snapshot()

    def in_flight_histograms(self) -> dict[str, HistogramSnapshot]:
        """Per answer, how many calls were at the server when each was sent (itself
        included): a cap shows as refusals from one level up."""
        return {status: histogram.snapshot() for status, histogram in tuple(self._levels.items())}

    def retry_after_histogram(self) -> HistogramSnapshot:
        return self._retry_after.snapshot()

    def answered_in_window(self) -> dict[float, int]:
        """Per window of :data:`BURST_WINDOWS` (seconds): the most answered calls sent
        within it, among the calls answered in the last :data:`PEAK_HOLD_S` (0: none)."""
        return self._answered_peaks.read(time.perf_counter())

    # ----------------------------------------------------------------- internals

    def _send(self) -> tuple[float, int]:
        self._in_flight += 1
        if self._in_flight > self._peak:
            self._peak = self._in_flight
        return time.perf_counter(), self._in_flight

    def _finish(self, sent: float, level: int, status: int | str, retry_after: float | None) -> None:
        self._in_flight -= 1
        now = time.perf_counter()
        text = _status_text(status)
        self._count(text, now - sent, level, retry_after)
        if _answered(text):
            self._answered_peaks.add(sent, now)

    def _count(self, status: str, seconds: float, level: int | None, retry_after: float | None) -> None:
        self._by_status[status] = self._by_status.get(status, 0) + 1
        if _answered(status):
            self._latency.observe(seconds)
        if level is not None and status != "cancelled":
            levels = self._levels.get(status)
            if levels is None:
                levels = self._levels[status] = Histogram(IN_FLIGHT_BUCKETS)
            levels.observe(level)
        if retry_after is not None:
            self._retry_after.observe(retry_after)


def aiohttp_trace(calls: ApiCalls) -> Any:
    """An ``aiohttp.TraceConfig`` that records every request of the session into ``calls``:
    ``aiohttp.ClientSession(trace_configs=[aiohttp_trace(calls)])``. A request that fails
    without an answer counts as ``error`` (``timeout`` for a timeout)."""
    import aiohttp

    trace = aiohttp.TraceConfig()

    async def on_start(session: Any, context: Any, params: Any) -> None:
        context.perflab_call = ApiCall(calls)._enter()

    async def on_end(session: Any, context: Any, params: Any) -> None:
        call = context.perflab_call
        call.status = params.response.status
        if params.response.status in (429, 503):
            call.retry_after = params.response.headers.get("Retry-After")
        call._exit(None)

    async def on_exception(session: Any, context: Any, params: Any) -> None:
        context.perflab_call._exit(params.exception)

    trace.on_request_start.append(on_start)
    trace.on_request_end.append(on_end)
    trace.on_request_exception.append(on_exception)
    return trace


class HttpxTransport:
    """An httpx async transport that records every request into ``calls`` and passes it
    on to ``transport`` (default ``httpx.AsyncHTTPTransport()``):
    ``httpx.AsyncClient(transport=HttpxTransport(calls))``. The latency runs to the
    response's headers, as httpx's own ``elapsed`` does not (it waits for the body)."""

    def __init__(self, calls: ApiCalls, transport: Any = None) -> None:
        import httpx

        if not isinstance(calls, ApiCalls):
            raise TypeError(f"calls must be an ApiCalls, got {type(calls).__name__}")
        self.calls = calls
        self.transport = httpx.AsyncHTTPTransport() if transport is None else transport

    async def handle_async_request(self, request: Any) -> Any:
        import httpx

        call = ApiCall(self.calls)._enter()
        try:
            response = await self.transport.handle_async_request(request)
        except BaseException as error:
            call._exit(TimeoutError() if isinstance(error, httpx.TimeoutException) else error)
            raise
        call.status = response.status_code
        if response.status_code in (429, 503):
            call.retry_after = response.headers.get("Retry-After")
        call._exit(None)
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> HttpxTransport:
        await self.transport.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.transport.__aexit__(*exc_info)
