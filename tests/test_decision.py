"""decide() and UntilDecided on synthetic sweeps with a known truth (no timing)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from perflab.measure.decision import Constraint, CostOrder, Objective, UntilDecided, decide
from perflab.measure.sweep import facts_of, sweep

POOLS = [1, 2, 4, 8, 16, 32]
# 4 is the trap: cheaper, and 12% slower than the best feasible (outside the 5% zone); 8
# and 16 are tied; 32 is the fastest but past the server's cap.
SECONDS = {1: 4.0, 2: 2.0, 4: 1.12, 8: 1.0, 16: 1.0, 32: 0.97}


def true_seconds(pool: int) -> float:
    return SECONDS[pool]


def true_rejections(pool: int) -> float:
    return 0.0 if pool <= 16 else 2.0  # the server's cap: 32 draws 429s


def synthetic(seed: int, repeats: int = 5, noise: float = 0.08) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(repeats):
        common = rng.normal(0, noise / 2)  # what a repeat shares (machine state, draws)
        for pool in POOLS:
            seconds = true_seconds(pool) * float(np.exp(common + rng.normal(0, noise)))
            rejected = float(rng.poisson(true_rejections(pool)))
            rows.append({"pool": pool, "repeat": r, "seconds": seconds, "rejected": rejected})
    return pd.DataFrame(rows)


def correct(chosen: dict[str, Any] | None, zone: float = 0.05) -> bool:
    if chosen is None:
        return False
    pool = chosen["pool"]
    best = min(true_seconds(p) for p in POOLS if true_rejections(p) == 0)
    return true_rejections(pool) == 0 and true_seconds(pool) <= best * (1 + zone)


def sequential(seed: int, noise: float = 0.08) -> Any:
    """A sweep whose repeats follow the decision (at most 20 a setting)."""
    rng = np.random.default_rng(seed)
    shared: dict[int, float] = {}

    def measure(pool: int, seed: int) -> dict[str, float]:
        common = shared.setdefault(seed, rng.normal(0, noise / 2))
        return {
            "seconds": true_seconds(pool) * float(np.exp(common + rng.normal(0, noise))),
            "rejected": float(rng.poisson(true_rejections(pool))),
        }

    rule = UntilDecided("seconds", ["rejected==0"], min_repeat=3)
    frame = sweep(
        measure, {"pool": POOLS}, repeat=20, warmup=0, progress=False, seed_param="seed", adaptive=rule
    )
    return facts_of(frame)


def test_over_200_seeded_sweeps_the_decision_is_feasible_and_inside_the_zone() -> None:
    facts = [sequential(seed) for seed in range(200)]
    decisions = [f.decision for f in facts]
    right = sum(correct(d.chosen) for d in decisions)
    assert right >= 190, f"{right} of 200 correct"
    # The fastest pool draws rejections (past the server's cap): never recommended.
    assert not any(d.chosen == {"pool": 32} for d in decisions)
    # Repeats went where the decision was open: far fewer runs than 20 of everything.
    runs = [sum(f.repeats.values()) for f in facts]
    assert np.mean(runs) < 0.6 * 20 * len(POOLS)
    # The far-off settings stopped at the minimum.
    assert all(f.repeats["pool=1"] == 3 for f in facts)


def test_with_fixed_repeats_a_settled_decision_is_right_and_an_unsettled_one_says_so() -> None:
    decisions = [
        decide(synthetic(seed, noise=0.04), ["pool"], objective="seconds", constraints=["rejected==0"])
        for seed in range(200)
    ]
    settled = [d for d in decisions if d.settled]
    assert len(settled) >= 20
    assert sum(correct(d.chosen) for d in settled) >= 0.95 * len(settled)
    assert not any(d.chosen == {"pool": 32} for d in decisions)
    for d in decisions:
        if not d.settled:
            assert d.pcs < 0.95 and "not settled" in d.text()


def test_a_tie_resolves_to_the_cheaper_setting() -> None:
    # 8, 16 and 32 take the same time; 32 is infeasible, and 8 is cheaper than 16.
    decisions = [
        decide(
            synthetic(seed, repeats=8, noise=0.02), ["pool"], objective="seconds", constraints=["rejected==0"]
        )
        for seed in range(50)
    ]
    assert all(d.chosen == {"pool": 8} for d in decisions)
    assert all({"pool": 16} in d.indistinguishable for d in decisions)


def test_the_same_data_gives_the_same_decision() -> None:
    frame = synthetic(7)
    first = decide(frame, ["pool"], objective="seconds", constraints=["rejected==0"])
    again = decide(
        frame.sample(frac=1, random_state=3), ["pool"], objective="seconds", constraints=["rejected==0"]
    )
    assert first.as_dict() == again.as_dict()


def test_one_rejection_in_one_repeat_makes_a_setting_infeasible() -> None:
    frame = synthetic(1, noise=0.01)
    frame.loc[(frame["pool"] == 8) & (frame["repeat"] == 3), "rejected"] = 1
    decision = decide(frame, ["pool"], objective="seconds", constraints=["rejected==0"])
    verdict = decision.verdict({"pool": 8})
    assert verdict.status == "infeasible"
    assert "rejected 1 in a repeat" in verdict.reason
    assert decision.chosen == {"pool": 16}
    assert "Ruled out by the limits: pool=8: rejected 1 in a repeat (needs rejected == 0)" in decision.text()


def test_nothing_feasible_recommends_nothing_and_says_what_each_broke() -> None:
    frame = synthetic(2)
    frame["rejected"] += 1
    decision = decide(frame, ["pool"], objective="seconds", constraints=["rejected==0"])
    assert decision.chosen is None
    assert decision.settled
    assert decision.text().startswith("No recommendation: no setting meets rejected == 0")
    assert all(v.status == "infeasible" for v in decision.settings)


def test_a_constraint_on_a_median_is_judged_with_its_uncertainty() -> None:
    rows = []
    for r in range(6):
        rows += [
            {"n": 1, "repeat": r, "seconds": 1.0, "p99_ms": 40.0 + r},  # always met
            {"n": 2, "repeat": r, "seconds": 0.5, "p99_ms": [45, 55][r % 2]},  # straddles 50
            {"n": 3, "repeat": r, "seconds": 0.4, "p99_ms": 80.0},  # always broken
        ]
    decision = decide(pd.DataFrame(rows), ["n"], objective="seconds", constraints=["p99_ms<=50"])
    statuses = [v.status for v in decision.settings]
    assert statuses == ["chosen", "infeasible", "infeasible"]
    # Cheaper first: n=2 is dearer than the chosen n=1, so unclear is not open; ask for n=3 first.
    by_cost = decide(
        pd.DataFrame(rows), ["n"], objective="seconds", constraints=["p99_ms<=50"], cheaper=["n:desc"]
    )
    assert [v.status for v in by_cost.settings] == ["infeasible", "unclear", "chosen"]
    assert not by_cost.settled
    assert {"n": 2} in by_cost.open_points()


def test_a_higher_is_better_objective_and_a_cost_order_by_another_parameter() -> None:
    rows = []
    for r in range(5):
        for level in (1, 3, 9):
            for workers in (1, 2):
                rows.append(
                    {
                        "level": level,
                        "workers": workers,
                        "repeat": r,
                        "mb_s": 100.0 / level * workers + r * 0.01,
                    }
                )
    decision = decide(
        pd.DataFrame(rows),
        ["level", "workers"],
        objective="mb_s:max",
        cheaper=["workers:asc", "level:desc"],
    )
    # Best is level 1 with 2 workers (200 MB/s); nothing with 1 worker comes within 5%.
    assert decision.chosen == {"level": 1, "workers": 2}
    worst = decision.verdict({"level": 9, "workers": 1})
    assert worst.status == "worse"
    assert worst.change == pytest.approx(100 / 9 / 200 - 1, rel=0.01)  # 94% lower than the chosen


def test_text_values_are_cheaper_in_the_order_the_sweep_listed_them() -> None:
    rows = [
        {"codec": codec, "repeat": r, "seconds": 1.0}
        for r in range(4)
        for codec in ("zstd-1", "gzip-6", "none")
    ]
    decision = decide(pd.DataFrame(rows), ["codec"], objective="seconds")
    assert [v.point["codec"] for v in decision.settings] == ["zstd-1", "gzip-6", "none"]
    assert decision.chosen == {"codec": "zstd-1"}
    assert decision.indistinguishable == ({"codec": "gzip-6"}, {"codec": "none"})


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda f: decide(f, ["pool"], objective="nope"), "no column 'nope'"),
        (lambda f: decide(f, ["pool"], objective="seconds:up"), "direction must be 'min' or 'max'"),
        (
            lambda f: decide(f, ["pool"], objective="seconds", constraints=["rejected = 0"]),
            "METRIC OP NUMBER",
        ),
        (lambda f: decide(f, ["pool"], objective="seconds", constraints=["rejected==x"]), "not a number"),
        (lambda f: decide(f, ["pool"], objective="seconds", constraints="rejected==0"), "must be a list"),
        (lambda f: decide(f, ["pool"], objective="seconds", cheaper=["size"]), "neither a parameter"),
        (lambda f: decide(f, ["pool"], objective="seconds", cheaper=["pool:up"]), "'asc' or 'desc'"),
        (lambda f: decide(f, ["pool"], objective="seconds", zone=2), "zone"),
        (lambda f: decide(f, ["pool"], objective="seconds", confidence=1.0), "confidence"),
        (lambda f: decide(f.iloc[:0], ["pool"], objective="seconds"), "no rows"),
        (lambda f: UntilDecided("seconds", min_repeat=1), "min_repeat"),
    ],
)
def test_bad_arguments_are_named(call: Any, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        call(synthetic(0))


def test_parsing_round_trips() -> None:
    assert Objective.parse("throughput:max") == Objective("throughput", "max")
    assert str(Objective.parse("seconds")) == "seconds:min"
    assert Constraint.parse(" p99_ms <= 50 ") == Constraint("p99_ms", "<=", 50.0)
    assert str(Constraint.parse("rejected==0")) == "rejected == 0"
    assert CostOrder.parse("level:desc") == CostOrder("level", ascending=False)


def test_scenarios_get_a_decision_each_and_a_constraint_may_name_a_parameter() -> None:
    rng = np.random.default_rng(11)

    def measure(pool: int, latency: str, seed: int) -> dict[str, float]:
        # Slow calls need more workers: the knee is at 4 (fast) and at 16 (slow).
        knee = 4 if latency == "fast" else 16
        return {"throughput": min(pool, knee) * 100.0 * float(np.exp(rng.normal(0, 0.02)))}

    rule = UntilDecided("throughput:max", [f"pool<={16}"], by=["latency"], min_repeat=3)
    frame = sweep(
        measure,
        {"pool": [1, 4, 16, 32], "latency": ["fast", "slow"]},
        repeat=10,
        warmup=0,
        progress=False,
        seed_param="seed",
        adaptive=rule,
    )
    decisions = facts_of(frame).decisions
    assert list(decisions) == ["latency=fast", "latency=slow"]
    assert decisions["latency=fast"].chosen == {"pool": 4}
    assert decisions["latency=slow"].chosen == {"pool": 16}
    assert decisions["latency=slow"].scenario == {"latency": "slow"}
    # 32 is as fast as 16 on slow calls, but past the limit named on the parameter.
    assert decisions["latency=slow"].verdict({"pool": 32}).status == "infeasible"
    assert facts_of(frame).decision is None  # several: ask for them by scenario
    with pytest.raises(ValueError, match="use decisions"):
        rule.decide(frame, ["pool", "latency"])


def test_focus_follows_only_the_named_scenario() -> None:
    rng = np.random.default_rng(5)

    def measure(pool: int, latency: str, seed: int) -> dict[str, float]:
        # Noisy and tied: without a focus both scenarios would take repeats up to 8.
        return {"throughput": 100.0 * float(np.exp(rng.normal(0, 0.2)))}

    rule = UntilDecided("throughput:max", by=["latency"], focus={"latency": "slow"}, min_repeat=3)
    frame = sweep(
        measure,
        {"pool": [1, 2, 4], "latency": ["fast", "slow"]},
        repeat=8,
        warmup=0,
        progress=False,
        seed_param="seed",
        adaptive=rule,
    )
    counts = frame.groupby("latency").size()
    assert counts["fast"] == 3 * 3  # decided on min_repeat alone
    assert counts["slow"] > 3 * 3
    assert set(facts_of(frame).decisions) == {"latency=fast", "latency=slow"}
    with pytest.raises(ValueError, match="focus names 'pool'"):
        UntilDecided("throughput:max", by=["latency"], focus={"pool": 1})
