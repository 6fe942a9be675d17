"""Each workbench notebook runs through papermill with tiny parameters and saves results;
wrong parameter types are caught in the first cells, naming the parameter."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pandas as pd
import papermill
import pytest
from papermill.exceptions import PapermillExecutionError

from perflab import Results
from perflab.workbench.observe import ServerProfile
from perflab.workbench.report import _kernel_manager_class

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
FIXTURES = Path(__file__).resolve().parent / "notebooks"

TINY = {
    "adaptive": (
        {
            "contenders": ["static:4", "aimd"],
            "phases": ["seconds=1 cap=8 latency=constant:20", "seconds=1 cap=4 latency=constant:20"],
            "rate_phase": "seconds=0.5 cap=16 latency=constant:20 rate=100 burst=5",
            "repeat": 2,
        },
        ["contender"],
        2 * 2,
        None,  # recommends a contender only when one keeps the refusal limit
    ),
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
        # A short run at a gentle arrival rate, so the larger batch keeps up even on a slow machine.
        {
            "batch_sizes": [1, 50],
            "flush_intervals": [0.01],
            "duration_s": 0.2,
            "arrival_rate": 200.0,
            "repeat": 2,
        },
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
            # The plumbing is under test, not the speed: a busy machine (two test workers,
            # steal time) once took every codec under the default 100 MB/s.
            "min_compress_mb_s": 10.0,
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
    "monitoring": (
        {
            "symbols": 120,
            "pool_size": 16,
            "server_cap": 8,
            "cycles": 6,
            "cycle_interval_s": 0.15,
            "incident_cycle": 3,
            "incident_cap": 4,
            "scrape_interval": 0.05,
        },
        ["phase"],
        None,  # one row per scrape
        None,  # recommends a pool size only when the incident calls for one
    ),
    "sweep": (
        {"grid": {"max_concurrent": [2, 8], "symbols": [40]}, "repeat": 5},
        ["max_concurrent", "symbols"],
        None,  # adaptive: as many rows as the repeats each setting took
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


def grid_of(name: str, parameters: dict, results: Results) -> dict[str, set]:
    """For each recommended setting, the values the notebook measured it at."""
    column = {c: {row[c] for row in results.rows} for c in results.parameters}
    p = parameters
    if name == "taskpool":
        return {"max_concurrent": set(p["pool_sizes"])}
    if name == "ratelimit":
        return {"rate": set(p["rates"]), "burst_size": set(p["bursts"]), "spacing": {"average", "strict"}}
    if name == "batching":
        return {"batch_size": set(p["batch_sizes"]), "flush_interval": set(p["flush_intervals"])}
    if name == "writes":
        return {"buffer_size": set(p["buffer_sizes"]), "max_writes": set(p["max_writes"])}
    if name == "compression":
        return {
            "codec": {c.partition("-")[0] for c in column["codec"]},
            "compression_level": {int(c.partition("-")[2]) for c in column["codec"]},
            "flush_mode": {"frame", "sync"},
        }
    if name == "reading":
        return {key: column["how"] for key in ("lines", "whole logs", "random access")}
    if name == "profiler":
        return {
            "max_concurrent": {p["planted_pool_size"], p["server_cap"]},
            "blocking work": {"asyncio.to_thread"},
            "log writer": {"CompressedWriter(zstd-3), buffer_size=65,536"},
        }
    if name == "sweep":
        return {"max_concurrent": {2, 8}, "symbols": {40}}
    if name == "monitoring":
        return {"max_concurrent": set(range(1, p["pool_size"] + 1))}
    if name == "adaptive":
        return {"max_concurrent": set(p["contenders"])}
    assert name == "collector"
    return {
        "pool_size": column["pool_size"],
        "rate": column["rate"],
        "batch_size": set(p["sink_batches"]),
        "codec": set(p["codecs"]),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_the_notebook_runs_with_tiny_parameters_and_saves_its_results(tmp_path: Path, name: str) -> None:
    parameters, columns, rows, recommended_key = TINY[name]
    out = execute(name, tmp_path, **parameters)
    results = Results.load(out / "results.json")
    assert list(results.parameters) == columns
    assert len(results.rows) == rows if rows is not None else len(results.rows) >= 4
    assert results.metadata["packages"]["perflab"]
    assert all(results.units.get(m) is not None for m in results.metrics)
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert recommended_key is None or recommended_key in summary["recommended"]
    assert summary["conclusion"] and summary["key_figure"]
    assert list((out / "figures").glob("*.png"))
    assert (out / "results.csv").read_text().splitlines()[0].startswith(",".join(columns) + ",repeat,")
    # Every recommended value is one the notebook measured, and the key figure's value is
    # the saved summary's.
    grid = grid_of(name, parameters, results)
    for key, value in summary["recommended"].items():
        assert value in grid[key], f"{name} recommends {key}={value!r}, not among {grid[key]}"
    key = summary["key_value"]
    saved = pd.read_csv(out / "summary.csv")
    rows_at = saved[saved["metric"] == key["metric"]]
    for column, value in key["point"].items():
        rows_at = rows_at[rows_at[column] == value]
    assert len(rows_at) == 1, (key, saved)
    assert rows_at[key["statistic"]].iloc[0] == pytest.approx(key["value"], rel=1e-9)


@pytest.mark.slow
def test_a_server_profile_from_production_sets_the_sweep(tmp_path: Path) -> None:
    profile = ServerProfile(
        job="prod",
        api="quotes",
        source="http://prometheus:9090",
        range_s=3600.0,
        end=1.8e9,
        latency="lognormal:12:60",
        latency_p50_ms=12.0,
        latency_p99_ms=60.0,
        latency_mean_ms=16.0,
        call_rate=900.0,
        answered_rate=860.0,
        rejected_share=0.02,
        rate_rejected_share=0.005,
        cap_rejected_share=0.015,
        server_rate=40.0,
        server_rate_kind="seen",
        server_burst=None,
        server_cap=3,
        server_cap_kind="seen",
        at_server_mean=3.0,
        at_server_max=4.0,
        retry_after_p50_s=1.0,
    )
    path = tmp_path / "profile.json"
    profile.save(path)
    parameters = dict(TINY["taskpool"][0], server_profile=str(path))
    out = execute("taskpool", tmp_path, **parameters)
    results = Results.load(out / "results.json")
    assert {row["latency"] for row in results.rows} == {"lognormal:12:60"}
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert "(cap 3)" in summary["conclusion"]
    # Both limits are modelled: the pool sends through a limiter under the server's 40/s
    # (one call at a time alone would make ~60/s of these 12-60 ms calls), by the headroom
    # this loop's send jitter needs with no burst.
    assert max(row["throughput"] for row in results.rows) <= 40 * 1.1
    paced = re.search(
        r"Every pool sent through a limiter at ([\d.]+)/s, ([\d.]+)% under", summary["conclusion"]
    )
    assert paced is not None, summary["conclusion"]
    assert 0 < float(paced[1]) < 40 and float(paced[2]) > 0


@pytest.mark.slow
def test_a_failing_notebook_still_removes_its_scratch_folder(tmp_path: Path) -> None:
    record = tmp_path / "scratch.txt"
    with pytest.raises(PapermillExecutionError):
        papermill.execute_notebook(
            str(FIXTURES / "scratch_then_fail.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters={"record": str(record)},
            progress_bar=False,
            kernel_manager_class=_kernel_manager_class(),
        )
    scratch = Path(record.read_text())
    assert scratch.name.startswith("perflab-fixture-")
    assert not scratch.exists()


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


def test_a_memory_scratch_folder_is_on_the_ram_backed_file_system_and_goes_away() -> None:
    from perflab.workbench.notebook import MEMORY_FS, remove_scratch, scratch_dir

    folder = scratch_dir("memtest", memory=True)
    on_disk = scratch_dir("disktest")
    assert folder.is_dir() and on_disk.is_dir()
    assert folder.parent == MEMORY_FS  # CI runs on Linux, which has /dev/shm
    assert on_disk.parent != MEMORY_FS
    remove_scratch()
    assert not folder.exists() and not on_disk.exists()
