"""Event loops for tests: a virtual clock for exact, instant timing tests."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any


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
    """An event loop whose clock jumps to the next timer whenever it would sleep.

    Timing logic under test sees exact times (no scheduler noise) and a test of a
    10-second schedule runs in milliseconds.
    """

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


class LateTimerLoop(VirtualClockLoop):
    """A virtual clock whose timers all fire half a millisecond late."""

    timer_lateness = 0.0005


def run_on(loop_factory: Callable[[], asyncio.AbstractEventLoop], coro: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)
