"""What the notebooks share: checking injected parameters, turning a sweep summary into
one row per setting, and publishing results, figures and the conclusion to the report.

Papermill's ``-p pool_sizes "[1,2]"`` injects a *string*; the checks here say so and
name the parameter before any work starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from perflab._files import write_new
from perflab.results import Results

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["check_list", "check_value", "conclusion", "per_setting", "publish"]

_HINT = (
    " (a value given on a command line arrived as text: perflab report reads -p values as"
    " Python literals, e.g. -p name '[1, 2]'; papermill's own command line needs -y 'name: [1, 2]')"
)
_KINDS = {int: "an int", float: "a number", str: "a string"}


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, Real) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def check_value(name: str, value: Any, kind: type, *, minimum: float | None = None) -> Any:
    """``value`` if it is of ``kind`` (int, float or str) and at least ``minimum``."""
    if not _is(value, kind):
        hint = _HINT if isinstance(value, str) else ""
        raise TypeError(
            f"parameter {name} must be {_KINDS[kind]}, got {type(value).__name__} {value!r}{hint}"
        )
    if minimum is not None and value < minimum:
        raise ValueError(f"parameter {name} must be >= {minimum:g}, got {value!r}")
    return value


def check_list(name: str, value: Any, kind: type, *, minimum: float | None = None) -> list[Any]:
    """``value`` if it is a non-empty list of ``kind`` items, each at least ``minimum``."""
    if not isinstance(value, list | tuple):
        hint = _HINT if isinstance(value, str) else ""
        raise TypeError(
            f"parameter {name} must be a list of {kind.__name__}, got {type(value).__name__} {value!r}{hint}"
        )
    if not value:
        raise ValueError(f"parameter {name} is empty: give at least one value")
    for item in value:
        if not _is(item, kind):
            raise TypeError(f"parameter {name} must hold only {kind.__name__} values, got {item!r}")
        if minimum is not None and item < minimum:
            raise ValueError(f"parameter {name} values must be >= {minimum:g}, got {item!r}")
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


def publish(
    output_dir: str | os.PathLike[str],
    name: str,
    frame: pd.DataFrame,
    *,
    parameters: Sequence[str],
    summary: Mapping[str, Any],
    figures: Mapping[str, Figure] | None = None,
    units: Mapping[str, str] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path | None:
    """Save a notebook's results where ``perflab report`` collects them.

    Writes ``results.json`` (raw values + metadata, the shared format), ``results.csv``
    (tidy), ``summary.csv`` (medians and spread per setting), ``figures/*.png`` and
    ``summary.json`` (title, key figure, recommended settings, conclusion) into
    ``output_dir``. An empty ``output_dir`` (a notebook run by hand) saves nothing.
    """
    if not output_dir:
        return None
    for key in ("title", "key_figure", "recommended", "conclusion"):
        if key not in summary:
            raise ValueError(f"summary must have {key!r}")
    directory = Path(output_dir)
    (directory / "figures").mkdir(parents=True, exist_ok=True)
    metrics = [c for c in frame.columns if c not in parameters and c != "repeat"]
    directions = {m: v for m, v in (higher_is_better or {}).items() if m in metrics}
    results = Results.from_frame(
        frame,
        name,
        parameters,
        units={m: u for m, u in (units or {}).items() if m in metrics},
        higher_is_better=directions,
        extra=dict(extra or {}),
    )
    results.dump(directory / "results.json", replace=True)
    results.to_frame().to_csv(directory / "results.csv", index=False)
    results.summarize().to_csv(directory / "summary.csv", index=False)
    for figure_name, figure in (figures or {}).items():
        figure.savefig(directory / "figures" / f"{figure_name}.png", dpi=110)
    payload = orjson.dumps(dict(summary), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    write_new(directory / "summary.json", payload, replace=True)
    return directory
