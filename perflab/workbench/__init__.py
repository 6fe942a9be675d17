"""The workbench: the ``perflab`` command and what the notebooks run on, on top of the
library families (``perflab.aio``, ``jsonl``, ``measure``, ``profiling``, ``exporter``).

Internal to perflab: nothing here is part of the public API, and names may change between
releases. Imports run one way, from here into the library, never back.

- ``cli``: the ``perflab`` command (report, sweep, compare, history, gen-data, dashboard,
  observe).
- ``dataset``: the realistic JSON-lines records a market-data collector logs.
- ``services``: simulated services (a rate-limited, capped API; a sink) to sweep against.
- ``asyncio_experiments`` / ``io_experiments``: one setting of a primitive measured
  against a simulated service or a file; the notebooks sweep them.
- ``collector``: a simulated collector built from the primitives; ``tuning``: the search
  for its cheapest configuration, the profiler's advice applied, batch and codec costs.
- ``examples``: small shipped workloads for ``perflab sweep`` and the sweep notebook.
- ``metrics``: the one registry of metric units and directions.
- ``findings``: each notebook's verdict (what it recommends, and why) from its numbers.
- ``plots``: the notebooks' figures.
- ``notebook``: what a notebook cell calls: parameter checks, scratch folders, publishing.
- ``runs``: the one owner of a run folder (``reports/<run>/<notebook>/``): writes and reads it.
- ``report``: ``perflab report``, the dated HTML report over every notebook; ``_html``: the
  page shell it shares with ``history``.
- ``user_sweep``: ``perflab sweep`` of a user's own function; ``history``: trends across
  runs; ``monitoring`` / ``observe``: live metrics, the dashboard, production profiles.
"""
