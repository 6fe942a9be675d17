"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from loops import VirtualClockLoop, run_on


@pytest.fixture
def run_virtual() -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Run a coroutine to completion on a fresh :class:`VirtualClockLoop`."""

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        return run_on(VirtualClockLoop, coro)

    return run
