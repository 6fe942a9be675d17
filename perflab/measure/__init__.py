"""The measurement harness: statistics and timing (``stats``), sweeps, results files and
their metadata, the analysis of sweeps and of two runs, change detection across runs, and
sweeps on a Dask cluster. It builds on ``perflab.aio`` and ``perflab.jsonl``, never on the
workbench."""
