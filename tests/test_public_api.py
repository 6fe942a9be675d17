"""The public surface: one curated, sorted ``__all__``, pinned here."""

from __future__ import annotations

import dataclasses

import perflab

EXPECTED = [
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


def test_all_is_pinned_and_sorted() -> None:
    assert perflab.__all__ == EXPECTED
    assert perflab.__all__ == sorted(perflab.__all__)


def test_every_exported_name_exists() -> None:
    for name in perflab.__all__:
        assert hasattr(perflab, name), name


def test_stats_objects_are_frozen_dataclasses_with_as_dict() -> None:
    for cls in (
        perflab.TaskPoolStats,
        perflab.LimiterStats,
        perflab.BatchStats,
        perflab.TaskPoolConfig,
        perflab.WriterStats,
    ):
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert callable(cls.as_dict)


def test_version_comes_from_the_package_metadata() -> None:
    assert perflab.__version__ != "0.0.0+unknown"


def test_every_lazy_name_is_in_all_and_loads_from_its_family() -> None:
    located = set(perflab._LOCATIONS)
    assert located == set(perflab.__all__) - {"__version__"}
    for name, module in perflab._LOCATIONS.items():
        assert getattr(perflab, name).__module__ == module, name


def test_import_perflab_loads_no_family_until_a_name_is_used() -> None:
    import subprocess
    import sys

    script = (
        "import sys, perflab\n"
        "print(sorted(m for m in sys.modules if m.startswith('perflab.')), 'numpy' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[] False", done.stdout + done.stderr
