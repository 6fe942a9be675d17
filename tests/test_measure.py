"""Statistics, noise checks, comparisons and benchmarks of perflab.measure.stats."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from perflab.measure.stats import compare, format_summary, median_ci, noise_reasons, sample_stats
from perflab.measure.timing import BenchmarkResult, abenchmark, benchmark


def test_statistics_match_hand_computed_values() -> None:
    stats = sample_stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats.n == 5
    assert stats.median == 3.0
    assert stats.mean == 22.0
    # deviations -21 -20 -19 -18 78: (441 + 400 + 361 + 324 + 6084) / 4 = 1902.5
    assert stats.stdev == pytest.approx(math.sqrt(1902.5))
    assert stats.mad == 1.0  # |x - 3| = 2 1 0 1 97
    assert stats.iqr == 2.0  # quartiles 2 and 4
    assert (stats.min, stats.max) == (1.0, 100.0)
    assert stats.ci95 == (1.0, 100.0)  # n = 5: (min, max)
    assert stats.rel_noise == pytest.approx(1 / 3)


def test_median_ci_uses_the_binomial_order_statistics() -> None:
    assert median_ci(list(range(1, 21))) == (6.0, 15.0)  # the textbook ranks for n = 20
    assert median_ci(list(range(1, 101))) == (40.0, 61.0)  # and for n = 100
    assert median_ci([5.0]) == (5.0, 5.0)
    # Coverage: the interval contains the true median at least 95% of the time.
    rng = np.random.default_rng(0)
    hits = sum(low <= 0 <= high for low, high in (median_ci(rng.normal(0, 1, 15)) for _ in range(2000)))
    assert hits / 2000 >= 0.95


def test_noise_checks_fire_on_noisy_samples_with_the_measured_number() -> None:
    assert noise_reasons([1.0, 1.01, 0.99, 1.0, 1.02]) == ()
    wide = noise_reasons([1.0, 1.3, 0.7, 1.2, 0.8])
    assert any(r.startswith("stdev is 25.5% of the mean (threshold 10%)") for r in wide)
    outlier = noise_reasons([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0])
    assert any(r.startswith("max is 133% away from the mean (threshold 50%)") for r in outlier)
    few = noise_reasons([1.0, 1.0])
    assert few == ("only 2 sample(s) (at least 5 needed to see the spread)",)
    short = noise_reasons([0.0002] * 5, loops=2)
    assert short == ("a sample's raw timing is 0.400 ms (threshold 1 ms): use more loops",)
    assert sample_stats([1.0, 1.3, 0.7, 1.2, 0.8]).is_noisy


def test_bad_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="samples must be a non-empty sequence"):
        sample_stats([])
    with pytest.raises(ValueError, match="samples must be finite"):
        sample_stats([1.0, math.nan])


def test_an_a_a_comparison_is_rarely_called_significant() -> None:
    rng = np.random.default_rng(42)
    significant = 0
    for _ in range(20):
        a = rng.lognormal(0, 0.05, 10)
        b = rng.lognormal(0, 0.05, 10)
        significant += compare(a, b).significant
    assert significant <= 1


def test_a_real_difference_is_found_with_its_direction() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(1.0, 0.01, 12)
    slower = rng.normal(1.2, 0.01, 12)
    result = compare(base, slower)
    assert result.significant and result.verdict == "slower"
    assert result.ratio == pytest.approx(1.2, abs=0.02)
    assert result.ci95[0] < result.ratio < result.ci95[1]
    assert result.change == pytest.approx(0.2, abs=0.02)
    # For throughput, higher is better: the same numbers mean "faster".
    assert compare(base, slower, higher_is_better=True).verdict == "faster"


def test_a_tiny_but_consistent_difference_is_not_a_significant_change() -> None:
    base = [1.0, 1.001, 0.999, 1.0005, 0.9995, 1.0] * 3
    result = compare(base, [x * 1.01 for x in base])  # 1% < MIN_EFFECT
    assert result.p_value < 0.05 and not result.significant
    assert result.verdict == "no significant change"


def test_compare_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="baseline must be a non-empty sequence"):
        compare([], [1.0])
    with pytest.raises(ValueError, match="min_effect must be >= 0"):
        compare([1.0], [1.0], min_effect=-0.1)
    with pytest.raises(ValueError, match="baseline median is 0"):
        compare([0.0, 0.0], [1.0, 1.0])
    assert compare([2.0] * 5, [2.0] * 5).p_value == 1.0


def test_benchmark_calls_warmup_then_repeat_times_number() -> None:
    calls = []
    result = benchmark(calls.append, 1, repeat=5, warmup=2, number=30)
    assert len(calls) == 2 + 5 * 30
    assert len(result.samples) == 5 and result.number == 30 and result.warmup == 2
    assert all(s > 0 for s in result.samples)
    assert result.median == pytest.approx(float(np.median(result.samples)))
    assert "raw timing" in " ".join(result.noise_reasons)  # 30 appends take far under 1 ms


def test_benchmark_calibrates_samples_to_about_100_ms() -> None:
    result = benchmark(sum, range(2000), repeat=3)
    assert result.number > 100
    raw = result.median * result.number
    assert 0.05 < raw < 1.0  # generous: the point is "about 100 ms", not a precise time


def test_a_failing_callable_raises_instead_of_reporting_a_time() -> None:
    def broken() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError) as caught:
        benchmark(broken, repeat=3)
    assert any("during warm-up: no timing was taken" in note for note in caught.value.__notes__)


def test_async_callables_outside_and_inside_a_loop() -> None:
    async def tick() -> None:
        await asyncio.sleep(0)

    outside = benchmark(tick, repeat=3, number=50)
    assert len(outside.samples) == 3

    async def inside() -> BenchmarkResult:
        with pytest.raises(RuntimeError, match="use 'await abenchmark"):
            benchmark(tick, repeat=3)
        return await abenchmark(tick, repeat=3, number=50)

    assert asyncio.run(inside()).number == 50


def test_benchmark_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="repeat must be >= 1, got 0"):
        benchmark(sum, [], repeat=0)
    with pytest.raises(ValueError, match="number must be >= 1, got 0"):
        benchmark(sum, [], number=0)
    with pytest.raises(TypeError, match="fn must be callable, got int"):
        benchmark(3)


def test_results_print_as_median_min_max() -> None:
    result = BenchmarkResult.from_samples([0.001, 0.002, 0.003, 0.004, 0.005], number=100, name="op")
    assert str(
        result
    ) == "op: 3.000 ms [1.000-5.000] (median [min-max] of 5 x 100 loops); noisy: " + "; ".join(
        result.noise_reasons
    )
    assert result.as_dict()["is_noisy"] is True
    assert format_summary([1.0, 2.0, 3.0]) == "2.000 [1.000-3.000]"


def test_three_samples_a_side_cannot_be_significant_and_say_so() -> None:
    result = compare([1.0, 1.01, 0.99], [2.0, 2.01, 1.99])
    assert result.verdict == "too few samples" and not result.significant
    assert compare([1.0, 1.01, 0.99, 1.02], [2.0, 2.01, 1.99, 2.02]).verdict == "slower"
