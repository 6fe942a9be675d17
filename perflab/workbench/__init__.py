"""The workbench: what the notebooks and ``perflab report`` run on top of the library.

Internal to perflab: nothing here is part of the public API, and names may change between
releases. Imports run one way, from here into the library (``perflab.*``), never back.

- ``dataset``: the realistic JSON-lines records a market-data collector logs.
- ``services``: simulated services (a rate-limited, capped API; a sink) to sweep against.
- ``asyncio_experiments`` / ``io_experiments``: one setting of a primitive measured
  against a simulated service or a file; the notebooks sweep them.
- ``collector``: a simulated collector built from the primitives, and the search for its
  cheapest configuration.
- ``metrics``: the one registry of metric units and directions.
- ``plots``: the notebooks' figures.
- ``notebook``: what a notebook cell calls: parameter checks, scratch folders, publishing.
- ``report``: ``perflab report``, the dated HTML report over every notebook.
"""
