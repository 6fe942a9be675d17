"""Each workbench notebook runs through papermill with tiny parameters and saves results;
wrong parameter types are caught in the first cells, naming the parameter."""

from __future__ import annotations

from pathlib import Path

import orjson
import papermill
import pytest
from papermill.exceptions import PapermillExecutionError

from perflab import Results
from perflab.workbench.report import _kernel_manager_class

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

TINY = {
    "taskpool": (
        {
            "pool_sizes": [1, 4],
            "latencies": ["constant:10"],
            "server_cap": 2,
            "duration_s": 0.05,
            "repeat": 2,
        },
        ["max_concurrent", "latency"],
        2 * 1 * 2,
        "max_concurrent",
    ),
    "ratelimit": (
        {
            "rates": [50.0, 100.0],
            "bursts": [1],
            "server_rate": 80.0,
            "duration_s": 0.1,
            "repeat": 2,
            "callers": 4,
        },
        ["rate", "burst"],
        2 * 1 * 2,
        "rate",
    ),
    "batching": (
        {"batch_sizes": [1, 10], "flush_intervals": [0.01], "duration_s": 0.1, "repeat": 2},
        ["batch_size", "flush_interval"],
        2 * 1 * 2,
        "batch_size",
    ),
    "writes": (
        {
            "records": 2000,
            "buffer_sizes": [4096, 65536],
            "max_writes": [1000],
            "aiofiles_records": 200,
            "repeat": 2,
        },
        ["buffer_size", "max_writes"],
        2 * 1 * 2,
        "buffer_size",
    ),
    "compression": (
        {
            "sample_records": 500,
            "gzip_levels": [1, 6],
            "zstd_levels": [1],
            "isal_levels": [1],
            "sample_sizes": [4096],
            "repeat": 2,
        },
        ["codec"],
        4 * 2,
        "codec",
    ),
    "reading": (
        {"file_records": [200, 1000], "lookups": 100, "repeat": 2},
        ["records", "how"],
        2 * 7 * 2,
        "random access",
    ),
    "profiler": (
        {"symbols": 200, "planted_pool_size": 64, "server_cap": 16, "blocking_every": 70, "repeat": 4},
        ["version"],
        2 * 4,
        "max_concurrent",
    ),
    "collector": (
        {
            "symbols": 200,
            "target_cycle_s": 0.5,
            "coarse_pools": [8, 16],
            "rate_shares": [0.5, 0.95],
            "sink_batches": [50],
            "codecs": ["plain", "zstd-1"],
            "confirm_repeat": 2,
        },
        ["stage", "pool_size", "rate"],
        None,  # the search decides how many settings it measures
        "pool_size",
    ),
}


def execute(name: str, tmp_path: Path, **parameters) -> Path:
    out = tmp_path / name
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"),
        str(tmp_path / f"{name}.ipynb"),
        parameters={**parameters, "output_dir": str(out)},
        cwd=str(NOTEBOOKS),
        progress_bar=False,
        kernel_manager_class=_kernel_manager_class(),
    )
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_the_notebook_runs_with_tiny_parameters_and_saves_its_results(tmp_path: Path, name: str) -> None:
    parameters, columns, rows, recommended_key = TINY[name]
    out = execute(name, tmp_path, **parameters)
    results = Results.load(out / "results.json")
    assert list(results.parameters) == columns
    assert len(results.rows) == rows if rows is not None else len(results.rows) >= 4
    assert results.metadata["packages"]["perflab"]
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert recommended_key in summary["recommended"]
    assert summary["conclusion"] and summary["key_figure"]
    assert list((out / "figures").glob("*.png"))
    assert (out / "results.csv").read_text().splitlines()[0].startswith(",".join(columns) + ",repeat,")


@pytest.mark.slow
def test_a_list_passed_as_text_is_caught_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(PapermillExecutionError) as caught:
        execute("taskpool", tmp_path, pool_sizes="[1,2]")
    assert caught.value.ename == "TypeError"
    assert "parameter pool_sizes must be a list of int, got str '[1,2]'" in caught.value.evalue
    assert "-y" in caught.value.evalue
    assert not (tmp_path / "taskpool" / "results.json").exists()


@pytest.mark.slow
def test_a_negative_size_is_refused_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(PapermillExecutionError) as caught:
        execute("batching", tmp_path, batch_sizes=[10, -1])
    assert "parameter batch_sizes values must be >= 1, got -1" in caught.value.evalue
