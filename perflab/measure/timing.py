"""Timing a callable the pyperf way: warm-up calls first, then ``repeat`` samples, each the
mean over ``number`` loops; ``number=None`` calibrates the loops so a sample takes about
100 ms. The samples become a :class:`BenchmarkResult` with the statistics of
:mod:`perflab.measure.stats` and its noise checks."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from perflab._validate import check_async_callable, check_int
from perflab.measure.stats import SampleStats, sample_stats

__all__ = ["BenchmarkResult", "abenchmark", "benchmark"]

#: Calibration aims for samples of about this long.
CALIBRATION_TARGET_SECONDS = 0.1


@dataclasses.dataclass(frozen=True, slots=True)
class BenchmarkResult(SampleStats):
    """Timings of one callable: ``samples`` in seconds per call (each the mean over
    ``number`` loops), the statistics computed from them, and pyperf's noise checks."""

    name: str
    samples: tuple[float, ...]
    number: int
    warmup: int

    @classmethod
    def from_samples(
        cls, samples: Sequence[float], *, number: int = 1, warmup: int = 0, name: str = ""
    ) -> BenchmarkResult:
        stats = sample_stats(samples, loops=number)
        fields = {f.name: getattr(stats, f.name) for f in dataclasses.fields(SampleStats)}
        samples = tuple(float(s) for s in samples)
        return cls(**fields, name=name, samples=samples, number=number, warmup=warmup)

    def __str__(self) -> str:
        unit, scale = _time_unit(self.median)
        text = (
            f"{self.name or 'benchmark'}: {self.median * scale:.3f} {unit} "
            f"[{self.min * scale:.3f}-{self.max * scale:.3f}] (median [min-max] of {len(self.samples)}"
            f" x {self.number} loops)"
        )
        return text + ("; noisy: " + "; ".join(self.noise_reasons) if self.noise_reasons else "")


def _time_unit(seconds: float) -> tuple[str, float]:
    for unit, scale in (("s", 1.0), ("ms", 1e3), ("us", 1e6)):
        if abs(seconds) * scale >= 1:
            return unit, scale
    return "ns", 1e9


def _check_benchmark_args(fn: Any, repeat: int, warmup: int, number: int | None) -> None:
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    check_int("repeat", repeat, minimum=1)
    check_int("warmup", warmup, minimum=0)
    if number is not None:
        check_int("number", number, minimum=1)


def _describe(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _failed(exc: BaseException, fn: Any, stage: str) -> BaseException:
    exc.add_note(f"raised by {_describe(fn)} during {stage}: no timing was taken")
    return exc


def benchmark(
    fn: Callable[..., Any],
    *args: Any,
    repeat: int = 7,
    warmup: int = 1,
    number: int | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> BenchmarkResult:
    """Time ``fn(*args, **kwargs)``. An async ``fn`` works only when no loop is running
    (use :func:`abenchmark` inside one, e.g. in a notebook). If ``fn`` raises, the
    exception propagates with a note saying so: a failure is never reported as a time."""
    _check_benchmark_args(fn, repeat, warmup, number)
    if inspect.iscoroutinefunction(fn):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(
                abenchmark(fn, *args, repeat=repeat, warmup=warmup, number=number, name=name, **kwargs)
            )
        raise RuntimeError(
            "benchmark() of an async callable inside a running loop: use 'await abenchmark(...)'"
        )
    clock = time.perf_counter

    def run(loops: int) -> float:
        started = clock()
        for _ in range(loops):
            fn(*args, **kwargs)
        return clock() - started

    stage = "warm-up"
    try:
        for _ in range(warmup):
            run(1)
        stage = "calibration"
        loops = number or _calibrate(run)
        stage = "timing"
        samples = [run(loops) / loops for _ in range(repeat)]
    except Exception as exc:
        raise _failed(exc, fn, stage) from None
    return BenchmarkResult.from_samples(samples, number=loops, warmup=warmup, name=name or _describe(fn))


async def abenchmark(
    fn: Callable[..., Awaitable[Any]],
    *args: Any,
    repeat: int = 7,
    warmup: int = 1,
    number: int | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> BenchmarkResult:
    """Time ``await fn(*args, **kwargs)`` inside the running loop (a notebook's too)."""
    _check_benchmark_args(fn, repeat, warmup, number)
    check_async_callable("fn", fn)
    clock = time.perf_counter

    async def run(loops: int) -> float:
        started = clock()
        for _ in range(loops):
            await fn(*args, **kwargs)
        return clock() - started

    stage = "warm-up"
    try:
        for _ in range(warmup):
            await run(1)
        stage = "calibration"
        loops = number
        if loops is None:
            loops = 1
            while (elapsed := await run(loops)) < CALIBRATION_TARGET_SECONDS and loops < 1 << 30:
                loops = _next_loops(loops, elapsed)
        stage = "timing"
        samples = [await run(loops) / loops for _ in range(repeat)]
    except Exception as exc:
        raise _failed(exc, fn, stage) from None
    return BenchmarkResult.from_samples(samples, number=loops, warmup=warmup, name=name or _describe(fn))


def _calibrate(run: Callable[[int], float]) -> int:
    """Loops per sample so that one sample takes about CALIBRATION_TARGET_SECONDS."""
    loops = 1
    while (elapsed := run(loops)) < CALIBRATION_TARGET_SECONDS and loops < 1 << 30:
        loops = _next_loops(loops, elapsed)
    return loops


def _next_loops(loops: int, elapsed: float) -> int:
    if elapsed <= 0:
        return loops * 10
    wanted = math.ceil(loops * CALIBRATION_TARGET_SECONDS / elapsed * 1.1)
    return max(loops * 2, min(wanted, loops * 100))
