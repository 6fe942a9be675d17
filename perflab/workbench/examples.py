"""A small shipped workload for the ``sweep`` template notebook and ``perflab sweep``: a
collector polling symbols through a capped API with a TaskPool, as a user's own
coroutine would."""

from __future__ import annotations

from perflab.aio.taskpool import TaskPool
from perflab.workbench.dataset import symbol_universe
from perflab.workbench.services import SimulatedAPI

__all__ = ["fetch"]


async def fetch(
    max_concurrent: int = 4,
    symbols: int = 200,
    latency: str = "lognormal:5:20",
    server_cap: int = 32,
    seed: int = 0,
) -> dict[str, float]:
    """Poll ``symbols`` symbols once through a pool of ``max_concurrent``; the share of
    calls the API answered (the rest hit its concurrency cap)."""
    api = SimulatedAPI(latency=latency, max_concurrency=server_cap, seed=seed)
    pool = TaskPool(max_concurrent=max_concurrent)
    answers = await pool.map(api.call, symbol_universe(symbols))
    return {"ok_share": sum(a.status == 200 for a in answers) / len(answers)}
