"""The core installs alone: a fresh venv with `pip install <perflab wheel>` (the core's
dependencies only, from the package registry) runs the primitives end to end without
pandas, matplotlib, scipy, papermill or Jupyter; `import perflab` pulls none of them; and
a CLI command that needs the workbench says which extra to install, in one line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ROUND_TRIP = textwrap.dedent(
    """
    import asyncio, sys, tempfile
    from pathlib import Path
    import perflab
    from perflab import (BatchProcessor, CompressedWriter, MemoryMappedReader, TaskPool,
                         TokenBucketLimiter, BufferedWriter, read_jsonl)

    heavy = [m for m in ("pandas", "matplotlib", "scipy", "papermill", "nbconvert", "IPython")
             if m in sys.modules]
    assert not heavy, heavy

    async def main(folder):
        pool = TaskPool(max_concurrent=4)
        limiter = TokenBucketLimiter(rate=500, burst_size=10)
        written = []

        async def fetch(i):
            async with limiter:
                await asyncio.sleep(0)
                return {"id": i, "price": 100 + i / 8}

        async def sink(batch):
            written.extend(batch)

        async with BatchProcessor(sink, batch_size=16, flush_interval=0.05) as batches:
            for quote in await pool.map(fetch, range(200)):
                await batches.add(quote)
        with CompressedWriter(folder / "q.jsonl.zst", 3, codec="zstd") as out:
            out.write_many(written)
        with BufferedWriter(folder / "q.jsonl") as out:
            out.write_many(written)
        return written

    folder = Path(tempfile.mkdtemp())
    written = asyncio.run(main(folder))
    assert list(read_jsonl(folder / "q.jsonl.zst")) == written
    with MemoryMappedReader(folder / "q.jsonl") as reader:
        assert reader.line_count == 200 and list(reader.records()) == written
    print("ok", perflab.__version__, len(written))
    """
)


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding perflab's wheel and its core dependencies, nothing else."""
    work = tmp_path_factory.mktemp("core")
    wheels = work / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    env = work / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    wheel = next(wheels.glob("perflab-*.whl"))
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return python


def test_the_core_installs_alone_and_runs_the_primitives(core_venv: Path) -> None:
    listed = subprocess.run(
        [str(core_venv), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, timeout=120
    ).stdout.lower()
    for heavy in ("pandas", "matplotlib", "scipy", "papermill", "nbconvert", "ipykernel", "jupyter"):
        assert f"\n{heavy}==" not in f"\n{listed}", f"{heavy} came with the core"
    done = subprocess.run([str(core_venv), "-c", ROUND_TRIP], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok ") and done.stdout.split()[-1] == "200"


def test_a_workbench_command_on_the_core_names_the_extra(core_venv: Path, tmp_path: Path) -> None:
    perflab = core_venv.parent / "perflab"
    done = subprocess.run(
        [str(perflab), "compare", str(tmp_path), str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "pip install 'perflab[workbench]'" in done.stderr
