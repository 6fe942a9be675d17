"""Live metrics: perflab's primitives exported to Prometheus at scrape time.

Register a TaskPool, TokenBucketLimiter, BatchProcessor, writer or the event loop under a
name; a scrape reads their stats objects then, so the hot path (``acquire``, ``add``, a
pool call) does no extra work for the exporter. Names are a label (``name="collector"``),
never one series per symbol or request. Needs the optional extra ``metrics``
(``pip install 'perflab[metrics]'``, prometheus-client).

Usage::

    exporter = Exporter()
    exporter.add_pool("collector", pool)
    exporter.add_limiter("api", limiter)
    quotes = exporter.add_api("quotes")       # async with quotes.call() as call: ...
    exporter.watch_loop()                     # inside the running loop
    port = exporter.serve(9464)               # a thread; never blocks the loop

Metrics (each with a ``name`` label): ``perflab_pool_in_flight``, ``perflab_pool_queued``,
``perflab_pool_max_concurrent``, ``perflab_pool_peak_in_flight``,
``perflab_pool_submitted_total``, ``perflab_pool_calls_total{outcome}``,
``perflab_pool_queue_wait_seconds``; ``perflab_limiter_rate``, ``perflab_limiter_burst``,
``perflab_limiter_acquired_total`` (tokens), ``perflab_limiter_waited_total``,
``perflab_limiter_waiting``, ``perflab_limiter_wait_seconds``; ``perflab_batch_items``
(items per batch), ``perflab_batch_pending_items``, ``perflab_batch_processed_items_total``,
``perflab_batch_flushes_total{reason}``, ``perflab_batch_failed_total``,
``perflab_batch_retries_total``; ``perflab_writer_records_total``,
``perflab_writer_raw_bytes_total``, ``perflab_writer_bytes_total``,
``perflab_writer_flushes_total``; ``perflab_event_loop_lag_seconds``; for an API
(:class:`perflab.aio.apicalls.ApiCalls`): ``perflab_api_calls_total{status}`` (the HTTP
status, or error/timeout/cancelled), ``perflab_api_call_seconds`` (answered calls),
``perflab_api_in_flight`` and ``perflab_api_peak_in_flight`` (calls at the server: sent,
not yet answered), ``perflab_api_in_flight_at_send{status}`` (how many were at the server
when each call was sent), ``perflab_api_retry_after_seconds``,
``perflab_api_answered_in_window{window}`` (the most answered calls sent within a window
of that many seconds, over the last minute: what shows a server's burst).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from perflab._validate import check_number, check_str
from perflab.aio.apicalls import ApiCalls
from perflab.aio.batching import BatchProcessor
from perflab.aio.histogram import Histogram, HistogramSnapshot
from perflab.aio.ratelimit import TokenBucketLimiter
from perflab.aio.taskpool import TaskPool
from perflab.jsonl.writers import BufferedWriter, CompressedWriter

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "LOOP_LAG_BUCKETS",
    "METRIC_NAMES",
    "Exporter",
    "LoopLagMonitor",
    "histogram_family",
    "metric_family",
]

#: Upper bounds (seconds) of the event-loop lag histogram: 0.1 ms to 5 s. The fine low end
#: is what ``perflab observe`` reads the sends' jitter from (a timer alone is up to ~1 ms late).
LOOP_LAG_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

#: Every metric family the exporter writes (histograms and counters by their base name).
METRIC_NAMES = (
    "perflab_pool_in_flight",
    "perflab_pool_queued",
    "perflab_pool_max_concurrent",
    "perflab_pool_peak_in_flight",
    "perflab_pool_submitted_total",
    "perflab_pool_calls_total",
    "perflab_pool_queue_wait_seconds",
    "perflab_limiter_rate",
    "perflab_limiter_burst",
    "perflab_limiter_acquired_total",
    "perflab_limiter_waited_total",
    "perflab_limiter_waiting",
    "perflab_limiter_wait_seconds",
    "perflab_batch_items",
    "perflab_batch_pending_items",
    "perflab_batch_processed_items_total",
    "perflab_batch_flushes_total",
    "perflab_batch_failed_total",
    "perflab_batch_retries_total",
    "perflab_writer_records_total",
    "perflab_writer_raw_bytes_total",
    "perflab_writer_bytes_total",
    "perflab_writer_flushes_total",
    "perflab_event_loop_lag_seconds",
    "perflab_api_calls_total",
    "perflab_api_call_seconds",
    "perflab_api_in_flight",
    "perflab_api_peak_in_flight",
    "perflab_api_in_flight_at_send",
    "perflab_api_retry_after_seconds",
    "perflab_api_answered_in_window",
)

_OUTCOMES = ("completed", "failed", "timed_out", "cancelled")
Writer = BufferedWriter | CompressedWriter


class LoopLagMonitor:
    """How late a callback due every ``interval`` seconds runs on a loop: the time other
    callbacks held the loop. One timer per interval; the histogram is read at scrape."""

    __slots__ = ("interval", "histogram", "_loop", "_handle", "_due")

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = 0.1) -> None:
        self.interval = check_number("interval", interval, positive=True)
        self.histogram = Histogram(LOOP_LAG_BUCKETS)
        self._loop = loop
        self._due = loop.time() + interval
        self._handle: asyncio.TimerHandle | None = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        self.histogram.observe(max(0.0, now - self._due))
        self._due = now + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        """Stop sampling (call from the loop's thread)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def running(self) -> bool:
        return self._handle is not None


class Exporter:
    """Exports registered primitives to a Prometheus registry at scrape time."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        try:
            from prometheus_client import CollectorRegistry
        except ImportError:
            raise ImportError(
                "the exporter needs prometheus-client: pip install 'perflab[metrics]'"
            ) from None
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._pools: dict[str, TaskPool] = {}
        self._limiters: dict[str, TokenBucketLimiter] = {}
        self._batchers: dict[str, BatchProcessor] = {}
        self._writers: dict[str, BufferedWriter | CompressedWriter] = {}
        self._loops: dict[str, LoopLagMonitor] = {}
        self._apis: dict[str, ApiCalls] = {}
        self._server: Any = None
        self.registry.register(_ScrapeReader(self))

    def __repr__(self) -> str:
        counts = {k: len(v) for k, v in self._sources().items()}
        return f"<Exporter {counts}>"

    # ----------------------------------------------------------------- registering

    def add_pool(self, name: str, pool: TaskPool, *, replace: bool = False) -> None:
        self._add(self._pools, "pool", name, pool, TaskPool, replace)

    def add_limiter(self, name: str, limiter: TokenBucketLimiter, *, replace: bool = False) -> None:
        self._add(self._limiters, "limiter", name, limiter, TokenBucketLimiter, replace)

    def add_batcher(self, name: str, batcher: BatchProcessor, *, replace: bool = False) -> None:
        self._add(self._batchers, "batcher", name, batcher, BatchProcessor, replace)

    def add_writer(
        self, name: str, writer: BufferedWriter | CompressedWriter, *, replace: bool = False
    ) -> None:
        self._add(self._writers, "writer", name, writer, (BufferedWriter, CompressedWriter), replace)

    def add_api(self, name: str, calls: ApiCalls | None = None, *, replace: bool = False) -> ApiCalls:
        """Export the calls made to the API ``name``: a new :class:`ApiCalls` (or ``calls``),
        returned to wrap each request in (``async with api.call() as call``) or to hand to
        an HTTP client (:func:`perflab.aio.apicalls.aiohttp_trace`, ``HttpxTransport``)."""
        if calls is None:
            calls = ApiCalls(name)
        self._add(self._apis, "api", name, calls, ApiCalls, replace)
        return calls

    def watch_loop(
        self, name: str = "main", *, interval: float = 0.1, replace: bool = False
    ) -> LoopLagMonitor:
        """Sample the running loop's lag every ``interval`` seconds (call inside the loop)."""
        loop = asyncio.get_running_loop()
        old = self._loops.get(name)
        monitor = LoopLagMonitor(loop, interval)
        try:
            self._add(self._loops, "loop", name, monitor, LoopLagMonitor, replace)
        except ValueError:
            monitor.stop()
            raise
        if old is not None:
            old.stop()
        return monitor

    def remove(self, name: str) -> None:
        """Stop exporting every source registered under ``name``."""
        with self._lock:
            found = False
            for sources in self._sources().values():
                if sources.pop(name, None) is not None:
                    found = True
        if not found:
            raise KeyError(f"nothing is registered as {name!r}")

    def _add(
        self, sources: dict[str, Any], kind: str, name: str, source: Any, expected: Any, replace: bool
    ) -> None:
        check_str("name", name)
        if not name:
            raise ValueError("name must not be empty")
        if not isinstance(source, expected):
            raise TypeError(f"{kind} must be a {_names(expected)}, got {type(source).__name__}")
        with self._lock:
            if name in sources and sources[name] is not source and not replace:
                raise ValueError(f"a {kind} is already registered as {name!r}: pass replace=True to swap it")
            sources[name] = source

    def _sources(self) -> dict[str, dict[str, Any]]:
        return {
            "pools": self._pools,
            "limiters": self._limiters,
            "batchers": self._batchers,
            "writers": self._writers,
            "loops": self._loops,
            "apis": self._apis,
        }

    # ----------------------------------------------------------------- serving

    def text(self) -> str:
        """The exposition text a scrape would get now."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()

    def serve(self, port: int = 0, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` from a thread (``port=0``: any free port); return the port."""
        from prometheus_client import start_http_server

        if self._server is not None:
            raise RuntimeError("the exporter is already serving; close() it first")
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        """Stop serving (idempotent); loop monitors must be stopped in their loop."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _names(expected: Any) -> str:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(kind.__name__ for kind in kinds)


# (metric, help, stats field) per kind of source: gauges, then counters.
_POOL = (
    ("gauge", "perflab_pool_in_flight", "Calls running now.", "in_flight"),
    ("gauge", "perflab_pool_queued", "Calls accepted and waiting for a slot.", "queued"),
    ("gauge", "perflab_pool_peak_in_flight", "Most calls running at once.", "peak_in_flight"),
    ("gauge", "perflab_pool_limit", "Calls allowed at once now (an adaptive limit moves).", "limit"),
    ("counter", "perflab_pool_submitted", "Calls accepted.", "submitted"),
)
_LIMITER = (
    ("gauge", "perflab_limiter_rate", "Configured rate (tokens per second).", "rate"),
    ("gauge", "perflab_limiter_burst", "Bucket capacity (tokens).", "burst_size"),
    ("gauge", "perflab_limiter_waiting", "Acquires waiting now.", "waiting"),
    ("counter", "perflab_limiter_acquired", "Tokens granted.", "acquired"),
    ("counter", "perflab_limiter_waited", "Acquires that had to wait.", "waited"),
)
_BATCHER = (
    ("gauge", "perflab_batch_pending_items", "Items added, not yet processed.", "pending_items"),
    ("counter", "perflab_batch_processed_items", "Items in processed batches.", "items"),
    ("counter", "perflab_batch_failed", "Batches that failed after their retries.", "failed_batches"),
    ("counter", "perflab_batch_retries", "Processor retries.", "retries"),
)
_WRITER = (
    ("counter", "perflab_writer_records", "Records written.", "records"),
    ("counter", "perflab_writer_raw_bytes", "JSON-lines bytes before compression.", "raw_bytes"),
    ("counter", "perflab_writer_bytes", "Bytes written to the file.", "bytes_written"),
    ("counter", "perflab_writer_flushes", "Buffer flushes.", "flushes"),
)


class _ScrapeReader:
    """Reads every registered source at scrape time (prometheus_client's collector API)."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        ex = self.exporter
        with ex._lock:
            pools, limiters = dict(ex._pools), dict(ex._limiters)
            batchers, writers, loops = dict(ex._batchers), dict(ex._writers), dict(ex._loops)
            apis = dict(ex._apis)

        pool_stats = {name: pool.stats for name, pool in pools.items()}
        yield from _families(_POOL, pool_stats)
        slots = ((n, float(stats.limit)) for n, stats in pool_stats.items())
        yield metric_family(
            "gauge", "perflab_pool_max_concurrent", "The pool's slots now (as perflab_pool_limit).", slots
        )
        calls = CounterMetricFamily(
            "perflab_pool_calls", "Calls ended, by outcome.", labels=["name", "outcome"]
        )
        for name, pool_stat in pool_stats.items():
            for outcome in _OUTCOMES:
                calls.add_metric([name, outcome], float(getattr(pool_stat, outcome)))
        yield calls
        waits = ((n, p.queue_wait_histogram()) for n, p in pools.items())
        yield histogram_family(
            "perflab_pool_queue_wait_seconds", "Time a queued call (gather, submit) waited for a slot.", waits
        )

        yield from _families(_LIMITER, {name: limiter.stats for name, limiter in limiters.items()})
        waits = ((n, limiter.wait_histogram()) for n, limiter in limiters.items())
        yield histogram_family(
            "perflab_limiter_wait_seconds", "How long the acquires that had to wait waited.", waits
        )

        batch_stats = {name: batcher.stats for name, batcher in batchers.items()}
        yield from _families(_BATCHER, batch_stats)
        sizes = ((n, b.batch_size_histogram()) for n, b in batchers.items())
        yield histogram_family("perflab_batch_items", "Items per processed batch.", sizes)
        flushes = CounterMetricFamily(
            "perflab_batch_flushes", "Batches sealed, by reason.", labels=["name", "reason"]
        )
        for name, batch_stat in batch_stats.items():
            for reason, count in sorted(batch_stat.flush_reasons.items()):
                flushes.add_metric([name, reason], float(count))
        yield flushes

        yield from _families(_WRITER, {name: writer.stats for name, writer in writers.items()})
        lags = ((n, monitor.histogram.snapshot()) for n, monitor in loops.items())
        yield histogram_family(
            "perflab_event_loop_lag_seconds", "How late a periodic callback ran on the event loop.", lags
        )
        yield from _api_families(apis)

    def describe(self) -> Iterator[Any]:
        return self.collect()


def _api_families(apis: dict[str, ApiCalls]) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    stats = {name: api.stats for name, api in apis.items()}
    calls = CounterMetricFamily(
        "perflab_api_calls",
        "API calls ended, by answer (HTTP status, error, timeout, cancelled).",
        labels=["name", "status"],
    )
    for name, api_stat in stats.items():
        for status, count in sorted(api_stat.by_status.items()):
            calls.add_metric([name, status], float(count))
    yield calls
    yield histogram_family(
        "perflab_api_call_seconds",
        "Send-to-answer time of answered (2xx, 3xx) calls.",
        ((n, api.latency_histogram()) for n, api in apis.items()),
    )
    yield metric_family(
        "gauge",
        "perflab_api_in_flight",
        "Calls at the server: sent, not yet answered.",
        ((n, s.in_flight) for n, s in stats.items()),
    )
    yield metric_family(
        "gauge",
        "perflab_api_peak_in_flight",
        "Most calls at the server at once.",
        ((n, s.peak_in_flight) for n, s in stats.items()),
    )
    yield histogram_family(
        "perflab_api_in_flight_at_send",
        "Calls at the server when a call was sent (itself included), by its answer.",
        (
            ((n, status), snap)
            for n, api in apis.items()
            for status, snap in sorted(api.in_flight_histograms().items())
        ),
        label=("name", "status"),
    )
    yield histogram_family(
        "perflab_api_retry_after_seconds",
        "The Retry-After the server asked for.",
        ((n, api.retry_after_histogram()) for n, api in apis.items()),
    )
    peaks = GaugeMetricFamily(
        "perflab_api_answered_in_window",
        "Most answered calls sent within a window of this many seconds, over the last minute.",
        labels=["name", "window"],
    )
    for name, api in apis.items():
        for window, count in api.answered_in_window().items():
            peaks.add_metric([name, f"{window:g}"], float(count))
    yield peaks


def _families(specs: Iterable[tuple[str, str, str, str]], stats: dict[str, Any]) -> Iterator[Any]:
    for kind, metric, text, field in specs:
        yield metric_family(kind, metric, text, ((name, getattr(s, field)) for name, s in stats.items()))


def metric_family(
    kind: str, metric: str, text: str, values: Iterable[tuple[str, float]], label: str = "name"
) -> Any:
    """A gauge or counter family with one series per value of ``label``."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    family = (GaugeMetricFamily if kind == "gauge" else CounterMetricFamily)(metric, text, labels=[label])
    for name, value in values:
        family.add_metric([name], float(value))
    return family


def histogram_family(
    metric: str,
    text: str,
    values: Iterable[tuple[Any, HistogramSnapshot]],
    label: str | tuple[str, ...] | None = "name",
) -> Any:
    """A Prometheus histogram family from perflab histogram snapshots, one per value of
    ``label`` (a tuple of labels: one per tuple of values; ``label=None``: one unlabelled
    histogram, its label value ignored)."""
    from prometheus_client.core import HistogramMetricFamily

    labels = [] if label is None else [label] if isinstance(label, str) else list(label)
    family = HistogramMetricFamily(metric, text, labels=labels)
    for name, snap in values:
        buckets = [("+Inf" if math.isinf(bound) else repr(bound), float(n)) for bound, n in snap.cumulative]
        values_of = [] if label is None else [name] if isinstance(label, str) else list(name)
        family.add_metric(values_of, buckets, sum_value=snap.sum)
    return family
