"""Bad input across the public API and the CLI: each is refused up front with the right
exception type and a message that names the argument (or the record's key, the file and
offset), never accepted to fail later or change a value without a word."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

import perflab
import perflab.measure.timing
from perflab import (
    BatchProcessor,
    BufferedWriter,
    CompressedWriter,
    MemoryMappedReader,
    PerformanceProfiler,
    Results,
    TaskPool,
    TaskPoolConfig,
    TokenBucketLimiter,
    compare,
    read_jsonl,
    sample_stats,
    summarize,
    sweep,
)
from perflab.jsonl.readers import FileTruncatedError
from perflab.workbench.cli import main

NAN, INF = float("nan"), float("inf")


def sync_sink(batch: list[Any]) -> None:
    return None


async def async_sink(batch: list[Any]) -> None:
    return None


def run(coroutine_function: Callable[[], Any]) -> Callable[[], Any]:
    return lambda: asyncio.run(coroutine_function())


def writer(tmp: Path, **options: Any) -> Callable[[], Any]:
    def make() -> None:
        BufferedWriter(tmp / "w.jsonl", **options).close()

    return make


def write_record(tmp: Path, record: Any, **options: Any) -> Callable[[], Any]:
    def go() -> None:
        out = BufferedWriter(tmp / "r.jsonl", **options)
        try:
            out.write(record)
        finally:
            out.close()

    return go


def results(**changes: Any) -> Results:
    fields = {"name": "r", "parameters": ("pool",), "metrics": ("rps",), "rows": []}
    return Results(**{**fields, **changes}, metadata={"host": "x"})


def cases(tmp: Path) -> list[tuple[str, Callable[[], Any], type[BaseException], str]]:
    plain = tmp / "plain.jsonl"
    plain.write_bytes(b'{"i": 1}\n{"i": 2}\n')
    fake_gz = tmp / "fake.jsonl.gz"
    fake_gz.write_bytes(b'{"i": 1}\n')
    zstd_file = tmp / "log.zst"
    with CompressedWriter(zstd_file, codec="zstd") as out:
        out.write({"i": 1})
    frame = pd.DataFrame({"pool": [1, 2], "repeat": [0, 0], "rps": [1.0, 2.0]})
    limiter = TokenBucketLimiter(10)
    return [
        # ---------------------------------------------------------------- TaskPool
        (
            "pool max_concurrent 0",
            lambda: TaskPoolConfig(max_concurrent=0),
            ValueError,
            "max_concurrent must be >= 1, got 0",
        ),
        (
            "pool max_concurrent bool",
            lambda: TaskPoolConfig(max_concurrent=True),
            TypeError,
            "max_concurrent must be an int",
        ),
        (
            "pool max_concurrent float",
            lambda: TaskPoolConfig(max_concurrent=2.5),
            TypeError,
            "max_concurrent must be an int",
        ),
        (
            "pool timeout negative",
            lambda: TaskPoolConfig(timeout_seconds=-1),
            ValueError,
            "timeout_seconds must be > 0",
        ),
        (
            "pool timeout nan",
            lambda: TaskPoolConfig(timeout_seconds=NAN),
            ValueError,
            "timeout_seconds must be finite",
        ),
        ("pool max_queue 0", lambda: TaskPoolConfig(max_queue=0), ValueError, "max_queue must be >= 1"),
        ("pool unknown override", lambda: TaskPool(max_concurent=3), TypeError, "max_concurent"),
        # ---------------------------------------------------------------- limiter
        ("limiter rate 0", lambda: TokenBucketLimiter(0), ValueError, "rate must be > 0"),
        ("limiter rate inf", lambda: TokenBucketLimiter(INF), ValueError, "rate must be finite"),
        ("limiter rate str", lambda: TokenBucketLimiter("10"), TypeError, "rate must be a number"),
        ("limiter burst 0.5", lambda: TokenBucketLimiter(10, 0.5), ValueError, "burst_size must be >= 1"),
        (
            "limiter acquire True",
            run(lambda: limiter.acquire(True)),
            TypeError,
            "tokens must be a number, got bool",
        ),
        ("limiter acquire 0", run(lambda: limiter.acquire(0)), ValueError, "tokens must be > 0"),
        (
            "limiter acquire > burst",
            run(lambda: limiter.acquire(50)),
            ValueError,
            "tokens must be <= burst_size",
        ),
        ("limiter try_acquire nan", lambda: limiter.try_acquire(NAN), ValueError, "tokens must be finite"),
        # ---------------------------------------------------------------- batching
        (
            "batch sync processor",
            lambda: BatchProcessor(sync_sink),
            TypeError,
            "processor must be an async callable .*sync_sink",
        ),
        (
            "batch processor None",
            lambda: BatchProcessor(None),
            TypeError,
            "processor must be an async callable",
        ),
        ("batch size 0", lambda: BatchProcessor(async_sink, 0), ValueError, "batch_size must be >= 1"),
        (
            "batch flush_interval 0",
            lambda: BatchProcessor(async_sink, flush_interval=0),
            ValueError,
            "flush_interval must be > 0",
        ),
        (
            "batch max_batch_bytes 0",
            lambda: BatchProcessor(async_sink, max_batch_bytes=0),
            ValueError,
            "max_batch_bytes must be >= 1",
        ),
        (
            "batch max_retries -1",
            lambda: BatchProcessor(async_sink, max_retries=-1),
            ValueError,
            "max_retries must be >= 0",
        ),
        (
            "batch retry_backoff nan",
            lambda: BatchProcessor(async_sink, retry_backoff=NAN),
            ValueError,
            "retry_backoff must be finite",
        ),
        # ---------------------------------------------------------------- writers
        ("writer buffer_size 0", writer(tmp, buffer_size=0), ValueError, "buffer_size must be >= 1"),
        ("writer max_writes float", writer(tmp, max_writes=1.5), TypeError, "max_writes must be an int"),
        ("writer fsync typo", writer(tmp, fsync="always"), ValueError, "fsync must be True, False"),
        ("writer append str", writer(tmp, append="yes"), TypeError, "append must be a bool"),
        ("writer path int", lambda: BufferedWriter(3), TypeError, "path must be a str or os.PathLike"),
        (
            "writer no such folder",
            lambda: BufferedWriter(tmp / "no" / "x.jsonl"),
            FileNotFoundError,
            "x.jsonl",
        ),
        ("writer NaN value", write_record(tmp, {"price": NAN}), ValueError, r"record\['price'\] is nan"),
        (
            "writer inf nested",
            write_record(tmp, {"q": [{"bid": 1.0}, {"bid": -INF}]}),
            ValueError,
            r"record\['q'\]\[1\]\['bid'\] is -inf",
        ),
        ("writer set value", write_record(tmp, {"s": {1, 2}}), TypeError, "not JSON serializable"),
        (
            "writer line with newline",
            lambda: with_writer(tmp / "l.jsonl", lambda out: out.write_line("a\nb")),
            ValueError,
            "contains a newline",
        ),
        (
            "compressed codec lz4",
            lambda: CompressedWriter(tmp / "c", codec="lz4"),
            ValueError,
            "codec must be one of",
        ),
        (
            "compressed zstd level 99",
            lambda: CompressedWriter(tmp / "c", 99, codec="zstd"),
            ValueError,
            "compression_level must be 1-22 for zstd, got 99",
        ),
        (
            "compressed gzip level -1",
            lambda: CompressedWriter(tmp / "c", -1),
            ValueError,
            "compression_level must be 0-9 for gzip",
        ),
        (
            "compressed flush_mode",
            lambda: CompressedWriter(tmp / "c", flush_mode="block"),
            ValueError,
            "flush_mode must be 'frame' or 'sync'",
        ),
        (
            "append gzip onto zstd",
            lambda: CompressedWriter(zstd_file, codec="gzip", append=True),
            ValueError,
            "cannot append gzip data to .*log.zst.*holds zstd data",
        ),
        (
            "append plain onto zstd",
            lambda: BufferedWriter(zstd_file, append=True),
            ValueError,
            "holds zstd data",
        ),
        # ---------------------------------------------------------------- readers
        (
            "reader directory",
            lambda: MemoryMappedReader(tmp),
            ValueError,
            "path must be a regular file, .* is a directory",
        ),
        (
            "reader missing",
            lambda: MemoryMappedReader(tmp / "missing.jsonl"),
            FileNotFoundError,
            "missing.jsonl",
        ),
        (
            "reader offset past end",
            lambda: with_reader(plain, lambda r: r.read(99, 1)),
            ValueError,
            "offset must be an int in 0..18",
        ),
        (
            "reader size -2",
            lambda: with_reader(plain, lambda r: r.read(0, -2)),
            ValueError,
            "size must be an int >= 0",
        ),
        (
            "reader line str",
            lambda: with_reader(plain, lambda r: r.line("1")),
            TypeError,
            "index must be an int, got str",
        ),
        (
            "reader line out of range",
            lambda: with_reader(plain, lambda r: r.line(2)),
            IndexError,
            "line index 2 out of range for 2 lines",
        ),
        (
            "reader file truncated",
            lambda: with_reader(truncated_copy(plain), lambda r: r.line(1), truncate_to=3),
            FileTruncatedError,
            "shrank from 18 to 3 bytes",
        ),
        (
            "read_jsonl .gz not gzip",
            lambda: list(read_jsonl(fake_gz)),
            ValueError,
            "named like a gzip file .* not gzip",
        ),
        ("read_jsonl directory", lambda: list(read_jsonl(tmp)), ValueError, "is a directory"),
        # ---------------------------------------------------------------- measurement
        (
            "compare negative timings",
            lambda: compare([-1.0, -1.1, -0.9], [1.0, 1.1, 0.9]),
            ValueError,
            "baseline holds negative values",
        ),
        ("compare nan", lambda: compare([1.0, NAN], [1.0, 2.0]), ValueError, "baseline must be finite"),
        ("compare empty", lambda: compare([], [1.0]), ValueError, "baseline must be a non-empty sequence"),
        (
            "compare min_effect -1",
            lambda: compare([1.0], [1.0], min_effect=-1),
            ValueError,
            "min_effect must be >= 0",
        ),
        ("compare alpha 2", lambda: compare([1.0], [1.0], alpha=2), ValueError, "alpha must be <= 1"),
        ("sample_stats empty", lambda: sample_stats([]), ValueError, "samples must be a non-empty sequence"),
        (
            "abenchmark sync fn",
            run(lambda: PerformanceProfiler().abenchmark_operation(sum, [1])),
            TypeError,
            "fn must be an async callable .*sum",
        ),
        (
            "benchmark repeat 0",
            lambda: perflab.measure.timing.benchmark(sum, [1], repeat=0),
            ValueError,
            "repeat must be >= 1",
        ),
        (
            "profiler sample_interval 0",
            lambda: PerformanceProfiler(sample_interval=0),
            ValueError,
            "sample_interval must be > 0",
        ),
        # ---------------------------------------------------------------- sweeps and results
        (
            "sweep metric named like a parameter",
            lambda: sweep(lambda pool: {"pool": 1.0}, {"pool": [1]}, progress=False),
            ValueError,
            "metric named 'pool'",
        ),
        (
            "sweep differing metrics",
            lambda: sweep(lambda pool: {"a": 1} if pool == 1 else {"b": 1}, {"pool": [1, 2]}, progress=False),
            ValueError,
            r"fn\({'pool': 2}\) returned other metrics .* missing \['a'\], extra \['b'\]",
        ),
        (
            "sweep non-number metric",
            lambda: sweep(lambda pool: {"a": "fast"}, {"pool": [1]}, progress=False),
            TypeError,
            "non-number for metric 'a'",
        ),
        ("sweep empty grid", lambda: sweep(dict, {}), ValueError, "grid must be a non-empty mapping"),
        (
            "sweep grid string",
            lambda: sweep(lambda pool: {}, {"pool": "124"}),
            TypeError,
            r"grid\['pool'\] must be a list",
        ),
        (
            "sweep repeat 0",
            lambda: sweep(lambda pool: {}, {"pool": [1]}, repeat=0),
            ValueError,
            "repeat must be >= 1",
        ),
        (
            "sweep order",
            lambda: sweep(lambda pool: {}, {"pool": [1]}, order="random"),
            ValueError,
            "order must be 'interleaved' or 'grouped'",
        ),
        (
            "results add missing metric",
            lambda: results().add({"pool": 1, "repeat": 0}),
            ValueError,
            r"row lacks \['rps'\]",
        ),
        ("results add not a mapping", lambda: results().add([1, 0, 2.0]), TypeError, "row must be a mapping"),
        (
            "results clash",
            lambda: results(metrics=("pool",)),
            ValueError,
            "names used both as parameter and metric",
        ),
        (
            "results dump to a directory",
            lambda: results().dump(tmp, replace=True),
            IsADirectoryError,
            "is a directory: give a file path",
        ),
        (
            "results dump exists",
            lambda: dump_twice(results(), tmp / "r.json"),
            FileExistsError,
            "pass replace=True",
        ),
        ("results load not JSON", lambda: Results.load(plain), ValueError, "not JSON"),
        # The second hardening round (issue 21).
        (
            "acquire Decimal tokens",
            run(lambda: TokenBucketLimiter(10).acquire(Decimal(1))),  # type: ignore[arg-type]
            TypeError,
            "tokens must be a number, got Decimal",
        ),
        (
            "acquire complex tokens",
            run(lambda: TokenBucketLimiter(10).acquire(1 + 0j)),  # type: ignore[arg-type]
            TypeError,
            "tokens must be a number, got complex",
        ),
        (
            "try_acquire Decimal tokens",
            lambda: TokenBucketLimiter(10).try_acquire(Decimal("0.5")),  # type: ignore[arg-type]
            TypeError,
            "tokens must be a number",
        ),
        (
            "reader of a /proc file",
            lambda: MemoryMappedReader("/proc/self/status"),
            ValueError,
            "'/proc/self/status' cannot be memory-mapped",
        ),
        (
            "sweep metric inf",
            lambda: sweep(lambda k: {"x": INF}, {"k": [1]}, repeat=1, warmup=0, progress=False),
            ValueError,
            r"returned x=inf: an infinity is not a measurement",
        ),
        (
            "sweep metric 10**400",
            lambda: sweep(lambda k: {"x": 10**400}, {"k": [1]}, repeat=1, warmup=0, progress=False),
            ValueError,
            "too large for a float",
        ),
        (
            "sweep errors mode",
            lambda: sweep(lambda k: {"x": 1}, {"k": [1]}, progress=False, errors="ignore"),  # type: ignore[arg-type]
            ValueError,
            "errors must be 'raise' or 'record', got 'ignore'",
        ),
        (
            "nested map",
            run(lambda: nested_map()),
            RuntimeError,
            "called from a call this pool is running",
        ),
        (
            "results load rows missing",
            lambda: Results.load(hand_edited(tmp, "rows")),
            ValueError,
            r"edited\.json: results file lacks \['rows'\]",
        ),
        (
            "results load version unknown",
            lambda: Results.load(hand_edited(tmp, "version")),
            ValueError,
            r"edited\.json: results file was written by a newer perflab",
        ),
        (
            "summarize unknown metric",
            lambda: summarize(frame, ["pool"], ["latency"]),
            (KeyError, ValueError),
            "latency",
        ),
    ]


async def nested_map() -> None:
    pool = TaskPool(max_concurrent=2)

    async def outer(i: int) -> Any:
        return await pool.map(asyncio.sleep, [0])

    await pool.map(outer, range(3))


def hand_edited(tmp: Path, field: str) -> Path:
    path = tmp / "edited.json"
    data = results(rows=[{"pool": 1, "repeat": 0, "rps": 5.0}]).to_dict()
    if field == "version":
        data["version"] = 99
    else:
        del data[field]
    path.write_bytes(orjson.dumps(data))
    return path


def truncated_copy(path: Path) -> Path:
    copy = path.with_suffix(".copy")
    copy.write_bytes(path.read_bytes())
    return copy


def with_reader(path: Path, use: Callable[[MemoryMappedReader], Any], truncate_to: int | None = None) -> Any:
    with MemoryMappedReader(path) as reader:
        if truncate_to is not None:
            os.truncate(path, truncate_to)  # a writer restarted under the reader
        return use(reader)


def with_writer(path: Path, use: Callable[[BufferedWriter], Any]) -> Any:
    with BufferedWriter(path) as out:
        return use(out)


def dump_twice(results: Results, path: Path) -> None:
    results.dump(path)
    results.dump(path)


@pytest.fixture
def table(tmp_path: Path) -> list[tuple[str, Callable[[], Any], Any, str]]:
    return cases(tmp_path)


def test_the_table_is_large(table) -> None:
    assert len(table) >= 60


def test_every_bad_input_is_refused_with_a_clear_message(table) -> None:
    failures = []
    for name, call, exception, match in table:
        try:
            with pytest.raises(exception, match=match):
                call()
        except BaseException as error:  # collect them all: one report names every miss
            failures.append(f"{name}: {type(error).__name__}: {error}")
    assert not failures, "\n".join(failures)


CLI_CASES = [
    (["gen-data", "--records", "0", "--out", "{tmp}/x.jsonl"], "--records: must be >= 1, got 0"),
    (
        ["gen-data", "--records", "ten", "--out", "{tmp}/x.jsonl"],
        "--records: must be a whole number, got 'ten'",
    ),
    (
        ["gen-data", "--records", "5", "--seed", "-1", "--out", "{tmp}/x.jsonl"],
        "--seed: must be >= 0, got -1",
    ),
    (["gen-data", "--records", "5", "--out", "{tmp}"], "is a directory: give a file name"),
    (["gen-data", "--records", "5", "--out", "{tmp}/x.jsonl.bz2"], "unknown suffix '.bz2'"),
    (["gen-data", "--records", "5", "--out", "{tmp}/no/x.jsonl"], "does not exist"),
    (["gen-data", "--records", "5", "--out", "{tmp}/existing.jsonl"], "exists: pass --force to overwrite it"),
    (["compare", "{tmp}", "{tmp}", "--min-effect", "-1"], "--min-effect: must be >= 0, got -1"),
    (
        ["compare", "{tmp}", "{tmp}", "--fail-on-regression", "nan"],
        "--fail-on-regression: must be a finite number",
    ),
    (
        ["compare", "{tmp}", "{tmp}", "--fail-on-regression", "-5"],
        "--fail-on-regression: must be >= 0, got -5",
    ),
    (["compare", "{tmp}", "{tmp}"], "holds no */results.json"),
    (["report", "--profile", "huge"], "profile must be one of ['full', 'quick'], got 'huge'"),
    (["report", "--out", "{tmp}"], "exists and is not empty: pass --force"),
    (["report", "-p", "repeat", "abc"], "parameter repeat of "),
    (["nope"], "invalid choice: 'nope'"),
    (["gen-data", "--records", "5", "--out", "/proc/perflab.jsonl"], "cannot write '/proc/perflab.jsonl'"),
    (["gen-data", "--records", "5", "--out", "/sys/perflab.jsonl"], "cannot write '/sys/perflab.jsonl'"),
    (["report", "-p", "grid", "{{[1]: 2}}"], "-p grid value '{[1]: 2}' is not a valid literal: unhashable"),
    (["report", "--out", "/proc/perflab-report", "--only", "sweep"], "/proc/perflab-report"),
    (["report", "--out", "/sys/perflab-report", "--only", "sweep"], "/sys/perflab-report"),
    (["dashboard", "--out", "/nonexistent/d.json"], "cannot write '/nonexistent/d.json'"),
    (["dashboard", "--out", "{tmp}", "--force"], "is a folder: give a file name"),
    (["sweep", "json:dumps", "--grid", "k=1", "--out", "/proc/perflab-sweep"], "cannot write there"),
    (["sweep", "json:dumps", "--grid", "k=1", "--out", "/sys/perflab-sweep"], "cannot write there"),
]


@pytest.mark.parametrize(("argv", "message"), CLI_CASES, ids=[" ".join(c[0][:3]) for c in CLI_CASES])
def test_every_bad_cli_argument_is_one_line_and_exit_2(tmp_path: Path, capsys, argv, message) -> None:
    (tmp_path / "existing.jsonl").write_bytes(b"{}\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    code = _exit_code(lambda: main([arg.format(tmp=tmp_path) for arg in argv]))
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err  # one line, no usage dump, no traceback
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def _exit_code(call: Callable[[], int]) -> int:
    try:
        return call()
    except SystemExit as exit_:
        return int(exit_.code or 0)


def test_report_parameter_hints_name_perflab_report_not_only_papermill() -> None:
    from perflab.workbench.notebook import check_list

    with pytest.raises(TypeError, match=r"perflab report reads -p values as Python literals"):
        check_list("pool_sizes", "1,2", int)
