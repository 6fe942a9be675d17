"""The run folder, with one owner: what a run of a notebook (or of ``perflab sweep``) leaves
in ``<run>/<notebook>/``, written and read here only.

- ``results.json``: the raw values and their metadata (:class:`~perflab.measure.results.Results`);
- ``results.csv``: the same as a tidy table; ``summary.csv``: medians and spread per setting;
- ``summary.json``: the finding (title, key figure, recommended settings, conclusion);
- ``figures/*.png``: the figures, the first one the card's.

``perflab report``, the notebooks' ``publish``, ``perflab sweep`` (finished or
interrupted), ``compare`` and ``history`` all go through these functions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from perflab._files import write_new
from perflab.measure.results import Results

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FIGURES",
    "RESULTS",
    "RESULTS_CSV",
    "SUMMARY_CSV",
    "SUMMARY_JSON",
    "load_finding",
    "load_run",
    "notebook_folders",
    "run_folders",
    "write_finding",
    "write_results",
]

RESULTS = "results.json"
RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
FIGURES = "figures"


def write_results(
    folder: str | os.PathLike[str], results: Results, *, summary: pd.DataFrame | bool | None = None
) -> Path:
    """``results.json`` and ``results.csv`` of one notebook's run, and ``summary.csv``
    unless ``summary=False``: from ``summary`` when the caller already made it
    (``summarize(frame, parameters)``), else made here."""
    directory = Path(folder)
    directory.mkdir(parents=True, exist_ok=True)
    results.dump(directory / RESULTS, replace=True)
    results.to_frame().to_csv(directory / RESULTS_CSV, index=False)
    if summary is not False:
        table = results.summarize() if summary is None or summary is True else results.with_units(summary)
        table.to_csv(directory / SUMMARY_CSV, index=False)
    return directory


def write_finding(folder: str | os.PathLike[str], finding: dict[str, Any]) -> Path:
    """``summary.json``: the finding as the report's card shows it."""
    payload = orjson.dumps(finding, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    return write_new(Path(folder) / SUMMARY_JSON, payload, replace=True)


def load_finding(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A notebook run's ``summary.json``, or None where it has none."""
    path = Path(folder) / SUMMARY_JSON
    if not path.exists():
        return None
    finding = orjson.loads(path.read_bytes())
    if not isinstance(finding, dict):
        raise ValueError(f"{path}: not a finding (a JSON {type(finding).__name__}, not an object)")
    return finding


def notebook_folders(run: str | os.PathLike[str]) -> list[Path]:
    """The folders of a run that hold results, by notebook name order."""
    return sorted(path.parent for path in Path(run).glob(f"*/{RESULTS}"))


def load_run(path: str | os.PathLike[str]) -> dict[str, Results]:
    """The results of a run by notebook name (``path`` a run folder), or of one results
    file (``path`` a ``results.json``)."""
    target = Path(path)
    if target.is_file():
        return {target.parent.name or "results": Results.load(target)}
    if not target.is_dir():
        raise ValueError(f"{str(target)!r} is neither a report folder nor a {RESULTS} file")
    found = {folder.name: Results.load(folder / RESULTS) for folder in notebook_folders(target)}
    if not found:
        raise ValueError(f"{str(target)!r} holds no */{RESULTS}: is it a perflab report folder?")
    return found


def run_folders(reports_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """The run folders under ``reports_dir`` (those holding ``*/results.json``), by name."""
    for directory in sorted(p for p in Path(reports_dir).iterdir() if p.is_dir()):
        if notebook_folders(directory):
            yield directory
