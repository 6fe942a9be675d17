"""Sweeps past one machine: every run of a sweep as a task on a Dask distributed cluster.

``Cluster("local:4")`` starts a ``distributed.LocalCluster`` of 4 worker processes on this
machine; ``Cluster("tcp://scheduler:8786")`` joins running workers (``dask scheduler``,
then on every host ``dask worker tcp://scheduler:8786 --nthreads 1 --resources BENCH=1``).
Pass it to ``sweep``/``asweep`` (``cluster=``), ``perflab sweep --cluster/--scheduler``
or ``perflab report --cluster/--scheduler``. Needs the ``cluster`` extra (distributed).

What keeps the numbers honest:

- Each run (one point, one repeat) is one task that asks for the ``BENCH`` resource and
  is pinned to a worker holding no other run, so a worker never takes two measurements at
  once; start one worker per host and a host never does either. Tasks are ``pure=False``:
  never cached, never merged.
- Runs start in the sweep's interleaved order, one as each worker frees up, so a point's
  repeats are spread across time; with ``spread=True`` repeat ``r`` of the ``i``-th point
  prefers a free worker on host ``(r + i) mod n``, so they are spread across hosts too.
- Every sample comes back with the fingerprint of the host that measured it
  (:func:`perflab.measure.metadata.this_host`): the frame's ``host`` column. Summaries group by it;
  hosts are never pooled.

Failures: a worker that dies mid-run loses that run only (it held no other), and the run
goes first to the next free worker; a run that keeps killing its workers is given up after
Dask's ``allowed-failures`` + 1 deaths and listed, with its parameters, in
``facts_of(frame).missing``. An exception raised by the measured function stops
the sweep as it would locally (the tasks not yet run are cancelled). Ctrl-C cancels the
remaining tasks and raises :class:`perflab.measure.sweep.SweepInterrupted` holding the frame of the
runs that finished.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from perflab._validate import check_number
from perflab.measure.metadata import this_host

if TYPE_CHECKING:
    from distributed import Client, Future

__all__ = ["Cluster", "RESOURCE", "Run"]

#: The resource a worker declares to take measurements (``--resources BENCH=1``).
RESOURCE = "BENCH"


_LOCAL = re.compile(r"local:(\d+)")
_ADDRESS = re.compile(r"(tcp|tls|ws|wss|inproc|ucx)://\S+")


class Cluster:
    """A Dask scheduler to run sweep points on: ``"local:N"`` (N worker processes here,
    each declaring ``BENCH=1``) or a scheduler address like ``"tcp://host:8786"``.

    Use it as a context manager to keep it across sweeps; a sweep given one that is not
    started starts it for the sweep and stops it after."""

    def __init__(self, address: str, *, spread: bool = False, connect_timeout: float = 30.0) -> None:
        if not isinstance(address, str) or not (_LOCAL.fullmatch(address) or _ADDRESS.fullmatch(address)):
            raise ValueError(
                f"address must be 'local:N' (N worker processes here) or a scheduler address "
                f"like 'tcp://host:8786', got {address!r}"
            )
        match = _LOCAL.fullmatch(address)
        self.local_workers = int(match.group(1)) if match else 0
        if match and self.local_workers < 1:
            raise ValueError(f"address 'local:N' needs N >= 1 workers, got {address!r}")
        if not isinstance(spread, bool):
            raise TypeError(f"spread must be a bool, got {type(spread).__name__}")
        check_number("connect_timeout", connect_timeout, positive=True)
        self.address = address
        self.spread = spread
        self.connect_timeout = connect_timeout
        self._client: Client | None = None
        self._local: Any = None
        self._fingerprints: dict[str, str] = {}  # worker address -> host fingerprint
        self._failures: dict[str, BaseException] = {}  # workers where this_host() raised

    def __repr__(self) -> str:
        state = "started" if self._client is not None else "not started"
        return f"<Cluster {self.address} {state}{' spread' if self.spread else ''}>"

    @property
    def started(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError(f"{self!r}: use it in a 'with' block (or call start()) first")
        return self._client

    def start(self) -> Cluster:
        """Start the local workers, or connect to the scheduler; wait for a worker that
        declares ``BENCH`` (a sweep with none would wait forever)."""
        if self._client is not None:
            return self
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ImportError(
                "running on a cluster needs Dask distributed: pip install 'perflab[cluster]'"
            ) from None
        if self.local_workers:
            self._local = LocalCluster(
                n_workers=self.local_workers,
                threads_per_worker=1,
                processes=True,
                resources={RESOURCE: 1},
                dashboard_address=":0",  # a free port: no clash with other clusters
                silence_logs=logging.ERROR,
            )
            self._client = Client(self._local)
        else:
            self._client = Client(self.address, timeout=self.connect_timeout)
        try:
            self._client.wait_for_workers(1, timeout=self.connect_timeout)
            if not self.workers():
                if self._failures:  # BENCH workers, but perflab does not run there
                    address, error = next(iter(self._failures.items()))
                    raise ValueError(
                        f"the {RESOURCE} workers of {self.address} cannot run perflab (is it installed "
                        f"there?): {address} raised {type(error).__name__}: {error}"
                    )
                raise ValueError(
                    f"no worker of {self.address} declares the {RESOURCE} resource: start workers "
                    f"with 'dask worker ADDRESS --nthreads 1 --resources {RESOURCE}=1'"
                )
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._local is not None:
            self._local.close()
            self._local = None

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def workers(self) -> dict[str, str]:
        """The workers that declare ``BENCH``: address -> host, where a host is a machine
        (its IP address) and its fingerprint (so tagged hosts on one machine count apart)."""
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        bench = [a for a, w in info.items() if w.get("resources", {}).get(RESOURCE, 0) >= 1]
        new = [address for address in bench if address not in self._fingerprints]
        if new:  # asked once per worker: a round trip to each
            found = self.client.run(this_host, workers=new, on_error="return")
            self._fingerprints.update({a: f[0] for a, f in found.items() if isinstance(f, tuple)})
            self._failures.update({a: f for a, f in found.items() if isinstance(f, BaseException)})
        return {
            a: f"{info[a].get('host', a)}/{self._fingerprints[a]}" for a in bench if a in self._fingerprints
        }

    def run(self, runs: Iterable[Run], on_done: Callable[[Run, Any], None]) -> list[Run]:
        """Run each run as a task, in order; call ``on_done(run, outcome)`` as they
        finish (``outcome`` = what ``run.fn(**run.kwargs)`` returned and the host's
        fingerprint and label: see :func:`measure`). Returns the runs given up because
        every worker that measured them died.

        ``runs`` may be a generator that waits, between rounds, for what was submitted
        (:meth:`settle`)."""
        self._dispatch = _Dispatch(self, runs, on_done)
        return self._dispatch.run()

    def settle(self) -> None:
        """Wait until every run submitted so far has finished (or was given up)."""
        self._dispatch.settle()


class _Dispatch:
    """One sweep's runs on the BENCH workers, each pinned to a worker that holds no other:
    runs start in order, Ctrl-C has little to cancel, and a worker that dies takes down
    only the run it was measuring (Dask blames every task a dead worker held, ones queued
    behind the measurement too). A run whose worker died goes first to the next free
    worker; after Dask's ``allowed-failures`` + 1 deaths it is given up."""

    def __init__(self, cluster: Cluster, runs: Iterable[Run], on_done: Callable[[Run, Any], None]) -> None:
        import dask

        self.cluster = cluster
        self.client = cluster.client
        self.queue = iter(runs)
        self.exhausted = False
        self.on_done = on_done
        self.busy: dict[str, tuple[Future, Run]] = {}  # worker address -> the run it measures
        self.again: collections.deque[Run] = collections.deque()  # runs whose worker died
        self.parked: dict[str, Run] = {}  # with spread: a run waiting for its host
        self.lost: list[Run] = []
        self.deaths_allowed = int(dask.config.get("distributed.scheduler.allowed-failures")) + 1
        self.workers: dict[str, str] = {}
        self.hosts: list[str] = []  # distinct hosts of the workers, in a fixed order
        self.refreshed = -math.inf
        self.refresh()

    def run(self) -> list[Run]:
        try:
            self.fill(from_queue=True)
            while self.busy or self.again or self.parked or not self.exhausted:
                self.step()
                self.fill(from_queue=True)
        except BaseException:
            self.client.cancel([future for future, _ in self.busy.values()])
            self.busy.clear()
            raise
        return self.lost

    def settle(self) -> None:
        while self.busy or self.again or self.parked:
            self.step()
            self.fill(from_queue=False)  # inside the queue's generator: only runs to redo

    def pull(self) -> Run | None:
        if self.exhausted:
            return None
        run = next(self.queue, None)  # may settle() first (adaptive rounds)
        self.exhausted = run is None
        return run

    def fill(self, *, from_queue: bool) -> None:
        """Give each free worker a run: a run parked for its host, else one to redo, else
        the next in order."""
        while True:
            chosen = self.next_run(from_queue)
            if chosen is None:
                return
            run, address = chosen
            future = self.client.submit(
                measure,
                run.fn,
                run.kwargs,
                key=f"perflab-{run.label}-{run.sequence}-{uuid.uuid4().hex}",
                pure=False,
                resources={RESOURCE: 1},
                workers=[address],
                allow_other_workers=False,
            )
            self.busy[address] = (future, run)

    def free(self) -> list[str]:
        return [address for address in self.workers if address not in self.busy]

    def next_run(self, from_queue: bool) -> tuple[Run, str] | None:
        """The next run and the free worker for it, or None (no free worker, or nothing
        to run). With ``spread`` a run waits, parked, for a worker on its host."""
        for address in self.free():
            if self.workers[address] in self.parked:
                return self.parked.pop(self.workers[address]), address
        while self.free():
            run = self.again.popleft() if self.again else (self.pull() if from_queue else None)
            if run is None:
                return None
            free = self.free()  # pull() may have settled the runs out and refilled
            host = self.host_for(run)
            on_host = [address for address in free if self.workers[address] == host]
            if (host is None or on_host) and free:
                return run, (on_host or free)[0]
            if host is not None and not on_host and host not in self.parked:
                self.parked[host] = run  # and look on for a run another free worker can take
                continue
            self.again.appendleft(run)  # wait for a worker (or for its host's parked run)
            return None
        return None

    def host_for(self, run: Run) -> str | None:
        """The host a run prefers with ``spread`` (None: any)."""
        if not self.cluster.spread or len(self.hosts) < 2:
            return None
        return self.hosts[(run.repeat_index + run.point_index) % len(self.hosts)]

    def step(self) -> None:
        """Wait (at most half a second) for a run to finish, then look for dead workers."""
        from distributed import wait

        futures = [future for future, _ in self.busy.values()]
        done: set[Any] = set()
        if futures:
            try:
                done = set(wait(futures, timeout=0.5, return_when="FIRST_COMPLETED").done)
            except TimeoutError:
                pass
        else:
            time.sleep(0.1)  # runs to redo, no worker up yet: wait for one
        for address, (future, run) in list(self.busy.items()):
            if future in done:
                del self.busy[address]
                self.finish(run, future)
        self.refresh(force=not futures)

    def finish(self, run: Run, future: Future) -> None:
        from distributed.scheduler import KilledWorker

        try:
            outcome = future.result()
        except KilledWorker as error:
            self.died(run, f"KilledWorker: {error}")
            return
        self.on_done(run, outcome)

    def died(self, run: Run, why: str) -> None:
        run.deaths += 1
        if run.deaths >= self.deaths_allowed:
            run.error = f"{run.deaths} workers died measuring it ({why})"
            self.lost.append(run)
        else:
            self.again.append(run)

    def refresh(self, *, force: bool = False) -> None:
        """The live BENCH workers (asked at most twice a second); a run pinned to a worker
        that is gone was being measured when it died (a worker holds one run)."""
        now = time.monotonic()
        if not force and now - self.refreshed < 0.5:
            return
        self.refreshed = now
        self.workers = self.cluster.workers()
        self.hosts = sorted(set(self.workers.values()))
        for address in [a for a in self.busy if a not in self.workers]:
            future, run = self.busy.pop(address)
            future.cancel()  # pinned to a worker that will not come back
            self.died(run, f"worker {address} died")
        for host in [h for h in self.parked if h not in self.workers.values()]:
            self.again.appendleft(self.parked.pop(host))  # its host is gone: any worker


class Run:
    """One task: ``fn(**kwargs)``, the ``sequence``-th of a sweep (repeat None: a warm-up)."""

    __slots__ = ("fn", "kwargs", "point", "repeat", "point_index", "sequence", "label", "error", "deaths")

    def __init__(
        self,
        fn: Callable[..., Any],
        kwargs: Mapping[str, Any],
        point: dict[str, Any],
        repeat: int | None,
        point_index: int,
        sequence: int,
        label: str,
    ) -> None:
        self.fn = fn
        self.kwargs = dict(kwargs)
        self.point = point
        self.repeat = repeat
        self.point_index = point_index
        self.sequence = sequence
        self.label = re.sub(r"[^A-Za-z0-9_.-]", "_", label)
        self.error: str | None = None
        self.deaths = 0  # workers that died measuring it

    @property
    def repeat_index(self) -> int:
        return -1 if self.repeat is None else self.repeat


def measure(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> tuple[Any, str, str]:
    """On a worker: ``fn(**kwargs)`` (an awaitable result runs on an event loop of its
    own), with the fingerprint and label of the host that measured it."""
    outcome = fn(**kwargs)
    if inspect.isawaitable(outcome):
        outcome = asyncio.run(_awaited(outcome))
    host, label = this_host()
    return outcome, host, label


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
