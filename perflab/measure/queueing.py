"""Little's law, in one place: in a steady state, the calls in flight equal the rate they
are answered at times how long each takes (L = lambda W). The notebooks' ideal throughput,
``perflab observe``'s concurrency bound and the monitoring notebook's sustained pool size
all use it."""

from __future__ import annotations

__all__ = ["in_flight", "throughput"]


def in_flight(rate: float, seconds: float) -> float:
    """Calls in flight that ``rate`` answered calls a second of ``seconds`` each keep busy."""
    return rate * seconds


def throughput(concurrency: float, seconds: float) -> float:
    """Calls a second that ``concurrency`` calls in flight of ``seconds`` each complete."""
    return concurrency / seconds
