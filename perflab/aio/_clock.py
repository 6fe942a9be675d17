"""How the asyncio primitives treat the loop clock, defined once for TaskPool and
TokenBucketLimiter."""

from __future__ import annotations

__all__ = ["CLOCK_SLACK", "MIN_REARM_DELAY"]

#: A deadline or due time counts as reached when the clock is within this of it: asyncio
#: may run a timer a clock tick early, and a re-armed timer must not spin on the same time.
CLOCK_SLACK = 1e-6
#: Coarse clocks (uvloop's is in milliseconds) can fire a timer up to half a tick before
#: its time; whoever was woken early then waits at least this long instead of spinning.
MIN_REARM_DELAY = 0.001
