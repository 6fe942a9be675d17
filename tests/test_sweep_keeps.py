"""`perflab sweep` keeps what it measured: every run lands in runs.jsonl as it finishes; a
Ctrl-C after the last run (before the report is written) or a second Ctrl-C while an
interrupted sweep is saved still leaves results.json with every finished run; a function
that fails at one point (raises, calls sys.exit, returns inf, 10**400 or a metric named
`seconds`) is named with its error and the other points are kept; `--out` is checked
before the first run. Real processes and real SIGINTs for the signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from perflab import read_jsonl
from perflab.measure.sweep import RunFailed, facts_of, sweep
from perflab.workbench.cli import main

WORKLOAD = textwrap.dedent(
    """
    import math, os, signal, sys, threading, time

    CALLS = {"n": 0}

    def fine(k):
        time.sleep(0.002)
        return {"work": k * 2}

    def raises_at_two(k):
        if k == 2:
            raise ZeroDivisionError(f"k={k} divides by zero")
        return {"work": k}

    def exits_at_three(k):
        if k == 3:
            sys.exit(0)
        return {"work": k}

    def infinite_at_two(k):
        return {"work": math.inf if k == 2 else 1.0}

    def huge(k):
        return {"work": 10**400}

    def named_seconds(k):
        return {"seconds": 1.0}

    def _interrupt(delays):
        def send():
            for delay in delays:
                time.sleep(delay)
                os.kill(os.getpid(), signal.SIGINT)
        threading.Thread(target=send, daemon=True).start()

    def ctrl_c_after_the_last_run(k):
        # 3 points x (1 warm-up + 3 repeats) = 12 calls: the SIGINT lands after the last,
        # while the summary, figure and report are being made.
        CALLS["n"] += 1
        if CALLS["n"] == 12:
            _interrupt([0.05])
        return {"work": k}

    def ctrl_c_twice(k):
        CALLS["n"] += 1
        if CALLS["n"] == 8:
            _interrupt([0.0, float(os.environ["SECOND_CTRL_C_AFTER"])])
            time.sleep(1)  # the first SIGINT interrupts this run
        return {"work": k}
    """
)


@pytest.fixture
def workload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "userwork2.py").write_text(WORKLOAD)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("userwork2", None)


def run_cli(folder: Path, target: str, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "perflab.workbench.cli", "sweep", f"userwork2:{target}"]
    command += ["--grid", "k=1,2,3", "--repeat", "3", "--fixed", "--out", str(out)]
    return subprocess.run(
        command,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
    )


def saved_runs(out: Path, name: str) -> list[dict[str, object]]:
    return orjson.loads((out / name / "results.json").read_bytes())["rows"]


def test_a_ctrl_c_after_the_last_run_keeps_every_run(workload: Path) -> None:
    out = workload / "late"
    done = run_cli(workload, "ctrl_c_after_the_last_run", out)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert "interrupted; 9 finished runs saved" in done.stderr
    assert len(saved_runs(out, "ctrl_c_after_the_last_run")) == 9
    assert len(list(read_jsonl(out / "ctrl_c_after_the_last_run" / "runs.jsonl"))) == 9


@pytest.mark.parametrize("second", ["0.0", "0.002", "0.02"])
def test_a_second_ctrl_c_while_saving_keeps_what_finished(workload: Path, second: str) -> None:
    out = workload / f"twice-{second}"
    done = run_cli(workload, "ctrl_c_twice", out, SECOND_CTRL_C_AFTER=second)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    # Calls 1-3 are warm-ups, 4-7 measured; the 8th was interrupted.
    assert len(saved_runs(out, "ctrl_c_twice")) == 4
    logged = list(read_jsonl(out / "ctrl_c_twice" / "runs.jsonl"))
    assert [(r["k"], r["repeat"]) for r in logged] == [(1, 0), (2, 0), (3, 0), (1, 1)]


@pytest.mark.parametrize(
    ("target", "failing", "error"),
    [
        ("raises_at_two", "k=2", "ZeroDivisionError: k=2 divides by zero"),
        ("exits_at_three", "k=3", "it called sys.exit(0)"),
        ("infinite_at_two", "k=2", "work=inf: an infinity is not a measurement"),
    ],
)
def test_a_function_failing_at_one_point_is_named_and_the_others_are_kept(
    workload: Path, capsys: pytest.CaptureFixture[str], target: str, failing: str, error: str
) -> None:
    out = workload / target
    command = ["sweep", f"userwork2:{target}", "--grid", "k=1,2,3", "--repeat", "3", "--out", str(out)]
    assert main(command) == 1
    captured = capsys.readouterr()
    line = next(line for line in captured.err.splitlines() if f"failed at {failing}: " in line)
    assert error in line and line.endswith("(4 runs)")
    rows = saved_runs(out, target)
    assert sorted({row["k"] for row in rows}) == sorted({1, 2, 3} - {int(failing[-1])})  # type: ignore[index]
    results = orjson.loads((out / target / "results.json").read_bytes())
    failed = results["extra"]["failed_runs"]
    assert len(failed) == 4 and all(error in run["error"] for run in failed)
    assert "Failed runs" in orjson.loads((out / target / "summary.json").read_bytes())["conclusion"]


@pytest.mark.parametrize(
    ("target", "error"),
    [("huge", "too large for a float"), ("named_seconds", "a metric named 'seconds', which perflab fills")],
)
def test_a_function_that_never_measures_says_why_and_is_not_an_argument_error(
    workload: Path, capsys: pytest.CaptureFixture[str], target: str, error: str
) -> None:
    out = workload / target
    assert main(["sweep", f"userwork2:{target}", "--grid", "k=1,2", "--repeat", "2", "--out", str(out)]) == 1
    captured = capsys.readouterr().err
    assert "failed in every run" in captured and error in captured
    assert captured.count("\n") == 1  # one line, no traceback
    assert len(list(read_jsonl(out / target / "runs.jsonl"))) == 6  # each failure logged


@pytest.mark.parametrize("where", ["/proc/perflab-out", "/sys/perflab-out", "/proc/self/status"])
def test_an_out_folder_that_cannot_be_written_fails_before_the_first_run(
    workload: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    assert main(["sweep", "userwork2:fine", "--grid", "k=1", "--out", where]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perflab sweep:") and err.count("\n") == 1 and where in err


def test_the_library_sweep_records_failures_and_refuses_infinities() -> None:
    def measure(k: int) -> dict[str, float]:
        if k == 2:
            raise KeyError("missing")
        return {"x": float(k)}

    frame = sweep(measure, {"k": [1, 2, 3]}, repeat=2, warmup=0, progress=False, errors="record")
    assert sorted(set(frame["k"])) == [1, 3]
    assert facts_of(frame).failed == (
        {"point": {"k": 2}, "repeat": 0, "error": "KeyError: 'missing'"},
        {"point": {"k": 2}, "repeat": 1, "error": "KeyError: 'missing'"},
    )
    landed: list[dict[str, object]] = []

    def down_at_one(k: int) -> dict[str, float] | RunFailed:
        return RunFailed("down") if k else {"x": 1.0}

    sweep(down_at_one, {"k": [0, 1]}, repeat=1, progress=False, on_run=landed.append)
    assert landed == [  # as each run lands: warm-ups (repeat None) first, their failures too
        {"k": 1, "repeat": None, "error": "down"},
        {"k": 0, "repeat": 0, "x": 1.0},
        {"k": 1, "repeat": 0, "error": "down"},
    ]
    with pytest.raises(ValueError, match=r"fn\(\{'k': 1\}\) returned x=inf"):
        sweep(lambda k: {"x": float("inf")}, {"k": [1]}, repeat=1, warmup=0, progress=False)
