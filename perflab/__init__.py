"""perflab: a performance workbench for asyncio services that call rate-limited APIs
concurrently and log JSON lines.

The families, one folder each, imports running one way (down this list):

- ``perflab.workbench``: the ``perflab`` command, the notebooks' support, reports, history;
- ``perflab.measure``, ``perflab.profiling``, ``perflab.exporter``: the harness (statistics,
  sweeps, results, analysis), the profiler and its rules, the Prometheus exporter;
- ``perflab.aio``, ``perflab.jsonl``: the primitives (TaskPool, TokenBucketLimiter,
  BatchProcessor) and the JSON-lines writers and readers;
- ``perflab._validate``, ``perflab._files``: argument checks and safe file writes.

Public: this module's ``__all__`` (pinned by a test) and the names in each module's
``__all__`` outside ``perflab.workbench``. Internal: modules whose name starts with ``_``
and all of ``perflab.workbench``.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

#: Where each public name lives. ``import perflab`` imports none of them: a name loads its
#: module on first use (PEP 562), so ``import perflab.aio`` pulls no numpy and the core
#: starts fast.
_LOCATIONS = {
    "Analysis": "perflab.profiling.rules",
    "ProfileReport": "perflab.profiling.report",
    "Recommendation": "perflab.profiling.rules",
    "compare_runs": "perflab.measure.analysis",
    "knee": "perflab.measure.analysis",
    "pareto_front": "perflab.measure.analysis",
    "AIMD": "perflab.aio.limits",
    "Gradient2": "perflab.aio.limits",
    "Limit": "perflab.aio.limits",
    "Rejected": "perflab.aio.limits",
    "Throttle": "perflab.aio.limits",
    "Throttled": "perflab.aio.limits",
    "Vegas": "perflab.aio.limits",
    "Windowed": "perflab.aio.limits",
    "ApiCalls": "perflab.aio.apicalls",
    "ApiStats": "perflab.aio.apicalls",
    "BatchProcessor": "perflab.aio.batching",
    "BatchStats": "perflab.aio.batching",
    "BenchmarkResult": "perflab.measure.timing",
    "Comparison": "perflab.measure.stats",
    "SampleStats": "perflab.measure.stats",
    "compare": "perflab.measure.stats",
    "sample_stats": "perflab.measure.stats",
    "ProfileResult": "perflab.profiling.result",
    "PerformanceProfiler": "perflab.profiling.profiler",
    "LimiterStats": "perflab.aio.ratelimit",
    "TokenBucketLimiter": "perflab.aio.ratelimit",
    "rate_with_headroom": "perflab.aio.ratelimit",
    "MemoryMappedReader": "perflab.jsonl.readers",
    "read_jsonl": "perflab.jsonl.readers",
    "Decision": "perflab.measure.decision",
    "UntilDecided": "perflab.measure.decision",
    "decide": "perflab.measure.decision",
    "Results": "perflab.measure.results",
    "summarize": "perflab.measure.results",
    "asweep": "perflab.measure.sweep",
    "sweep": "perflab.measure.sweep",
    "TaskPool": "perflab.aio.taskpool",
    "TaskPoolConfig": "perflab.aio.taskpool",
    "TaskPoolStats": "perflab.aio.taskpool",
    "BufferedWriter": "perflab.jsonl.writers",
    "CompressedWriter": "perflab.jsonl.writers",
    "WriterStats": "perflab.jsonl.writers",
}

if TYPE_CHECKING:
    from perflab.aio.apicalls import ApiCalls, ApiStats
    from perflab.aio.batching import BatchProcessor, BatchStats
    from perflab.aio.limits import AIMD, Gradient2, Limit, Rejected, Throttle, Throttled, Vegas, Windowed
    from perflab.aio.ratelimit import LimiterStats, TokenBucketLimiter, rate_with_headroom
    from perflab.aio.taskpool import TaskPool, TaskPoolConfig, TaskPoolStats
    from perflab.jsonl.readers import MemoryMappedReader, read_jsonl
    from perflab.jsonl.writers import BufferedWriter, CompressedWriter, WriterStats
    from perflab.measure.analysis import compare_runs, knee, pareto_front
    from perflab.measure.decision import Decision, UntilDecided, decide
    from perflab.measure.results import Results, summarize
    from perflab.measure.stats import Comparison, SampleStats, compare, sample_stats
    from perflab.measure.sweep import asweep, sweep
    from perflab.measure.timing import BenchmarkResult
    from perflab.profiling.profiler import PerformanceProfiler
    from perflab.profiling.report import ProfileReport
    from perflab.profiling.result import ProfileResult
    from perflab.profiling.rules import Analysis, Recommendation


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'perflab' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


try:
    __version__ = version("perflab")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "AIMD",
    "Analysis",
    "ApiCalls",
    "ApiStats",
    "BatchProcessor",
    "BatchStats",
    "BenchmarkResult",
    "BufferedWriter",
    "Comparison",
    "CompressedWriter",
    "Decision",
    "Gradient2",
    "Limit",
    "LimiterStats",
    "MemoryMappedReader",
    "PerformanceProfiler",
    "ProfileReport",
    "ProfileResult",
    "Recommendation",
    "Rejected",
    "Results",
    "SampleStats",
    "TaskPool",
    "TaskPoolConfig",
    "TaskPoolStats",
    "Throttle",
    "Throttled",
    "TokenBucketLimiter",
    "UntilDecided",
    "Vegas",
    "Windowed",
    "WriterStats",
    "__version__",
    "asweep",
    "compare",
    "compare_runs",
    "decide",
    "knee",
    "pareto_front",
    "rate_with_headroom",
    "read_jsonl",
    "sample_stats",
    "summarize",
    "sweep",
]
