"""perflab report and perflab compare: a failing notebook, the index, errors before work."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from perflab import Results
from perflab.workbench.cli import main
from perflab.workbench.report import PROFILES, ReportRun, declared_parameters, run_report
from perflab.workbench.runs import load_run

from synthetic import pool_results

FIXTURES = Path(__file__).resolve().parent / "notebooks"


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ReportRun]:
    out = tmp_path_factory.mktemp("report") / "run"
    return out, run_report(notebooks_dir=FIXTURES, out=out, log=lambda *_: None)


@pytest.mark.slow
def test_a_failing_notebook_is_named_and_the_rest_still_reported(fixture_run: tuple[Path, ReportRun]) -> None:
    out, report = fixture_run
    assert not report.ok
    runs = {run.name: run for run in report.notebooks}
    assert runs["publishes_results"].status == "ok"
    failed = runs["raises_in_second_cell"]
    assert failed.status == "failed" and "raised RuntimeError: planted failure" in failed.failure
    assert failed.failure.startswith("cell ")
    index = (out / "index.html").read_text()
    assert "FAILED" in index and "planted failure" in index
    assert "<b>size</b> = 3" in index and "<b>fine</b>" in index
    for name in runs:
        assert (out / f"{name}.html").stat().st_size > 1000
        assert (out / f"{name}.ipynb").exists()
    run = orjson.loads((out / "run.json").read_bytes())
    assert [n["status"] for n in run["notebooks"]] == ["ok", "failed", "failed"]
    assert run["metadata"]["cpu_count"] >= 1 and run["profile"] == "quick"
    assert Results.load(out / "publishes_results" / "results.json").metrics == ("throughput",)


@pytest.mark.slow
def test_the_index_shows_each_main_figure_beside_its_finding(fixture_run: tuple[Path, ReportRun]) -> None:
    out, _ = fixture_run
    index = (out / "index.html").read_text()
    assert '<img src="publishes_results/figures/fixture.png"' in index
    assert index.index("fixture.png") < index.index("max 6") < index.index("<b>fine</b>")
    assert "no figure" in index  # the failing notebook published none


@pytest.mark.slow
def test_the_index_renders_in_a_real_browser(fixture_run: tuple[Path, ReportRun], tmp_path: Path) -> None:
    """Headless Chromium draws the page: the thumbnail's plot line (matplotlib's blue) is
    on screen, and the failed card's red background."""
    import matplotlib.image
    import numpy as np

    out, _ = fixture_run
    shot = screenshot(out / "index.html", tmp_path)
    pixels = matplotlib.image.imread(str(shot))[..., :3]
    assert pixels.shape[1] == 1280
    blue = np.all(np.abs(pixels - np.array([0x1F, 0x77, 0xB4]) / 255) < 0.08, axis=-1)
    assert blue.sum() > 200, "the main figure's thumbnail did not render"
    failed = np.all(np.abs(pixels - np.array([0xFD, 0xE8, 0xE8]) / 255) < 0.02, axis=-1)
    assert failed.sum() > 10_000, "the failed notebook's card is not shown"


def screenshot(page: Path, work: Path) -> Path:
    """A headless Chromium screenshot of ``page`` (make test installs Chromium in CI)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    target = work / "index.png"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={work / 'profile'}",
        "--window-size=1280,1400",
        f"--screenshot={target}",
    ]
    subprocess.run([browser, *flags, page.resolve().as_uri()], check=True, capture_output=True, timeout=60)
    return target


@pytest.mark.slow
def test_the_cli_exits_non_zero_on_failure_and_injects_parameters(tmp_path: Path, capsys) -> None:
    code = main(["report", "--notebooks", str(FIXTURES), "--out", str(tmp_path / "a")])
    assert code == 1
    assert "FAILED raises_in_second_cell" in capsys.readouterr().err
    code = main(
        [
            "report",
            "--notebooks",
            str(FIXTURES),
            "--out",
            str(tmp_path / "b"),
            "--only",
            "publishes_results",
            "-p",
            "scale",
            "3.0",
        ]
    )
    assert code == 0
    summary = orjson.loads((tmp_path / "b" / "publishes_results" / "summary.json").read_bytes())
    assert summary["key_figure"] == "max 9"
    assert "index.html" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "huge"], "profile must be one of ['full', 'quick'], got 'huge'"),
        (["--only", "nope"], "unknown notebook(s) ['nope']"),
        (["-p", "colour", "red"], "no selected notebook has the parameter(s) ['colour']"),
        (["--notebooks", "/no/such/dir"], "notebooks directory '/no/such/dir' does not exist"),
    ],
)
def test_bad_report_arguments_fail_before_anything_runs(tmp_path: Path, capsys, args, message) -> None:
    out = tmp_path / "never"
    assert main(["report", "--out", str(out), "--notebooks", str(FIXTURES), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_parameters_are_read_with_pythons_parser(tmp_path: Path, capsys) -> None:
    """A default that spans lines or holds an "=" (papermill's line reader loses both) is
    declared with its source, so -p can set it and a value of the wrong kind is refused."""
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    declared = declared_parameters(notebooks / "adaptive.ipynb")
    assert declared["rate_phase"]["default"].startswith('"seconds=3 cap=64')
    assert declared["phases"]["default"].startswith("[") and "cap=12" in declared["phases"]["default"]
    args = ["report", "--notebooks", str(notebooks), "--only", "adaptive", "--out", str(tmp_path / "x")]
    assert main([*args, "-p", "phases", "3"]) == 2
    assert "parameter phases of adaptive must be a list" in capsys.readouterr().err
    assert main([*args, "-p", "rate_phase", "1"]) == 2
    assert "parameter rate_phase of adaptive must be a str" in capsys.readouterr().err


def test_the_full_profile_is_defined_in_one_place() -> None:
    assert PROFILES["quick"] == {}
    assert PROFILES["full"]["repeat"] > 3


def write_run(folder: Path, scale: float, seed: int) -> Path:
    results = pool_results(scale, seed, pools=(1, 8), repeats=7, latency_metric="p99_ms")
    (folder / "taskpool").mkdir(parents=True)
    results.dump(folder / "taskpool" / "results.json")
    return folder


def test_compare_reports_no_change_for_the_same_code(tmp_path: Path, capsys) -> None:
    a, b = write_run(tmp_path / "a", 1.0, 1), write_run(tmp_path / "b", 1.0, 2)
    assert main(["compare", str(a), str(b), "--fail-on-regression", "5"]) == 0
    out = capsys.readouterr().out
    assert "4 comparisons, 4 (100%) no significant change" in out
    assert set(load_run(a)) == {"taskpool"}


def test_compare_fails_on_a_regression_beyond_the_threshold(tmp_path: Path, capsys) -> None:
    a, b = write_run(tmp_path / "a", 1.0, 1), write_run(tmp_path / "b", 0.7, 2)
    assert main(["compare", str(a), str(b)]) == 0  # reported, not failing, without the flag
    assert main(["compare", str(a), str(b), "--fail-on-regression", "10"]) == 1
    captured = capsys.readouterr()
    assert "slower" in captured.out and "regression(s) beyond 10%" in captured.err
    assert main(["compare", str(a), str(b), "--fail-on-regression", "50"]) == 0


def test_compare_refuses_what_is_not_a_run(tmp_path: Path, capsys) -> None:
    assert main(["compare", str(tmp_path), str(tmp_path)]) == 2
    assert "holds no */results.json" in capsys.readouterr().err


def test_the_full_profile_sets_each_parameter_to_a_value_of_its_kind() -> None:
    """A full-profile name shared by notebooks must mean the same kind of thing in each."""
    import nbformat

    from perflab.workbench.report import find_notebooks

    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    for name, path in find_notebooks(notebooks).items():
        cell = next(
            c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", [])
        )
        defaults: dict = {}
        exec(cell.source, {}, defaults)  # literals only, by the notebooks' convention
        for key, value in PROFILES["full"].items():
            if key in defaults:
                assert type(defaults[key]) is type(value), (name, key)
                if isinstance(value, list):
                    assert type(defaults[key][0]) is type(value[0]), (name, key)


def test_a_run_that_mixes_hosts_says_so_and_names_them(tmp_path: Path) -> None:
    from perflab.measure.metadata import collect_metadata
    from perflab.workbench.report import NotebookRun, write_index

    runs = [
        NotebookRun("taskpool", "ok", 1.0, {}, host="aaaa1111", host_label="EPYC, 2 CPUs"),
        NotebookRun("writes", "ok", 1.0, {}, host="bbbb2222", host_label="Xeon, 8 CPUs"),
        NotebookRun("reading", "cancelled", 0.0, {}, "cancelled (Ctrl-C) before it finished"),
    ]
    report = ReportRun(tmp_path, "quick", runs, interrupted=True)
    write_index(report, collect_metadata())
    page = report.index.read_text()
    assert "This run mixes 2 hosts: EPYC, 2 CPUs (aaaa1111); Xeon, 8 CPUs (bbbb2222)" in page
    assert "on Xeon, 8 CPUs" in page and "CANCELLED" in page and "Interrupted (Ctrl-C)" in page
    assert not report.ok
    one_host = ReportRun(tmp_path, "quick", runs[:1])
    write_index(one_host, collect_metadata())
    assert "This run mixes" not in one_host.index.read_text() and one_host.ok
