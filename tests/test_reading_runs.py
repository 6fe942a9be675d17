"""`perflab compare` and `history` read what perflab writes: a signed metric (the ratelimit
notebook's rate_error_pct) is compared by its difference with a CI, not refused; a run
folder or results.json that is missing, corrupt or hand-edited gives one line naming the
file and what is wrong; one corrupt run does not stop `history`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from test_history import write_run

from perflab import Results
from perflab.measure.analysis import compare_runs, comparison_table
from perflab.measure.stats import compare_difference
from perflab.workbench.cli import main


def signed_run(shift: float, seed: int) -> Results:
    """A rate limiter's error in percent: centred near 0, either side."""
    rng = np.random.default_rng(seed)
    rows = [
        {
            "rate": rate,
            "repeat": r,
            "rate_error_pct": shift + rng.normal(0, 0.2),
            "seconds": 1 + rng.normal(0, 0.01),
        }
        for rate in (50, 200)
        for r in range(8)
    ]
    return Results.new(
        "ratelimit", ["rate"], ["rate_error_pct", "seconds"], rows, units={"rate_error_pct": "%"}
    )


def test_a_signed_metric_is_compared_by_its_difference_with_a_ci() -> None:
    table = compare_runs(signed_run(-0.1, 1), signed_run(1.5, 2))
    signed = table[table["metric"] == "rate_error_pct"]
    assert len(signed) == 2 and signed["ratio"].isna().all()
    assert (signed["difference"] > 1.2).all() and (signed["ci_low"] > 0.8).all()
    assert set(signed["verdict"]) == {"higher"}  # no direction is known for it
    assert signed["detectable"].isna().all()  # a relative A/A effect means nothing around 0
    shown = comparison_table(table)
    assert shown[shown["metric"] == "rate_error_pct"]["change"].str.endswith("(diff)").all()
    # One metric reads one way throughout: a point whose samples all happen to be positive
    # is still compared by difference when the metric goes negative elsewhere.
    mixed = signed_run(5.0, 3)
    mixed.rows[0]["rate_error_pct"] = -1.0
    table = compare_runs(mixed, signed_run(5.0, 4))
    assert table[table["metric"] == "rate_error_pct"]["ratio"].isna().all()
    same = compare_difference([-0.2, 0.1, -0.1, 0.0, 0.2], [0.1, -0.1, 0.0, -0.2, 0.2])
    assert same.verdict == "no significant change" and same.ci95[0] < 0 < same.ci95[1]


def test_compare_on_two_runs_with_a_signed_metric_prints_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, shift, seed in (("a", 0.0, 1), ("b", 0.05, 2)):
        folder = tmp_path / name / "ratelimit"
        folder.mkdir(parents=True)
        signed_run(shift, seed).dump(folder / "results.json")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "rate_error_pct" in out and "(diff)" in out


def corrupt(folder: Path, how: str) -> Path:
    path = folder / "taskpool" / "results.json"
    data = orjson.loads(path.read_bytes())
    if how == "not json":
        path.write_bytes(path.read_bytes()[:-40])
        return path
    if how == "no rows":
        del data["rows"]
    elif how == "no parameters":
        del data["parameters"]
    elif how == "rows a dict":
        data["rows"] = {"0": data["rows"][0]}
    elif how == "parameters a string":
        data["parameters"] = "pool"
    elif how == "metric a string":
        data["rows"][3]["throughput"] = "fast"
    elif how == "unknown version":
        data["version"] = 99
    elif how == "a list":
        data = [data]
    path.write_bytes(orjson.dumps(data))
    return path


HOW = [
    "not json",
    "no rows",
    "no parameters",
    "rows a dict",
    "parameters a string",
    "metric a string",
    "unknown version",
    "a list",
]


@pytest.mark.parametrize("how", HOW)
def test_a_corrupt_or_hand_edited_results_file_gives_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    write_run(tmp_path, "a", 0, 100.0, 1, 4)
    write_run(tmp_path, "a", 1, 100.0, 2, 4)
    good, bad = sorted(tmp_path.iterdir())
    path = corrupt(bad, how)
    assert main(["compare", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err, err
    assert "Traceback" not in err


def test_a_missing_run_folder_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(tmp_path / "gone"), str(tmp_path / "gone2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gone" in err


@pytest.mark.parametrize("how", ["not json", "no rows", "metric a string", "unknown version"])
def test_one_corrupt_run_does_not_stop_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    reports = tmp_path / "reports"
    for run in range(6):
        write_run(reports, "a", run, 100.0, run, 4)
    broken = sorted(reports.iterdir())[2]
    corrupt(broken, how)
    (broken / "taskpool" / "summary.json").write_bytes(b"{")  # corrupt beside it too
    assert main(["history", str(reports)]) == 0
    captured = capsys.readouterr()
    assert f"skipped {broken.name}: " in captured.err and captured.err.count("\n") == 1
    assert "5 runs on 1 host(s)" in captured.out
