"""perflab: a performance workbench for asyncio services that call rate-limited APIs
concurrently and log JSON lines.

The public surface is this module's ``__all__``; everything else is internal.
"""

from importlib.metadata import PackageNotFoundError, version

from perflab.batching import BatchProcessor, BatchStats
from perflab.ratelimit import LimiterStats, TokenBucketLimiter
from perflab.readers import MemoryMappedReader, read_jsonl
from perflab.taskpool import TaskPool, TaskPoolConfig, TaskPoolStats
from perflab.writers import BufferedWriter, CompressedWriter, WriterStats

try:
    __version__ = version("perflab")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "BatchProcessor",
    "BatchStats",
    "BufferedWriter",
    "CompressedWriter",
    "LimiterStats",
    "MemoryMappedReader",
    "TaskPool",
    "TaskPoolConfig",
    "TaskPoolStats",
    "TokenBucketLimiter",
    "WriterStats",
    "__version__",
    "read_jsonl",
]
