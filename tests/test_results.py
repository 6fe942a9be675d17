"""The results format: raw values, metadata, versioning, no accidental overwrite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from perflab import Results
from perflab.measure.results import FORMAT_VERSION


def make(rows=None) -> Results:
    rows = rows or [
        {"pool": pool, "repeat": r, "throughput": 100.0 * pool + r, "p99_ms": 10.0 + r}
        for pool in (1, 2)
        for r in range(5)
    ]
    return Results.new("pool-sweep", ["pool"], ["throughput", "p99_ms"], rows, units={"throughput": "req/s"})


def test_metadata_is_collected_automatically() -> None:
    metadata = make().metadata
    for key in (
        "time",
        "host",
        "cpu_model",
        "cpu_count",
        "memory_total_gb",
        "os",
        "python",
        "packages",
        "event_loop",
    ):
        assert metadata[key], key
    assert "git" in metadata
    assert metadata["packages"]["perflab"]


def test_to_frame_is_tidy_with_parameters_then_repeat_then_metrics() -> None:
    frame = make().to_frame()
    assert list(frame.columns) == ["pool", "repeat", "throughput", "p99_ms"]
    assert len(frame) == 10


def test_summarize_computes_from_the_raw_values() -> None:
    summary = make().summarize()
    row = summary[(summary["pool"] == 2) & (summary["metric"] == "throughput")].iloc[0]
    assert row["median"] == 202.0 and row["min"] == 200.0 and row["max"] == 204.0
    assert row["unit"] == "req/s" and row["n"] == 5
    assert (row["ci_low"], row["ci_high"]) == (200.0, 204.0)


def test_dump_and_load_round_trip_and_numpy_values_become_numbers(tmp_path: Path) -> None:
    results = make([{"pool": np.int64(3), "repeat": 0, "throughput": np.float64(1.5), "p99_ms": 2.0}])
    path = results.dump(tmp_path / "r.json")
    loaded = Results.load(path)
    assert loaded == results
    raw = orjson.loads(path.read_bytes())
    assert raw["format"] == "perflab.results" and raw["version"] == FORMAT_VERSION
    assert raw["rows"][0] == {"pool": 3, "repeat": 0, "throughput": 1.5, "p99_ms": 2.0}


def test_dump_refuses_to_overwrite_unless_told(tmp_path: Path) -> None:
    path = make().dump(tmp_path / "r.json")
    with pytest.raises(FileExistsError, match="pass replace=True"):
        make().dump(path)
    make().dump(path, replace=True)


def test_files_from_a_newer_perflab_or_not_results_are_refused(tmp_path: Path) -> None:
    data = make().to_dict()
    newer = tmp_path / "newer.json"
    newer.write_bytes(orjson.dumps({**data, "version": FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match="written by a newer perflab"):
        Results.load(newer)
    other = tmp_path / "other.json"
    other.write_bytes(orjson.dumps({"format": "pyperf"}))
    with pytest.raises(ValueError, match="not a perflab results file"):
        Results.load(other)
    broken = tmp_path / "broken.json"
    broken.write_bytes(b"{")
    with pytest.raises(ValueError, match="not JSON"):
        Results.load(broken)


def test_rows_must_carry_every_column() -> None:
    with pytest.raises(ValueError, match=r"rows\[0\] lacks \['p99_ms'\]"):
        Results.new("x", ["pool"], ["throughput", "p99_ms"], [{"pool": 1, "repeat": 0, "throughput": 1.0}])
    with pytest.raises(ValueError, match="'repeat' is reserved"):
        Results.new("x", ["repeat"], ["t"], [])
    with pytest.raises(ValueError, match="both as parameter and metric"):
        Results.new("x", ["t"], ["t"], [])
