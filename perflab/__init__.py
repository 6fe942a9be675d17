"""perflab: a performance workbench for asyncio services that call rate-limited APIs
concurrently and log JSON lines.

The public surface is this module's ``__all__``; everything else is internal.
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
