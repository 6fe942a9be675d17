"""The I/O experiments behind the writing, compression and reading notebooks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from perflab import read_jsonl
from perflab.workbench.dataset import generate_records
from perflab.workbench.io_experiments import (
    BASELINES,
    READ_WAYS,
    aiofiles_baseline,
    codec_experiment,
    flush_mode_experiment,
    line_chunks,
    read_experiment,
    sample_savings,
    serialize,
    write_baseline,
    write_experiment,
)

RECORDS = list(generate_records(3000, seed=2))
RAW = serialize(RECORDS)


def test_write_experiment_writes_the_records_and_counts_its_write_calls(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    metrics = write_experiment(RECORDS, target, buffer_size=65536, max_writes=10**9)
    assert list(read_jsonl(target)) == RECORDS
    assert target.read_bytes() == RAW
    flushes = -(-len(RAW) // 65536)  # a flush per 64 KiB reached, plus the rest at close
    assert flushes - 1 <= metrics["write_calls"] <= flushes + 1
    assert metrics["mb_per_s"] > 0 and metrics["records_per_s"] > 0
    assert 0 < metrics["of_floor"] < 100  # the floor ran in the same run; the file is the writer's


def test_write_experiment_rounds_pair_floor_and_writer_and_keep_the_fastest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import perflab.workbench.io_experiments as io_experiments

    target = tmp_path / "out.jsonl"
    # A fake clock: the floor takes 1, 2, 3 s in its rounds, the writer 4, 2, 8 s.
    ticks = iter([0, 1, 10, 14, 20, 22, 30, 32, 40, 43, 50, 58])
    monkeypatch.setattr(io_experiments, "_clock", lambda: float(next(ticks)))
    metrics = write_experiment(RECORDS, target, buffer_size=65536, max_writes=10**9, rounds=3)
    assert target.read_bytes() == RAW
    assert metrics["seconds"] == 2.0  # the fastest writer round
    assert metrics["of_floor"] == 0.5  # the fastest floor (1 s) over it
    with pytest.raises(ValueError, match="rounds"):
        write_experiment(RECORDS, target, buffer_size=65536, max_writes=10**9, rounds=0)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_writes_the_same_records(tmp_path: Path, name: str) -> None:
    target = tmp_path / "out.jsonl"
    write_baseline(name, RECORDS, target)
    assert list(read_jsonl(target)) == RECORDS


def test_list_join_and_aiofiles_baselines(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    write_baseline("list + join", RECORDS, target, chunk=4096)
    assert target.read_bytes() == RAW
    for chunked in (False, True):
        asyncio.run(aiofiles_baseline(RECORDS[:300], target, chunked=chunked))
        assert list(read_jsonl(target)) == RECORDS[:300]
    with pytest.raises(ValueError, match="name must be one of"):
        write_baseline("mmap", RECORDS, target)


def test_line_chunks_cut_whole_lines_of_at_least_the_size() -> None:
    chunks = line_chunks(RAW, 10_000)
    assert b"".join(chunks) == RAW
    assert all(chunk.endswith(b"\n") for chunk in chunks)
    assert all(len(chunk) >= 10_000 for chunk in chunks[:-1])


@pytest.mark.parametrize("codec", ["gzip-1", "gzip-9", "zstd-1", "zstd-19", "isal-0"])
def test_codec_experiment_round_trips_and_reports_ratio_and_speed(codec: str) -> None:
    name, _, level = codec.partition("-")
    metrics = codec_experiment(RAW, codec=name, level=int(level), chunk=65536)
    assert 0 < metrics["ratio"] < 0.5
    assert metrics["saved_pct"] == pytest.approx((1 - metrics["ratio"]) * 100)
    assert metrics["compress_mb_s"] > 0 and metrics["decompress_mb_s"] > 0
    with pytest.raises(ValueError, match="must be 0-9 for gzip, got 12"):
        codec_experiment(RAW, codec="gzip", level=12)


def test_a_frame_per_flush_costs_some_ratio_against_one_stream(tmp_path: Path) -> None:
    ratios = {
        mode: flush_mode_experiment(
            RAW, tmp_path / mode, codec="zstd", level=3, mode=mode, buffer_size=16384
        )["ratio"]
        for mode in ("frame", "sync", "stream")
    }
    assert ratios["stream"] < ratios["frame"]
    for mode in ("frame", "sync", "stream"):
        assert list(read_jsonl(tmp_path / mode)) == RECORDS


def test_small_samples_promise_a_different_saving() -> None:
    small = sample_savings(RAW, size=4096, windows=10)
    assert len(small) == 10 and all(50 < s < 90 for s in small)


@pytest.mark.parametrize("how", READ_WAYS)
def test_every_way_of_reading_runs(tmp_path: Path, how: str) -> None:
    target = tmp_path / "in.jsonl"
    target.write_bytes(RAW)
    metrics = read_experiment(target, how=how, lookups=100)
    assert metrics["per_s"] > 0 and metrics["seconds"] > 0


def test_an_unknown_way_of_reading_is_refused(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(RAW)
    with pytest.raises(ValueError, match="how must be one of"):
        read_experiment(tmp_path / "in.jsonl", how="telepathy")
