"""A real rate-limited server for the real-service tests: Debian's nginx on 127.0.0.1 with
``limit_req`` (429) and ``limit_conn`` (503) in front of a small upstream that answers
after ``?ms=`` milliseconds. Both are started by the test, bounded in time (``timeout``
kills them if the test dies) and stopped by their pid.

Locations:

- ``/api``: ``limit_req rate=RATE burst=BURST nodelay`` and ``limit_conn CAP``; the
  upstream answers in 20 ms.
- ``/slow``: the same zones (the same server, a slow endpoint): 150 ms.
- ``/strict``: its own ``limit_req rate=RATE nodelay`` with no burst (a request even a
  hair early is refused), no concurrency cap; 20 ms.
- ``/capped``: ``limit_conn CAP`` alone (no rate limit); 50 ms. ``reload(cap=N)`` rewrites
  the configuration and has nginx reload it (SIGHUP to its master): a cap that moves.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

UPSTREAM = """
import asyncio, sys
from aiohttp import web

async def answer(request):
    await asyncio.sleep(float(request.query.get("ms", "20")) / 1000)
    return web.Response(text="ok")

async def main(port, lifetime):
    app = web.Application()
    app.add_routes([web.get("/{tail:.*}", answer)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    await asyncio.sleep(lifetime)  # stops itself
    await runner.cleanup()

asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
"""

CONFIG = """
{user}
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    keepalive_requests 100000;
    limit_req_zone $binary_remote_addr zone=rate:1m rate={rate}r/s;
    limit_req_zone $binary_remote_addr zone=strict:1m rate={rate}r/s;
    limit_conn_zone $binary_remote_addr zone=conn:1m;
    limit_req_status 429;
    limit_conn_status 503;
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location /api {{
            limit_req zone=rate burst={burst} nodelay;
            limit_conn conn {cap};
            proxy_pass http://app/?ms=20;
        }}
        location /slow {{
            limit_req zone=rate burst={burst} nodelay;
            limit_conn conn {cap};
            proxy_pass http://app/?ms=150;
        }}
        location /strict {{
            limit_req zone=strict nodelay;
            proxy_pass http://app/?ms=20;
        }}
        location /capped {{
            limit_conn conn {cap};
            proxy_pass http://app/?ms=50;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_binary() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def _wait_http(url: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class NginxBed:
    """nginx (RATE r/s, burst BURST, CAP connections) and its upstream, for ``lifetime`` s."""

    def __init__(self, work: Path, *, rate: int = 200, burst: int = 10, cap: int = 24, lifetime: float = 600):
        self.work, self.rate, self.burst, self.cap, self.lifetime = work, rate, burst, cap, lifetime
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> NginxBed:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed: .ci/system-deps installs Debian's nginx package")
        upstream_port = free_port()
        script = self.work / "upstream.py"
        script.write_text(UPSTREAM)
        # Bounded: TERM at the end of its lifetime (nginx's master stops its workers), KILL 5 s on.
        bound = ["timeout", "--kill-after=5", "--signal=TERM", f"{self.lifetime:g}"]
        self._processes.append(
            subprocess.Popen([*bound, sys.executable, str(script), str(upstream_port), f"{self.lifetime:g}"])
        )
        _wait_http(f"http://127.0.0.1:{upstream_port}/?ms=0", 30, "the upstream")
        self._upstream_port = upstream_port
        config = self._write_config()
        self._log = log = (self.work / "nginx.out").open("wb")
        self._processes.append(
            subprocess.Popen(
                [*bound, binary, "-p", str(self.work), "-c", str(config), "-g", "daemon off;"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        time.sleep(0.3)  # nginx's rate zone starts empty: let the readiness probe below not count
        _wait_http(f"{self.url}/strict", 30, "nginx")
        time.sleep(0.1)
        return self

    def _write_config(self) -> Path:
        config = self.work / "nginx.conf"
        config.write_text(
            CONFIG.format(
                user="user root;" if os.geteuid() == 0 else "",
                work=self.work,
                rate=self.rate,
                burst=self.burst,
                cap=self.cap,
                upstream=self._upstream_port,
                port=self.port,
            )
        )
        return config

    def reload(self, *, cap: int) -> None:
        """Set ``limit_conn`` to ``cap`` and have the running nginx reload its configuration
        (new workers take new requests; the old ones finish theirs)."""
        self.cap = cap
        self._write_config()
        master = int((self.work / "nginx.pid").read_text())
        os.kill(master, signal.SIGHUP)

    def stop(self) -> None:
        for process in reversed(self._processes):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> NginxBed:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
