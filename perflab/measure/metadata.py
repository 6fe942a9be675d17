"""Environment metadata collected automatically with every result, as pyperf keeps it:
when, where (host, CPU model and count, memory, OS), with what (Python, package versions,
git commit, event loop) and how busy the machine was (load average)."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import os
import platform
import socket
import subprocess
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "HOST_FIELDS",
    "HOST_TAG_VARIABLE",
    "PACKAGES",
    "collect_metadata",
    "host_fingerprint",
    "this_host",
]

#: Packages whose versions are recorded when installed.
PACKAGES = (
    "perflab",
    "numpy",
    "pandas",
    "scipy",
    "orjson",
    "zstandard",
    "isal",
    "psutil",
    "uvloop",
    "papermill",
    "matplotlib",
)

#: The metadata that makes two measurements comparable: same hardware, Python and perflab.
HOST_FIELDS = ("cpu_model", "cpu_count", "memory_total_gb", "python")

#: An environment variable whose value joins the host fingerprint: to keep apart hosts
#: whose hardware reads the same (two racks, two cloud zones), or to fake hosts in tests.
HOST_TAG_VARIABLE = "PERFLAB_HOST_TAG"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit(cwd: Path) -> dict[str, Any] | None:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def _event_loop() -> str:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        policy = asyncio.get_event_loop_policy()
        return f"{type(policy).__module__}.{type(policy).__name__} (no loop running)"
    return f"{type(loop).__module__}.{type(loop).__name__}"


def collect_metadata(cwd: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Everything needed to judge whether two results are comparable."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    memory = psutil.virtual_memory()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "cpu_count": psutil.cpu_count(logical=True),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpu_affinity": len(psutil.Process().cpu_affinity())
        if hasattr(psutil.Process, "cpu_affinity")
        else None,
        "memory_total_gb": round(memory.total / 2**30, 2),
        "load_average": [round(x, 2) for x in load] if load else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": versions,
        "git": _git_commit(Path(cwd) if cwd else Path.cwd()),
        "event_loop": _event_loop(),
        "host_tag": os.environ.get(HOST_TAG_VARIABLE) or None,
    }


def host_fingerprint(metadata: Mapping[str, Any]) -> tuple[str, str]:
    """(a short id, a readable label) of the host a measurement was taken on: results
    from different fingerprints are never pooled."""
    packages = metadata.get("packages") or {}
    values = [str(metadata.get(field, "?")) for field in HOST_FIELDS] + [str(packages.get("perflab", "?"))]
    tag = metadata.get("host_tag")
    digest = hashlib.sha1("|".join(values + ([str(tag)] if tag else [])).encode()).hexdigest()[:8]
    cpu, cores, memory, python, perflab = values
    label = f"{cpu}, {cores} CPUs, {memory} GiB, Python {python}, perflab {perflab}"
    return digest, label + (f", tag {tag}" if tag else "")


@functools.cache
def this_host() -> tuple[str, str]:
    """:func:`host_fingerprint` of this process's machine, from the few fields it needs
    (cheap enough for every sample a cluster worker measures)."""
    try:
        perflab_version = version("perflab")
    except PackageNotFoundError:
        perflab_version = "?"
    return host_fingerprint(
        {
            "cpu_model": _cpu_model(),
            "cpu_count": psutil.cpu_count(logical=True),
            "memory_total_gb": round(psutil.virtual_memory().total / 2**30, 2),
            "python": platform.python_version(),
            "packages": {"perflab": perflab_version},
            "host_tag": os.environ.get(HOST_TAG_VARIABLE) or None,
        }
    )
