"""A write that fails part-way (a file-size limit, a full disk) is never written twice and
never glued: the file ends on its last whole record, the records stay queued, and once
there is room again every record is in the file exactly once, in order. Real limits:
``RLIMIT_FSIZE`` with SIGXFSZ ignored in a child process, and (as root) a 1 MiB tmpfs that
fills up and is then freed, as log rotation would, for every codec and flush mode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

CASES = [
    ("plain", "frame"),
    ("gzip", "frame"),
    ("gzip", "sync"),
    ("zstd", "frame"),
    ("zstd", "sync"),
    ("isal", "frame"),
    ("isal", "sync"),
]

# The child: writes N records through a writer, with a failure source switched on and
# off; after every failed write it checks that the file ends on a record boundary (what a
# reader gets is a prefix of what was written, each record once), then counts at the end.
CHILD = textwrap.dedent(
    """
    import json, os, resource, signal, sys
    from perflab import BufferedWriter, CompressedWriter, read_jsonl

    path, codec, mode, source, arg = sys.argv[1:6]
    total = 3000
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def limit(on):
        if source == "fsize":
            soft = int(arg) if on else resource.RLIM_INFINITY
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, resource.RLIM_INFINITY))
        elif not on:
            os.remove(arg)  # the filler file: log rotation frees the disk

    def readable():
        # A sync stream cut back to its last sync point is unfinished by design (a reader
        # needs recover=True); plain files and member/frame files must read strictly.
        return [r["i"] for r in read_jsonl(path, recover=mode == "sync")]

    if codec == "plain":
        writer = BufferedWriter(path, max_writes=10, buffer_size=1 << 20)
    else:
        writer = CompressedWriter(path, 1, codec=codec, flush_mode=mode, max_writes=10, buffer_size=1 << 20)
    limit(True)
    failures, checks = 0, []
    for i in range(total):
        try:
            # Incompressible padding so that compressed files fill the disk too.
            writer.write({"i": i, "pad": os.urandom(24).hex()})
        except OSError as exc:
            failures += 1
            if failures <= 3 or failures % 25 == 0:
                seen = readable()
                checks.append(seen == list(range(len(seen))))
            if failures == 60:
                limit(False)
    writer.close()
    final = [r["i"] for r in read_jsonl(path)]
    print(json.dumps({"failures": failures, "checks": checks, "final": final}))
    """
)


def run_child(tmp: Path, codec: str, mode: str, source: str, arg: str) -> dict[str, object]:
    path = tmp / f"out-{codec}-{mode}.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), codec, mode, source, arg],
        capture_output=True,  # pipes: a file-size limit on a file stdout would cut it
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def check(result: dict[str, object]) -> None:
    assert result["failures"] >= 60, result["failures"]  # the limit really bit, repeatedly
    checks = result["checks"]
    assert checks and all(checks), checks  # every look at the file mid-failure: a clean prefix
    assert result["final"] == list(range(3000))  # each record exactly once, in order


@pytest.mark.parametrize(("codec", "mode"), CASES)
def test_a_file_size_limit_loses_nothing_and_writes_nothing_twice(
    tmp_path: Path, codec: str, mode: str
) -> None:
    # Room for about 100 records: the limit cuts a flush in the middle of a line/member.
    check(run_child(tmp_path, codec, mode, "fsize", str(100 * 70 + 33)))


def can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A real 1 MiB tmpfs (root only), unmounted after the test."""
    if not can_mount():
        if os.environ.get("CI"):
            pytest.fail("the full-disk test needs root to mount a tmpfs (CI runs as root)")
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True, timeout=30)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, timeout=30)


@pytest.mark.parametrize(("codec", "mode"), CASES)
def test_a_full_disk_freed_by_rotation_loses_nothing_and_writes_nothing_twice(
    small_tmpfs: Path, codec: str, mode: str
) -> None:
    filler = small_tmpfs / "rotated.log"
    # Leave about 24 KiB free: the writer fills it within its first few hundred records.
    with open(filler, "wb") as file:
        file.write(b"x" * (1024 * 1024 - 24 * 1024))
    check(run_child(small_tmpfs, codec, mode, "tmpfs", str(filler)))


def test_gen_data_onto_a_full_disk_is_one_line_and_leaves_no_truncated_file(small_tmpfs: Path) -> None:
    existing = small_tmpfs / "quotes.jsonl"
    existing.write_bytes(b'{"kept": true}\n')
    for name, force in (("fresh.jsonl.zst", []), ("quotes.jsonl", ["--force"])):
        done = subprocess.run(
            [sys.executable, "-m", "perflab.workbench.cli", "gen-data", "--records", "60000", "--quiet"]
            + ["--out", str(small_tmpfs / name), *force],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("perflab gen-data: cannot write") and "No space left" in done.stderr
        assert done.stderr.count("\n") == 1  # one line, no traceback
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["quotes.jsonl"]  # no partial file
    assert existing.read_bytes() == b'{"kept": true}\n'  # --force replaces only once it is whole
