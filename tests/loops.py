"""Event loops for tests: a virtual clock for exact, instant timing tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from perflab.aio._virtual_clock import VirtualClockLoop

__all__ = ["LateTimerLoop", "VirtualClockLoop", "run_on"]


class LateTimerLoop(VirtualClockLoop):
    """A virtual clock whose timers all fire half a millisecond late."""

    timer_lateness = 0.0005


def run_on(loop_factory: Callable[[], asyncio.AbstractEventLoop], coro: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)
