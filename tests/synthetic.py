"""Synthetic pool-sweep results for the run-comparison tests: throughput scales with the
pool size (times ``scale``), latency does not; both carry 1% noise."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perflab import Results


def pool_results(
    scale: float, seed: int, *, pools: Sequence[int], repeats: int, latency_metric: str = "p99"
) -> Results:
    rng = np.random.default_rng(seed)
    rows = [
        {
            "pool": pool,
            "repeat": r,
            "throughput": pool * 100 * scale * rng.normal(1, 0.01),
            latency_metric: 20 * rng.normal(1, 0.01),
        }
        for pool in pools
        for r in range(repeats)
    ]
    return Results.new(
        "taskpool", ["pool"], ["throughput", latency_metric], rows, higher_is_better={"throughput": True}
    )
