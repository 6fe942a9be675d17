"""What the notebooks share: checking injected parameters, scratch folders that never
outlive the kernel, turning a sweep summary into one row per setting, and publishing
results, figures and the finding to the report.

Papermill's ``-p pool_sizes "[1,2]"`` injects a *string*; the checks here say so and
name the parameter before any work starts.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perflab._validate import check_int, check_number, check_str
from perflab.measure.analysis import aa_effects
from perflab.measure.decision import Decision, UntilDecided
from perflab.measure.results import Results, metric_columns
from perflab.measure.sweep import facts_of
from perflab.workbench.findings import Finding
from perflab.workbench.metrics import Metric, directions, units
from perflab.workbench.runs import write_finding, write_results

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "check_list",
    "check_value",
    "conclusion",
    "decisions_of",
    "per_setting",
    "publish",
    "remove_scratch",
    "scratch_dir",
    "until_decided",
]

_HINT = (
    " (a value given on a command line arrived as text: perflab report reads -p values as"
    " Python literals, e.g. -p name '[1, 2]'; papermill's own command line needs -y 'name: [1, 2]')"
)
_CHECKS: dict[type, Callable[..., Any]] = {int: check_int, float: check_number, str: check_str}


def check_value(name: str, value: Any, kind: type, *, minimum: float | None = None) -> Any:
    """``value`` if it is of ``kind`` (int, float or str) and at least ``minimum``; the
    library's own argument checks, with the parameter named and a hint for text."""
    if kind not in _CHECKS:
        raise ValueError(f"kind must be one of int, float, str, got {kind!r}")
    bounds = {} if minimum is None or kind is str else {"minimum": minimum}
    try:
        _CHECKS[kind](f"parameter {name}", value, **bounds)
    except TypeError as error:
        raise TypeError(f"{error}{_HINT if isinstance(value, str) else ''}") from None
    return value


def check_list(
    name: str, value: Any, kind: type, *, minimum: float | None = None, allow_empty: bool = False
) -> list[Any]:
    """``value`` if it is a list of ``kind`` items (non-empty unless ``allow_empty``), each
    at least ``minimum``."""
    if not isinstance(value, list | tuple):
        hint = _HINT if isinstance(value, str) else ""
        raise TypeError(
            f"parameter {name} must be a list of {kind.__name__}, got {type(value).__name__} {value!r}{hint}"
        )
    if not value and not allow_empty:
        raise ValueError(f"parameter {name} is empty: give at least one value")
    for item in value:
        check_value(f"{name} values", item, kind, minimum=minimum)
    return list(value)


def per_setting(summary: pd.DataFrame, parameters: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per setting: each metric's median and its quartiles (``m``, ``m_q25``, ``m_q75``)."""
    rows = summary[summary["metric"].isin(list(metrics))]
    wide = rows.pivot_table(
        index=list(parameters), columns="metric", values=["median", "q25", "q75"], sort=False
    )
    out = wide["median"].copy()
    for metric in metrics:
        out[f"{metric}_q25"] = wide["q25"][metric]
        out[f"{metric}_q75"] = wide["q75"][metric]
    return out.reset_index()


def conclusion(text: str) -> Any:
    """The notebook's conclusion, written from the numbers, shown as Markdown."""
    from IPython.display import Markdown

    return Markdown(text)


_SCRATCH: list[tempfile.TemporaryDirectory[str]] = []


#: Where ``scratch_dir(memory=True)`` puts its folder: a RAM-backed file system, if any.
MEMORY_FS = Path("/dev/shm")


def scratch_dir(name: str, *, memory: bool = False) -> Path:
    """A temporary folder for a notebook's scratch files. It is removed when the kernel
    exits, also after a cell failed (a finalizer of the folder, run at interpreter exit),
    or by :func:`remove_scratch` at the end of a notebook. With ``memory``, the folder is
    on a RAM-backed file system where there is one (``/dev/shm``): files written there
    cost the writer's own work, without the disk's writeback and block allocation, which
    on a shared VM's disk swing a write's time by 20% from run to run."""
    where = str(MEMORY_FS) if memory and MEMORY_FS.is_dir() and os.access(MEMORY_FS, os.W_OK) else None
    folder = tempfile.TemporaryDirectory(prefix=f"perflab-{name}-", dir=where)
    _SCRATCH.append(folder)
    return Path(folder.name)


def remove_scratch() -> None:
    """Remove every scratch folder this kernel made."""
    while _SCRATCH:
        _SCRATCH.pop().cleanup()


def until_decided(
    repeat: int,
    objective: str,
    constraints: Sequence[str] = (),
    **options: Any,
) -> UntilDecided:
    """The notebooks' decision rule for a sweep's ``adaptive=``: every setting is measured
    ``min(3, repeat)`` times, then only the settings that could still change the decision
    get more, up to ``repeat`` (see :class:`perflab.measure.decision.UntilDecided`)."""
    check_int("parameter repeat", repeat, minimum=2)
    return UntilDecided(objective, list(constraints), min_repeat=min(3, repeat), **options)


def decisions_of(frame: pd.DataFrame) -> dict[str, Decision]:
    """The decisions a sweep's repeats followed (one per scenario, ``""`` for none)."""
    facts = facts_of(frame)
    if facts is None or not facts.decisions:
        raise ValueError(
            "this frame is not a sweep whose repeats followed a decision (adaptive=UntilDecided)"
        )
    return dict(facts.decisions)


def publish(
    output_dir: str | os.PathLike[str],
    name: str,
    frame: pd.DataFrame,
    *,
    parameters: Sequence[str],
    finding: Finding,
    figures: Mapping[str, Figure] | None = None,
    extra: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Metric] | None = None,
    summary: pd.DataFrame | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path | None:
    """Save a notebook's results where ``perflab report`` collects them.

    Writes ``results.json`` (raw values + metadata, the shared format, with each metric's
    unit and direction from :mod:`perflab.workbench.metrics`), ``results.csv`` (tidy),
    ``summary.csv`` (medians and spread per setting), ``figures/*.png`` and
    ``summary.json`` (the finding: title, key figure and the value behind it, recommended
    settings, conclusion) into ``output_dir``. An empty ``output_dir`` (a notebook run by
    hand) saves nothing. ``summary`` (``summarize(frame, parameters)``) and ``metadata``
    already made for this run are used as they are, not made again.
    """
    if not output_dir:
        return None
    directory = Path(output_dir)
    (directory / "figures").mkdir(parents=True, exist_ok=True)
    names = metric_columns(frame, parameters)
    extras = {"min_detectable_effect": aa_effects(frame, parameters, names), **(extra or {})}
    known = dict(metrics or {})  # a user's own metrics, beside the registry's
    registered = [m for m in names if m not in known]
    results = Results.from_frame(
        frame,
        name,
        parameters,
        units={**units(registered), **{m: known[m].unit for m in names if m in known}},
        higher_is_better={
            **directions(registered),
            **{m: d for m in names if m in known and (d := known[m].higher_is_better) is not None},
        },
        extra=extras,
        **({"metadata": dict(metadata)} if metadata else {}),
    )
    write_results(directory, results, summary=summary)
    for figure_name, figure in (figures or {}).items():
        figure.savefig(directory / "figures" / f"{figure_name}.png", dpi=110)
    # The first figure is the notebook's main one: the report shows it beside the finding.
    saved = {**finding.as_dict(), "figures": [f"figures/{name}.png" for name in figures or {}]}
    write_finding(directory, saved)
    return directory
