"""The cost of running a sweep on a Dask cluster instead of in this process, per run.

The same sweep of a function that does nothing (so the figure is all overhead), and of one
that sleeps 10 ms (the overhead beside a short measurement), run with the local executor
and on ``Cluster("local:N")`` worker processes of this machine; interleaved, REPEAT times.
A run on a cluster is a task (submit, schedule, run in a worker process, send the result
back) and at most one is out per worker: on ``local:1`` the time per run is that round
trip; ``local:2`` runs two at once (both cores), so its wall time per run is about half.
Printed as median [min-max] of the milliseconds per run (sweep wall time / runs).
"""

from __future__ import annotations

import argparse
import time

from perflab.measure.cluster import Cluster
from perflab.measure.sweep import sweep

from common import fmt


def nothing(point: int) -> dict[str, float]:
    return {"value": float(point)}


def ten_ms(point: int) -> dict[str, float]:
    time.sleep(0.01)
    return {"value": float(point)}


def per_run(fn, points: int, repeats: int, cluster: Cluster | None) -> float:
    grid = {"point": list(range(points))}
    started = time.perf_counter()
    sweep(fn, grid, repeat=repeats, warmup=0, progress=False, cluster=cluster)
    return (time.perf_counter() - started) / (points * repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--sweep-repeat", type=int, default=4, help="repeats inside each sweep")
    parser.add_argument("--repeat", type=int, default=5, help="sweeps per figure")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    args = parser.parse_args()
    print(__doc__.strip().splitlines()[0])
    runs = args.points * args.sweep_repeat
    print(f"({args.points} points x {args.sweep_repeat} repeats = {runs} runs a sweep; ms per run)")
    clusters = {n: Cluster(f"local:{n}").start() for n in args.workers}
    try:
        for label, fn in (("no-op", nothing), ("10 ms sleep", ten_ms)):
            rows: dict[str, list[float]] = {"local executor": []}
            rows.update({f"Cluster local:{n}": [] for n in clusters})
            for _ in range(args.repeat + 1):  # the first round warms up, then interleaved
                for name in rows:
                    cluster = None if name == "local executor" else clusters[int(name.rsplit(":", 1)[1])]
                    rows[name].append(per_run(fn, args.points, args.sweep_repeat, cluster))
            print(f"\n{label}:")
            for name, samples in rows.items():
                print(f"  {name:18s} {fmt(samples[1:], 1e3, 3)} ms/run")
            local = sorted(rows["local executor"][1:])[args.repeat // 2]
            for name in rows:
                if name != "local executor":
                    mine = sorted(rows[name][1:])[args.repeat // 2]
                    print(f"  {name}: {1e3 * (mine - local):+.2f} ms per run over the local executor")
    finally:
        for cluster in clusters.values():
            cluster.close()


if __name__ == "__main__":
    main()
