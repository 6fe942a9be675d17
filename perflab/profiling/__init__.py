"""Profiling: PerformanceProfiler (CPU, memory, I/O and event-loop health), the
ProfileResult it returns (``result``), the checks that turn measurements into
recommendations (``rules``) and their rendering (``report``: ProfileReport)."""
