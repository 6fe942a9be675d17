"""An event loop on a virtual clock: whenever it would sleep, its clock jumps to the next
timer instead. Code that only waits on timers (a simulated server's latency, a pool, a
limiter) then runs exactly and instantly: a 30-second scenario takes the CPU time its
calls cost, and its timings carry no scheduler noise."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["VirtualClockLoop", "run_on_virtual_clock"]

T = TypeVar("T")


class _InstantSelector(selectors.DefaultSelector):
    """Never blocks: a wait for ``timeout`` seconds moves the virtual clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        events = super().select(0)
        if not events and timeout and self.loop is not None:
            self.loop.advance(timeout + self.loop.timer_lateness)
        return events


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer whenever it would sleep."""

    #: Added to every sleep, to model timers that fire late (as epoll's do).
    timer_lateness = 0.0

    def __init__(self) -> None:
        selector = _InstantSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = 1000.0

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += seconds


def run_on_virtual_clock(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` to completion on a fresh virtual-clock loop in this thread (which
    must have no running loop: from async code, use ``asyncio.to_thread``)."""
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        return runner.run(main())
