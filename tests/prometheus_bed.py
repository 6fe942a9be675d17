"""A real Prometheus server for the live-metrics tests (Debian's ``prometheus``, installed
by .ci/system-deps): started on 127.0.0.1 by the test, scraping the given targets, bounded
in time and stopped by its pid."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from nginx_bed import free_port

from perflab.workbench.observe import prometheus_query


def wait_for(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, ValueError):  # not up yet, or still starting (a 503)
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def query(url: str, expr: str) -> list[dict]:  # type: ignore[type-arg]
    """An instant query's result, through the client ``perflab observe`` uses."""
    return prometheus_query(url, expr)


class PrometheusBed:
    """Prometheus scraping ``targets`` (host:port) as ``job`` every ``interval``."""

    def __init__(
        self, work: Path, job: str, targets: list[str], *, interval: str = "500ms", lifetime: float = 600
    ):
        binary = shutil.which("prometheus")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail(
                    "prometheus is not installed: .ci/system-deps installs Debian's prometheus package"
                )
            pytest.skip("prometheus is not installed (apt-get install prometheus)")
        self.binary, self.work, self.job, self.lifetime = binary, work, job, lifetime
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        listed = ", ".join(f"'{t}'" for t in targets)
        self.config = work / "prometheus.yml"
        self.config.write_text(
            f"global:\n  scrape_interval: {interval}\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [{listed}]\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusBed:
        self._log = (self.work / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                "timeout",
                "--kill-after=5",
                f"{self.lifetime:g}",
                self.binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.work / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        wait_for(lambda: self.ready(), 30, "prometheus")
        return self

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    def wait_scraping(self) -> None:
        """Until every target has been scraped once: the series then cover what follows."""
        wait_for(
            lambda: [r["value"][1] for r in query(self.url, f'up{{job="{self.job}"}}')] == ["1"],
            30,
            "the first scrape",
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._log.close()
