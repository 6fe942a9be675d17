"""perflab: a performance workbench for asyncio services that call rate-limited APIs
concurrently and log JSON lines.

Two layers. The library sits flat in this package, one module per concern (taskpool,
ratelimit, batching, writers, readers, codecs, histogram, exporter, measure, sweep,
analysis, changes, results, metadata, profile_result, profiler, advice, cli). The
workbench, ``perflab.workbench``, holds what the notebooks, ``perflab report``,
``perflab sweep`` and ``perflab history`` run on (simulated services, experiments, the
collector, findings, plots, publishing, the report, history); it imports the library,
never the other way round.

Public: this module's ``__all__`` (pinned by a test) and the names in each library
module's ``__all__``. Internal: modules whose name starts with ``_`` and all of
``perflab.workbench``.
"""

from importlib.metadata import PackageNotFoundError, version

from perflab.advice import Analysis, ProfileReport, Recommendation
from perflab.analysis import compare_runs, knee, pareto_front
from perflab.batching import BatchProcessor, BatchStats
from perflab.measure import BenchmarkResult, Comparison, SampleStats, compare, sample_stats
from perflab.profile_result import ProfileResult
from perflab.profiler import PerformanceProfiler
from perflab.ratelimit import LimiterStats, TokenBucketLimiter
from perflab.readers import MemoryMappedReader, read_jsonl
from perflab.results import Results, summarize
from perflab.sweep import asweep, sweep
from perflab.taskpool import TaskPool, TaskPoolConfig, TaskPoolStats
from perflab.writers import BufferedWriter, CompressedWriter, WriterStats

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
