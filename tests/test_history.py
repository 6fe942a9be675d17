"""History across runs: a planted step is found at its run, a slow drift is flagged, pure
noise raises no false change in >= 95% of histories, and runs from another host are
never pooled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from perflab import Results
from perflab.measure.changes import detect_changes
from perflab.workbench.cli import main
from perflab.workbench.history import analyze_history, host_fingerprint, load_history

RUNS = 20


def noisy(seed: int, runs: int = RUNS, noise: float = 0.03) -> np.ndarray:
    return 100 * (1 + np.random.default_rng(seed).normal(0, noise, runs))


def test_a_planted_step_is_found_at_its_run() -> None:
    exact = 0
    for seed in range(20):
        series = noisy(seed)
        series[12:] *= 1.2
        changes = detect_changes(series)
        exact += [(c.kind, c.at) for c in changes] == [("step", 12)]
    assert exact >= 19


def test_a_slow_drift_is_flagged() -> None:
    kinds = []
    for seed in range(100):
        series = noisy(seed) * np.linspace(1, 1.25, RUNS)
        kinds.append(tuple(c.kind for c in detect_changes(series)))
    assert sum(bool(k) for k in kinds) >= 95  # found at all
    assert kinds.count(("drift",)) >= 60  # and mostly named a drift, not steps


def test_pure_noise_shows_no_change_in_at_least_95_percent_of_histories() -> None:
    false = sum(bool(detect_changes(noisy(seed))) for seed in range(200))
    assert false / 200 <= 0.05
    # A noisier machine raises the bar instead of the false-alarm rate.
    assert sum(bool(detect_changes(noisy(seed, noise=0.15))) for seed in range(100)) <= 5


def test_a_short_history_claims_nothing() -> None:
    assert detect_changes([100, 100, 200, 200]) == []
    with pytest.raises(ValueError, match="medians must be a sequence of finite numbers"):
        detect_changes([1.0, float("nan"), 2.0, 3.0, 4.0])


def metadata(host: str, run: int) -> dict:
    cpu = {"a": "AMD EPYC", "b": "Intel Xeon"}[host]
    return {
        "time": f"2026-12-{run + 1:02d}T10:00:00+00:00",
        "cpu_model": cpu,
        "cpu_count": 2,
        "memory_total_gb": 23.5,
        "python": "3.11.7",
        "packages": {"perflab": "0.1.0"},
    }


def write_run(reports: Path, host: str, run: int, throughput: float, seed: int, recommended: int) -> None:
    rng = np.random.default_rng(seed)
    folder = reports / f"202612{run + 1:02d}-100000-{host}" / "taskpool"
    folder.mkdir(parents=True)
    rows = [
        {"pool": pool, "repeat": r, "throughput": throughput * pool * rng.normal(1, 0.01)}
        for pool in (1, 4)
        for r in range(5)
    ]
    results = Results.new(
        "taskpool",
        ["pool"],
        ["throughput"],
        rows,
        metadata=metadata(host, run),
        higher_is_better={"throughput": True},
    )
    results.dump(folder / "results.json")
    summary = {
        "title": "t",
        "key_figure": "k",
        "conclusion": "c",
        "recommended": {"max_concurrent": recommended},
        # Each run could not tell 16 from 32: a move between them is within the noise.
        "decision": {
            "chosen": {"max_concurrent": recommended},
            "indistinguishable": [{"max_concurrent": 48 - recommended}],
            "pcs": 0.7,
            "settled": False,
            "runs": 10,
        },
    }
    (folder / "summary.json").write_bytes(orjson.dumps(summary))


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    folder = tmp_path / "reports"
    for run in range(10):  # host a: throughput falls 20% from run 7 on (a regression)
        write_run(
            folder,
            "a",
            run,
            100.0 * (0.8 if run >= 7 else 1.0) * (1 + 0.02 * (run % 3 - 1)),
            run,
            32 if run < 5 else 16,
        )
    for run in range(10, 16):  # host b: twice as fast hardware, no change
        write_run(folder, "b", run, 200.0 * (1 + 0.02 * (run % 3 - 1)), run, 32)
    return folder


def test_history_finds_the_regression_per_host_and_never_pools_hosts(reports: Path) -> None:
    runs = load_history(reports)
    assert len(runs) == 16 and len({r.host for r in runs}) == 2
    assert host_fingerprint(runs[0].results["taskpool"].metadata)[0] == runs[0].host
    history = analyze_history(runs)
    changes = history.changes
    host_a = runs[0].host
    assert set(changes["host"]) == {host_a}  # the faster host b is not a "step" of host a
    assert set(changes["at_run"]) == {runs[7].name}
    assert (changes["kind"] == "step").all() and changes["worse"].all()
    assert changes["change"].between(-0.25, -0.15).all()
    assert len(history.regressions()) == 2  # both pool sizes, reaching the latest run of host a
    moves = history.settings
    assert set(moves[moves["host"] == host_a]["value"]) == {"32", "16"}


def test_the_history_cli_writes_a_page_and_gates_on_regressions(
    reports: Path, tmp_path: Path, capsys
) -> None:
    page = tmp_path / "history.html"
    assert main(["history", str(reports), "--out", str(page), "--fail-on-regression", "10"]) == 1
    out = capsys.readouterr()
    assert "2 regression(s) of 10% or more" in out.err and "16 runs on 2 host(s)" in out.out
    text = page.read_text()
    assert "2 different hosts" in text and "Intel Xeon" in text and "AMD EPYC" in text
    assert "max_concurrent" in text  # the recommended setting that moved
    assert "within the noise" in text  # 32 -> 16, which each run could not tell apart
    assert len(list((tmp_path / "history-figures").glob("*.png"))) == 2
    assert main(["history", str(reports), "--out", str(page), "--fail-on-regression", "30"]) == 0
    assert main(["history", str(tmp_path / "nothing")]) == 2


def test_compare_refuses_runs_from_two_hosts_unless_asked(reports: Path, capsys) -> None:
    a = sorted(reports.iterdir())[0] / "taskpool" / "results.json"
    b = sorted(reports.iterdir())[-1] / "taskpool" / "results.json"
    assert main(["compare", str(a), str(b)]) == 2
    assert "different hosts" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--cross-host"]) == 0


def test_compare_shows_each_notebooks_decision_in_both_runs(reports: Path, capsys) -> None:
    runs = sorted(reports.iterdir())
    assert main(["compare", str(runs[0]), str(runs[1])]) == 0
    assert "taskpool: max_concurrent=32: same" in capsys.readouterr().out
    assert main(["compare", str(runs[4]), str(runs[5])]) == 0
    assert (
        "taskpool: max_concurrent=32 -> max_concurrent=16: moved (within the noise: each decision could "
        "not tell the other's choice apart)"
    ) in capsys.readouterr().out


def test_a_move_between_decisions_that_do_not_overlap_is_a_real_move() -> None:
    from perflab.workbench.findings import decision_move, move_text

    def finding(chosen: int, ties: list[int]) -> dict[str, object]:
        card = {"chosen": {"n": chosen}, "indistinguishable": [{"n": t} for t in ties]}
        return {"recommended": {"n": chosen}, "decision": card}

    moved = decision_move(finding(8, [16]), finding(32, []))
    assert moved["status"] == "moved" and moved["overlap"] is False
    assert move_text(moved) == "n=8 -> n=32: moved (the decisions' sets of ties do not overlap: a real move)"
    assert decision_move(finding(8, []), finding(8, []))["status"] == "same"
    assert decision_move({"recommended": {"n": 8}}, finding(16, []))["overlap"] is None
