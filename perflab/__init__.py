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

from perflab.aio.batching import BatchProcessor, BatchStats
from perflab.aio.ratelimit import LimiterStats, TokenBucketLimiter
from perflab.aio.taskpool import TaskPool, TaskPoolConfig, TaskPoolStats
from perflab.jsonl.readers import MemoryMappedReader, read_jsonl
from perflab.jsonl.writers import BufferedWriter, CompressedWriter, WriterStats
from perflab.measure.analysis import compare_runs, knee, pareto_front
from perflab.measure.results import Results, summarize
from perflab.measure.stats import BenchmarkResult, Comparison, SampleStats, compare, sample_stats
from perflab.measure.sweep import asweep, sweep
from perflab.profiling.advice import Analysis, ProfileReport, Recommendation
from perflab.profiling.profiler import PerformanceProfiler
from perflab.profiling.result import ProfileResult

try:
    __version__ = version("perflab")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "Analysis",
    "BatchProcessor",
    "BatchStats",
    "BenchmarkResult",
    "BufferedWriter",
    "Comparison",
    "CompressedWriter",
    "LimiterStats",
    "MemoryMappedReader",
    "PerformanceProfiler",
    "ProfileReport",
    "ProfileResult",
    "Recommendation",
    "Results",
    "SampleStats",
    "TaskPool",
    "TaskPoolConfig",
    "TaskPoolStats",
    "TokenBucketLimiter",
    "WriterStats",
    "__version__",
    "asweep",
    "compare",
    "compare_runs",
    "knee",
    "pareto_front",
    "read_jsonl",
    "sample_stats",
    "summarize",
    "sweep",
]
