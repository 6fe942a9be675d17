"""The frame a sweep returns: a pandas DataFrame that carries its :class:`SweepFacts`.

Kept apart from :mod:`perflab.measure.sweep` because defining a DataFrame subclass imports
pandas, and that module must import without it. Anything derived from a sweep's frame (a
filter, a copy, a groupby) is a plain DataFrame: the facts describe the sweep as it ran,
and a filtered frame would make them wrong, so they are dropped rather than carried along.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from perflab.measure.sweep import SweepFacts

__all__ = ["SweepFrame"]


class SweepFrame(pd.DataFrame):
    """One row per (point, repeat), as every DataFrame; ``.facts`` says what the columns
    cannot (which are parameters and which metrics, hosts, failed and missing runs,
    adaptive repeats)."""

    _metadata = ["facts"]
    facts: SweepFacts

    @property
    def _constructor(self) -> Any:
        return pd.DataFrame
