"""Sweeps and reports on a real Dask cluster: worker processes on this machine
(``distributed.LocalCluster`` and ``Nanny`` workers), real SIGKILLs, real SIGINTs."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import orjson
import pytest
from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

from perflab import summarize
from perflab.measure.analysis import host_ratios
from perflab.measure.cluster import Cluster
from perflab.measure.metadata import HOST_TAG_VARIABLE, this_host
from perflab.measure.results import Results
from perflab.measure.sweep import Adaptive, asweep, facts_of, sweep
from perflab.workbench.report import run_report

pytestmark = pytest.mark.timeout(240)

FIXTURES = Path(__file__).parent / "notebooks"


@pytest.fixture(scope="module")
def two_workers() -> Iterator[Cluster]:
    with Cluster("local:2") as cluster:
        yield cluster


def deterministic(size: int, codec: str, seed: int) -> dict[str, float]:
    """A measurement whose numbers depend only on its arguments."""
    return {"seconds": size / 1000 + len(codec) / 100 + seed / 10_000, "ratio": size / (seed + 1)}


def test_a_cluster_sweep_has_the_rows_of_a_local_one(two_workers: Cluster) -> None:
    grid = {"size": [1, 10, 100], "codec": ["zstd", "gzip"]}
    options = {"repeat": 4, "progress": False, "seed_param": "seed"}
    local = sweep(deterministic, grid, **options)
    remote = sweep(deterministic, grid, **options, cluster=two_workers)
    assert list(remote.columns) == ["size", "codec", "repeat", "host", "seconds", "ratio"]
    assert remote.drop(columns="host").equals(local)  # same rows, same order, same values
    me, label = this_host()  # the workers run on this machine
    assert set(remote["host"]) == {me}
    assert facts_of(remote).hosts == {me: label}
    assert facts_of(remote).missing == ()
    # Adaptive repeats take the same decisions from the same numbers.
    rule = Adaptive("seconds", min_repeat=2, precision=0.5)
    adaptive_local = sweep(deterministic, grid, **options, adaptive=rule)
    adaptive_remote = sweep(deterministic, grid, **options, adaptive=rule, cluster=two_workers)
    assert facts_of(adaptive_remote).repeats == facts_of(adaptive_local).repeats
    assert adaptive_remote.drop(columns="host").equals(adaptive_local)


def timed_interval(point: int, seed: int) -> dict[str, float]:
    """Sleep a little and say when and in which process: the instrument for overlaps."""
    started = time.time()
    time.sleep(0.05)
    return {"pid": os.getpid(), "started": started, "ended": time.time()}


def overlapping(intervals: list[tuple[float, float]]) -> int:
    ordered = sorted(intervals)
    return sum(1 for (_, end), (start, _) in zip(ordered, ordered[1:], strict=False) if start < end)


def test_a_bench_worker_never_measures_two_points_at_once() -> None:
    """Workers with 3 threads each: without the BENCH resource they run 3 tasks at once
    (the control), with it never more than one measurement per worker."""
    with LocalCluster(
        n_workers=2, threads_per_worker=3, resources={"BENCH": 1}, dashboard_address=":0"
    ) as local:
        with Cluster(local.scheduler_address) as cluster:
            frame = sweep(timed_interval, {"point": list(range(6))}, repeat=4, seed_param="seed",
                          progress=False, cluster=cluster)  # fmt: skip
            control = cluster.client.gather(
                cluster.client.map(timed_interval, range(24), [0] * 24, pure=False)
            )
    by_worker: dict[int, list[tuple[float, float]]] = {}
    for row in frame.itertuples():
        by_worker.setdefault(int(row.pid), []).append((row.started, row.ended))
    assert len(by_worker) == 2, "both workers measured"
    assert all(overlapping(intervals) == 0 for intervals in by_worker.values())
    unrestricted: dict[int, list[tuple[float, float]]] = {}
    for row in control:
        unrestricted.setdefault(int(row["pid"]), []).append((row["started"], row["ended"]))
    assert sum(overlapping(intervals) for intervals in unrestricted.values()) > 0, "the control overlaps"


def dies_once(point: int, seed: int, marker: str) -> dict[str, float]:
    """SIGKILL its own worker the first time it measures point 2, repeat 1."""
    if point == 2 and seed == 1 and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.01)
    return {"value": point * 10 + seed, "pid": os.getpid()}


def always_dies(point: int, seed: int) -> dict[str, float]:
    if point == 3 and seed == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"value": point * 10 + seed}


def runs_of(frame: object) -> list[tuple[int, int]]:
    return sorted(zip(frame["point"], frame["repeat"], strict=True))  # type: ignore[index]


def test_a_worker_killed_mid_sweep_loses_nothing_but_its_point(tmp_path: Path) -> None:
    marker = str(tmp_path / "killed")
    grid = {"point": [1, 2, 3, 4]}
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), Cluster("local:2") as cluster:
        frame = sweep(
            lambda point, seed: dies_once(point, seed, marker),
            grid,
            repeat=3,
            seed_param="seed",
            progress=False,
            cluster=cluster,
        )
        killed = int(Path(marker).read_text())
        rerun = frame[(frame["point"] == 2) & (frame["repeat"] == 1)]
        assert rerun["pid"].tolist() != [killed], "the killed worker's run was measured again elsewhere"
        assert facts_of(frame).missing == ()
        assert runs_of(frame) == [(p, r) for p in (1, 2, 3, 4) for r in range(3)]
        assert list(frame["value"]) == [p * 10 + r for r in range(3) for p in (1, 2, 3, 4)]

        # A run that kills every worker it lands on is given up, named, and the rest kept.
        options = {"repeat": 2, "seed_param": "seed", "warmup": 0, "progress": False}
        frame = sweep(always_dies, grid, **options, cluster=cluster)
    missing = facts_of(frame).missing
    assert [(m["point"], m["repeat"]) for m in missing] == [({"point": 3}, 0)]
    assert missing[0]["error"].startswith("2 workers died measuring it")  # allowed-failures 1, + 1
    assert runs_of(frame) == [(p, r) for p in (1, 2, 3, 4) for r in range(2) if (p, r) != (3, 0)]


def tagged_speed(point: int) -> dict[str, float]:
    """Host "b" is twice as slow as host "a" at every point."""
    slow = 2.0 if os.environ.get(HOST_TAG_VARIABLE) == "b" else 1.0
    return {"seconds": slow * point}


@pytest.fixture(scope="module")
def two_hosts() -> Iterator[Cluster]:
    """Two workers that fingerprint as different hosts (the host tag)."""
    worker = {"nthreads": 1, "resources": {"BENCH": 1}}
    workers = {
        tag: {"cls": Nanny, "options": {**worker, "env": {HOST_TAG_VARIABLE: tag}}} for tag in ("a", "b")
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    with SpecCluster(workers=workers, scheduler=scheduler) as spec:
        with Cluster(spec.scheduler_address, spread=True) as cluster:
            yield cluster


def test_hosts_are_told_apart_never_pooled_and_combined_by_ratios(two_hosts: Cluster) -> None:
    frame = sweep(tagged_speed, {"point": [1, 2, 4]}, repeat=4, progress=False, cluster=two_hosts)
    hosts = facts_of(frame).hosts
    assert len(hosts) == 2 and sorted(label[-5:] for label in hosts.values()) == ["tag a", "tag b"]
    # Spread: every point measured on both hosts, two repeats each.
    assert (frame.groupby(["point", "host"]).size() == 2).all()
    assert frame.groupby("point")["host"].nunique().eq(2).all()
    summary = summarize(frame, ["point"])
    assert len(summary) == 3 * 2  # a row per point and host: never pooled
    medians = summary.pivot(index="point", columns="host", values="median")
    assert sorted(medians.loc[4]) == [4.0, 8.0]
    ratios = host_ratios(frame, ["point"], "seconds", {"point": 1}).set_index("point")
    assert ratios["ratio"].tolist() == pytest.approx([1.0, 2.0, 4.0])
    assert (ratios["lowest"] == ratios["highest"]).all() and (ratios["hosts"] == 2).all()
    results = Results.from_frame(frame, "tagged", ["point"])
    assert results.hosts == hosts
    again = Results.from_dict(results.to_dict())
    assert again.to_frame().equals(results.to_frame()) and len(again.summarize()) == 6


def test_perflab_sweep_on_a_cluster_writes_the_files_of_a_local_run(tmp_path: Path) -> None:
    (tmp_path / "mywork.py").write_text(
        "import time\n\ndef fetch(max_concurrent):\n    time.sleep(0.002 * max_concurrent)\n"
        "    return {'ok_share': 1.0}\n"
    )
    outs = {}
    for how, extra in (("local", []), ("cluster", ["--cluster", "local:2"])):
        outs[how] = tmp_path / how
        done = subprocess.run(
            [sys.executable, "-m", "perflab.workbench.cli", "sweep", "mywork:fetch",
             "--grid", "max_concurrent=1,4", "--repeat", "3", "--fixed", "--out", str(outs[how]), *extra],
            cwd=tmp_path, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    files = {how: listing(out) for how, out in outs.items()}
    assert files["cluster"] == files["local"]
    local, remote = (Results.load(outs[how] / "fetch" / "results.json") for how in ("local", "cluster"))
    assert remote.parameters == local.parameters and remote.metrics == local.metrics
    assert len(remote.rows) == len(local.rows) == 6 and list(remote.hosts) == [this_host()[0]]


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def test_ctrl_c_cancels_the_remaining_runs_and_saves_those_that_finished(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(
        "import os, time\n\ndef fetch(size):\n    time.sleep(0.3)\n"
        "    with open('done.log', 'a') as log:\n        log.write(f'{size}\\n')\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "perflab.workbench.cli", "sweep", "slow:fetch", "--grid", "size=1,2,3,4",
         "--repeat", "10", "--fixed", "--out", str(tmp_path / "out"), "--cluster", "local:2"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
    )  # fmt: skip
    deadline = time.monotonic() + 120
    log = tmp_path / "done.log"
    while (not log.exists() or len(log.read_text().split()) < 8) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.1)
    early = len(log.read_text().split())  # the 4 warm-ups (one per point) are among them
    time.sleep(2)  # ample time for those runs' results to reach the client
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr, stderr
    saved = Results.load(tmp_path / "out" / "fetch" / "results.json")
    finished = len(log.read_text().split())
    # Every run saved finished, and the runs done well before Ctrl-C were saved; runs
    # finishing while the client shut down may be unsaved.
    assert early - 4 <= len(saved.rows) <= finished < 4 * (10 + 1)
    assert saved.extra["interrupted"] is True


def test_a_report_on_a_cluster_writes_the_files_of_a_local_run(tmp_path: Path, two_workers: Cluster) -> None:
    quiet = {"log": lambda *_: None, "notebooks_dir": FIXTURES}
    local = run_report(out=tmp_path / "local", **quiet)
    remote = run_report(out=tmp_path / "cluster", cluster=two_workers, **quiet)
    assert listing(remote.directory) == listing(local.directory)
    assert [(r.name, r.status, r.failure) for r in remote.notebooks] == [
        (r.name, r.status, r.failure) for r in local.notebooks
    ]
    assert {r.host for r in remote.notebooks} == {this_host()[0]}
    assert "This run mixes" not in remote.index.read_text()


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("local:0", "needs N >= 1"),
        ("local", "must be 'local:N'"),
        ("localhost:8786", "must be 'local:N'"),
        (8786, "must be 'local:N'"),
    ],
)
def test_a_bad_address_is_refused_naming_the_argument(address: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"address {message}" if message.startswith("must") else message):
        Cluster(address)  # type: ignore[arg-type]


def test_a_cluster_without_bench_workers_is_refused_instead_of_waiting_forever() -> None:
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as plain:
        with pytest.raises(ValueError, match="no worker .* declares the BENCH resource: start workers with"):
            Cluster(plain.scheduler_address, connect_timeout=10).start()


def test_the_cli_names_a_bad_cluster_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from perflab.workbench.cli import main

    assert main(["sweep", "x:y", "--grid", "a=1", "--cluster", "tcp://h:1"]) == 2
    assert "--cluster takes local:N" in capsys.readouterr().err
    assert main(["sweep", "x:y", "--grid", "a=1", "--spread"]) == 2
    assert "--spread needs a cluster" in capsys.readouterr().err
    assert main(["report", "--scheduler", "local:2"]) == 2
    assert "--scheduler takes a scheduler address" in capsys.readouterr().err


def test_ctrl_c_during_a_report_on_a_cluster_keeps_the_finished_notebooks(tmp_path: Path) -> None:
    import nbformat

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    shutil.copy(FIXTURES / "publishes_results.ipynb", notebooks / "a_quick.ipynb")
    slow = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time\ntime.sleep(120)")])
    slow.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(slow, str(notebooks / "z_slow.ipynb"))
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "perflab.workbench.cli", "report", "--notebooks", str(notebooks),
         "--out", str(out), "--cluster", "local:1"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "a_quick" / "summary.json").exists() and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.1)
    time.sleep(1.0)  # the slow notebook is running now
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "CANCELLED z_slow" in stderr
    page = (out / "index.html").read_text()
    assert "Interrupted (Ctrl-C)" in page and "CANCELLED" in page
    run = orjson.loads((out / "run.json").read_bytes())
    statuses = [(n["name"], n["status"]) for n in run["notebooks"]]
    assert statuses == [("a_quick", "ok"), ("z_slow", "cancelled")]
    assert (out / "a_quick" / "results.json").exists()
    # Nothing keeps running: the slow notebook's kernel (it runs in the task's scratch
    # folder) goes with its worker (ipykernel exits when its parent is gone).
    deadline = time.monotonic() + 30
    while (left := kernels_in("perflab-report-z_slow-")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"kernels still running: {left}"


def kernels_in(folder_prefix: str) -> list[int]:
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if (
                "ipykernel_launcher" in " ".join(process.info["cmdline"] or [])
                and folder_prefix in process.cwd()
            ):
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


async def deterministic_async(size: int, codec: str, seed: int) -> dict[str, float]:
    await asyncio.sleep(0)
    return deterministic(size, codec, seed)


def test_asweep_in_a_running_loop_and_async_functions_run_on_the_cluster(two_workers: Cluster) -> None:
    """A notebook awaits asweep(cluster=...): the loop keeps running while the cluster
    measures; an async function runs on an event loop of the worker's own."""
    grid = {"size": [1, 10], "codec": ["zstd"]}
    options = {"repeat": 3, "progress": False, "seed_param": "seed"}

    async def in_a_notebook() -> tuple[object, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        frame = await asweep(deterministic_async, grid, **options, cluster=two_workers)
        task.cancel()
        return frame, ticks

    frame, ticks = asyncio.run(in_a_notebook())
    assert ticks > 0, "the event loop kept running during the sweep"
    assert frame.drop(columns="host").equals(sweep(deterministic, grid, **options))  # type: ignore[attr-defined]


def test_bench_workers_that_cannot_run_perflab_are_named(tmp_path: Path) -> None:
    preload = tmp_path / "no_perflab.py"
    preload.write_text("import sys\nsys.modules['perflab'] = None  # as if it were not installed\n")
    options = {"nthreads": 1, "resources": {"BENCH": 1}, "preload": [str(preload)]}
    workers = {"w": {"cls": Nanny, "options": options}}
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    with SpecCluster(workers=workers, scheduler=scheduler) as spec:
        with pytest.raises(ValueError, match="BENCH workers of .* cannot run perflab .is it installed"):
            Cluster(spec.scheduler_address, connect_timeout=20).start()
