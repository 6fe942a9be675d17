"""The simulated API and sink, and the notebook experiments, on a virtual clock: exact."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest

from perflab.workbench.asyncio_experiments import (
    batch_experiment,
    gather_baseline,
    pool_experiment,
    rate_ceiling,
    rate_experiment,
    run_rate,
    sequential_baseline,
)
from perflab.workbench.services import Latency, SimulatedAPI, SimulatedSink

from loops import VirtualClockLoop, run_on


def test_latency_models_match_their_percentiles() -> None:
    model = Latency.parse("lognormal:20:120")
    draw = model.sampler(seed=3)
    draws = np.array([draw() for _ in range(40_000)]) * 1e3
    assert np.percentile(draws, 50) == pytest.approx(20, rel=0.03)
    assert np.percentile(draws, 99) == pytest.approx(120, rel=0.08)
    assert model.mean_ms == pytest.approx(20 * math.exp(model.sigma**2 / 2))
    assert draws.mean() == pytest.approx(model.mean_ms, rel=0.03)
    constant = Latency.parse("constant:5")
    assert constant.sampler(0)() == 0.005 and constant.mean_ms == 5
    with pytest.raises(ValueError, match="latency must be 'constant:MS' or 'lognormal:P50_MS:P99_MS'"):
        Latency.parse("gamma:3")
    with pytest.raises(ValueError, match=r"p99_ms must be >= p50_ms \(20\), got 10"):
        Latency.lognormal(20, 10)


def test_the_api_answers_503_past_its_cap_and_429_with_retry_after_past_its_rate() -> None:
    async def main() -> tuple[list[int], list[Any], object]:
        capped = SimulatedAPI(latency="constant:10", max_concurrency=3)
        by_cap = [r.status for r in await asyncio.gather(*(capped.call() for _ in range(5)))]
        limited = SimulatedAPI(latency="constant:1", rate_limit=10, rate_burst=2)
        by_rate = list(await asyncio.gather(*(limited.call() for _ in range(6))))
        await asyncio.sleep(0.1)  # one token back
        by_rate.append(await limited.call())
        return by_cap, by_rate, capped.stats

    by_cap, by_rate, stats = run_on(VirtualClockLoop, main())
    assert sorted(by_cap) == [200, 200, 200, 503, 503]
    assert stats.rejected_concurrency == 2 and stats.peak_concurrency == 3
    assert [r.status for r in by_rate] == [200, 200, 429, 429, 429, 429, 200]
    # The bucket is empty at once: the next token is 1/10 s away (as nginx's limit_req).
    assert [r.retry_after for r in by_rate[2:6]] == pytest.approx([0.1] * 4)
    assert by_rate[0].retry_after is None and by_rate[6].retry_after is None


def test_errors_are_drawn_at_the_error_rate() -> None:
    async def main() -> float:
        api = SimulatedAPI(latency="constant:1", error_rate=0.2, seed=5)
        statuses = [(await api.call()).status for _ in range(2000)]
        return statuses.count(500) / len(statuses)

    assert run_on(VirtualClockLoop, main()) == pytest.approx(0.2, abs=0.03)


def test_the_sink_costs_per_call_plus_per_item() -> None:
    async def main() -> float:
        sink = SimulatedSink(per_call_ms=2, per_item_ms=0.5)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await sink.write(list(range(10)))
        return loop.time() - start

    assert run_on(VirtualClockLoop, main()) == pytest.approx(0.002 + 10 * 0.0005)


@pytest.mark.parametrize("pool", [1, 4, 16, 32])
def test_pool_throughput_follows_littles_law_below_the_cap(pool: int) -> None:
    metrics = run_on(VirtualClockLoop, pool_experiment(pool, "constant:20", duration_s=2.0, server_cap=32))
    assert metrics["throughput"] == pytest.approx(pool / 0.020, rel=0.02)
    assert metrics["p50_ms"] == pytest.approx(20.0) and metrics["rejected_per_s"] == 0


def test_past_the_cap_more_workers_only_add_429s() -> None:
    metrics = run_on(VirtualClockLoop, pool_experiment(64, "constant:20", duration_s=1.0, server_cap=32))
    assert metrics["throughput"] == pytest.approx(32 / 0.020, rel=0.02)
    assert metrics["rejected_per_s"] > 1000 and metrics["rejected_share"] > 0.5


def test_against_a_rate_limit_the_pool_paces_at_the_client_rate() -> None:
    limits = {"duration_s": 2.0, "server_cap": 32, "server_rate": 200.0, "server_burst": 10.0}
    at_server_rate = run_on(VirtualClockLoop, pool_experiment(16, "constant:20", **limits))
    assert at_server_rate["throughput"] == pytest.approx(200, rel=0.02)
    assert at_server_rate["rejected_per_s"] == 0
    paced = run_on(VirtualClockLoop, pool_experiment(16, "constant:20", client_rate=150.0, **limits))
    assert paced["throughput"] == pytest.approx(150, rel=0.02) and paced["rejected_per_s"] == 0


def test_a_client_rate_needs_a_server_rate_and_must_be_positive() -> None:
    with pytest.raises(ValueError, match="client_rate paces calls to a rate limit: give server_rate"):
        run_on(VirtualClockLoop, pool_experiment(4, "constant:20", client_rate=50.0))
    with pytest.raises(ValueError, match="client_rate must be > 0"):
        run_on(VirtualClockLoop, pool_experiment(4, "constant:20", server_rate=50.0, client_rate=0.0))


def test_a_given_jitter_sizes_the_ceiling_and_is_named_as_given() -> None:
    given = asyncio.run(rate_ceiling(200.0, 1, 2.0, probe_rate=200.0, given_as="observed"))
    assert given == (pytest.approx(200 / 1.4), 2.0, "observed")
    assert asyncio.run(rate_ceiling(200.0, 11, 2.0, probe_rate=200.0))[1:] == (2.0, "given")


def test_baselines() -> None:
    sequential = run_on(VirtualClockLoop, sequential_baseline("constant:20", duration_s=1.0))
    assert sequential["throughput"] == pytest.approx(50, rel=0.03)
    burst = run_on(VirtualClockLoop, gather_baseline("constant:20", requests=100, server_cap=10))
    assert burst["rejected_share"] == pytest.approx(0.9) and burst["calls"] == 100


def test_the_rate_experiment_measures_the_limiter_and_the_servers_429s() -> None:
    metrics = run_on(
        VirtualClockLoop, rate_experiment(100.0, 1, duration_s=2.0, server_rate=50.0, server_burst=1)
    )
    assert metrics["achieved_rate"] == pytest.approx(100.0, rel=1e-6)
    assert abs(metrics["rate_error_pct"]) < 1e-3
    assert metrics["rejected_per_s"] == pytest.approx(50, rel=0.05)
    run = run_on(VirtualClockLoop, run_rate(100.0, 5, duration_s=0.5, concurrency=4))
    assert len(run.waits) >= len(run.grants) and min(run.waits) >= 0  # + callers cut off at the deadline


def test_the_batch_experiment_fills_batches_and_keeps_up() -> None:
    metrics = run_on(
        VirtualClockLoop, batch_experiment(10, 0.05, arrival_rate=1000.0, duration_s=1.0, per_call_ms=2)
    )
    assert metrics["mean_batch"] == 10
    assert metrics["throughput"] == pytest.approx(1000, rel=0.05)
    assert metrics["item_p99_ms"] < 20
    behind = run_on(
        VirtualClockLoop, batch_experiment(1, 0.05, arrival_rate=1000.0, duration_s=1.0, per_call_ms=2)
    )
    assert behind["throughput"] < 600  # 2 ms per call: the sink cannot keep up one at a time
    assert behind["item_p99_ms"] > 100
