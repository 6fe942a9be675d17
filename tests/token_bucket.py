"""A server's token bucket, as a reference for the tests: which of a list of arrivals it
answers (``rate`` per second, ``capacity`` at once, starting full)."""

from __future__ import annotations

from collections.abc import Sequence


def bucket_answers(arrivals: Sequence[float], rate: float, capacity: float) -> list[bool]:
    """Per arrival (in the order given), whether the bucket had a token for it."""
    order = sorted(range(len(arrivals)), key=arrivals.__getitem__)
    answered = [False] * len(arrivals)
    tokens, refilled = float(capacity), arrivals[order[0]] if order else 0.0
    for i in order:
        tokens = min(capacity, tokens + (arrivals[i] - refilled) * rate)
        refilled = arrivals[i]
        if tokens >= 1 - 1e-9:
            tokens -= 1
            answered[i] = True
    return answered
