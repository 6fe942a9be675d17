"""The realistic data generator and ``perflab gen-data``."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import orjson
import pytest

from perflab import read_jsonl
from perflab.workbench.cli import main
from perflab.workbench.dataset import generate_records, symbol_universe

ROOT = Path(__file__).resolve().parents[1]


def raw(records) -> bytes:
    return b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in records)


def test_records_are_deterministic_by_seed() -> None:
    assert list(generate_records(500, seed=3)) == list(generate_records(500, seed=3))
    assert list(generate_records(500, seed=3)) != list(generate_records(500, seed=4))
    assert len(list(generate_records(4321))) == 4321
    assert list(generate_records(0)) == []


def test_records_look_like_a_collector_log() -> None:
    records = list(generate_records(6000, seed=1))
    first = records[0]
    assert list(first) == [
        "ts", "symbol", "track", "price", "volume", "bid", "ask", "status", "request_id", "latency_ms",
    ]  # fmt: skip
    assert first["ts"].endswith("Z") and len(first["ts"]) == len("2026-11-27T14:30:00.000000Z")
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in records)
    assert {r["track"] for r in records} == {"A", "B"}
    assert len({r["symbol"] for r in records}) == 2000
    statuses = [r["status"] for r in records]
    assert 0.95 < statuses.count("ok") / len(statuses) < 0.99
    for r in records:
        assert re.fullmatch("[0-9a-f]{32}", r["request_id"])
        if r["status"] == "ok":
            assert r["bid"] < r["price"] < r["ask"] or r["bid"] <= r["price"] <= r["ask"]
        else:
            assert r["price"] is None and r["volume"] is None


def test_about_200_bytes_a_record_and_gzip_6_saves_about_74_percent() -> None:
    data = raw(generate_records(20_000, seed=0))
    assert 190 <= len(data) / 20_000 <= 210
    saved = 1 - len(zlib.compress(data, 6)) / len(data)
    assert 0.72 <= saved <= 0.76, f"gzip-6 saves {saved:.1%}"


def test_the_universe_has_distinct_ticker_like_symbols() -> None:
    symbols = symbol_universe()
    assert len(symbols) == len(set(symbols)) == 2000
    assert all(s.isalpha() and s.isupper() and 1 <= len(s) <= 5 for s in symbols)
    with pytest.raises(ValueError, match="size must be >= 1, got 0"):
        symbol_universe(0)


def test_the_committed_sample_is_what_the_generator_makes() -> None:
    sample = ROOT / "data" / "sample-3k.jsonl"
    assert sample.stat().st_size < 1 << 20
    assert sample.read_bytes() == raw(generate_records(3000, seed=0)), (
        "the generator changed: regenerate with `perflab gen-data --records 3000 --out data/sample-3k.jsonl`"
    )


@pytest.mark.parametrize("name", ["set.jsonl", "set.jsonl.gz", "set.jsonl.zst"])
def test_gen_data_writes_the_data_set(tmp_path: Path, name: str, capsys) -> None:
    out = tmp_path / name
    assert main(["gen-data", "--records", "2500", "--out", str(out), "--seed", "9", "--quiet"]) == 0
    assert list(read_jsonl(out)) == list(generate_records(2500, seed=9))
    assert "wrote 2,500 records" in capsys.readouterr().out


def test_gen_data_refuses_bad_arguments(tmp_path: Path, capsys) -> None:
    assert main(["gen-data", "--records", "5", "--out", str(tmp_path / "missing" / "x.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["gen-data", "--records", "-5", "--out", str(tmp_path / "x.jsonl")])
    assert caught.value.code == 2
    assert "must be >= 1, got -5" in capsys.readouterr().err
