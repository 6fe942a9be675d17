"""Profiling: PerformanceProfiler (CPU, memory, I/O and event-loop health), the
ProfileResult it returns, and the rules that turn measurements into recommendations
(``advice``: ProfileReport)."""
