"""Results with metadata, the pyperf way: raw values, parameters and the environment in a
versioned JSON file; DataFrames and CSV are views of it.

A :class:`Results` holds tidy rows, one per (parameter point, repeat): the parameter
columns, ``repeat``, then the metric columns. Nothing is aggregated away; ``summarize()``
computes medians, spreads and confidence intervals from the raw values on demand.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from perflab._files import write_new
from perflab.measure.metadata import collect_metadata
from perflab.measure.stats import sample_stats

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FORMAT_VERSION",
    "HOST_COLUMN",
    "SUMMARY_COLUMNS",
    "Results",
    "metric_columns",
    "summarize",
]

#: The column that says which host measured a sample (a :func:`perflab.measure.metadata.this_host`
#: fingerprint), present when a sweep ran on a cluster; summaries group by it.
HOST_COLUMN = "host"

#: The columns :func:`summarize` adds beside the parameters: no parameter may be named so.
SUMMARY_COLUMNS = (
    "metric",
    "unit",
    "n",
    "median",
    "q25",
    "q75",
    "iqr",
    "min",
    "max",
    "ci_low",
    "ci_high",
    "rel_noise",
    "noisy",
    "noise_reasons",
)

#: Columns of a tidy frame that are neither parameters nor metrics.
_RESERVED = ("repeat", HOST_COLUMN)


def metric_columns(frame: pd.DataFrame, parameters: Sequence[str]) -> list[str]:
    """The metric columns of a tidy frame: all but the parameters, ``repeat`` and ``host``."""
    return [c for c in frame.columns if c not in parameters and c not in _RESERVED]


FORMAT_NAME = "perflab.results"  # the file format's name: never renamed with the module
FORMAT_VERSION = 1
# Upgrades from each older version to the next: version -> function(dict) -> dict.
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def _plain(value: Any) -> Any:
    """Numbers as Python numbers (numpy scalars become int/float), the rest unchanged."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


@dataclasses.dataclass
class Results:
    """Raw results of a measurement with the environment they were taken in."""

    name: str
    parameters: tuple[str, ...]
    metrics: tuple[str, ...]
    rows: list[dict[str, Any]]
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    units: dict[str, str] = dataclasses.field(default_factory=dict)
    higher_is_better: dict[str, bool] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Fingerprint -> label of the hosts that measured the rows (a cluster run's ``host``
    #: column); empty when every row was measured where ``metadata`` was collected.
    hosts: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.parameters = tuple(self.parameters)
        self.metrics = tuple(self.metrics)
        clash = set(self.parameters) & set(self.metrics)
        if clash:
            raise ValueError(f"names used both as parameter and metric: {sorted(clash)}")
        for reserved in _RESERVED:
            if reserved in self.parameters or reserved in self.metrics:
                raise ValueError(f"{reserved!r} is reserved for the {reserved} column")
        for i, row in enumerate(self.rows):
            self._check_row(row, f"rows[{i}]")

    def _check_row(self, row: Mapping[str, Any], where: str) -> None:
        """A row must hold every column: ``load`` refuses a file with one that doesn't."""
        if not isinstance(row, Mapping):
            raise TypeError(f"{where} must be a mapping of column to value, got {type(row).__name__}")
        host = [HOST_COLUMN] if self.hosts else []
        missing = [c for c in (*self.parameters, "repeat", *host, *self.metrics) if c not in row]
        if missing:
            raise ValueError(f"{where} lacks {missing}")

    @classmethod
    def new(
        cls,
        name: str,
        parameters: Sequence[str],
        metrics: Sequence[str],
        rows: Iterable[Mapping[str, Any]] = (),
        **fields: Any,
    ) -> Results:
        """Results with this machine's metadata collected now."""
        plain_rows = [{key: _plain(value) for key, value in row.items()} for row in rows]
        metadata = fields.pop("metadata", None) or collect_metadata()
        return cls(name, tuple(parameters), tuple(metrics), plain_rows, metadata, **fields)

    def add(self, row: Mapping[str, Any]) -> None:
        """Append one row; one that lacks a parameter, ``repeat`` or a metric is refused."""
        self._check_row(row, "row")
        self.rows.append({key: _plain(value) for key, value in row.items()})

    # ----------------------------------------------------------------- views

    def to_frame(self) -> pd.DataFrame:
        """The tidy table: parameter columns, ``repeat``, then metric columns."""
        import pandas as pd

        host = [HOST_COLUMN] if self.hosts else []
        columns = [*self.parameters, "repeat", *host, *self.metrics]
        return pd.DataFrame(self.rows, columns=columns)

    def summarize(self) -> pd.DataFrame:
        """Per parameter point and metric: n, median, quartiles, min, max, CI of the median,
        relative noise and whether the samples look noisy (pyperf's rules), with units."""
        return self.with_units(summarize(self.to_frame(), self.parameters, self.metrics))

    def with_units(self, summary: pd.DataFrame) -> pd.DataFrame:
        """A summary of these results (:func:`summarize`) with each metric's unit beside it."""
        if summary.empty or "unit" in summary.columns:
            return summary
        summary = summary.copy()
        after_metric = list(summary.columns).index("metric") + 1
        summary.insert(after_metric, "unit", [self.units.get(str(m), "") for m in summary["metric"]])
        return summary

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, name: str, parameters: Sequence[str], **fields: Any) -> Results:
        """Results from a tidy frame (parameter columns, ``repeat``, metric columns, and
        ``host`` when it ran on a cluster: the labels come from the sweep's facts)."""
        metrics = metric_columns(frame, parameters)
        rows = [{str(key): value for key, value in row.items()} for row in frame.to_dict("records")]
        if HOST_COLUMN in frame.columns and "hosts" not in fields:
            from perflab.measure.sweep import facts_of

            facts = facts_of(frame)
            labels = facts.hosts if facts is not None else {}
            fields["hosts"] = {str(h): labels.get(h, str(h)) for h in frame[HOST_COLUMN].unique()}
        return cls.new(name, parameters, metrics, rows, **fields)

    # ----------------------------------------------------------------- files

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Results:
        data = dict(data)
        if data.get("format") != FORMAT_NAME:
            raise ValueError(f"not a perflab results file (format {data.get('format')!r})")
        found = data.get("version")
        if not isinstance(found, int) or found < 1:
            raise ValueError(f"results file has no valid format version: {found!r}")
        if found > FORMAT_VERSION:
            raise ValueError(
                f"results file was written by a newer perflab (format version {found}; "
                f"this perflab reads up to {FORMAT_VERSION}): upgrade perflab"
            )
        while found < FORMAT_VERSION:
            data = _UPGRADES[found](data)
            found += 1
        _check_fields(data)
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in fields})

    def dump(self, path: str | os.PathLike[str], *, replace: bool = False) -> Path:
        """Write the JSON file; refuse to overwrite an existing one unless ``replace``."""
        payload = orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
        return write_new(path, payload, replace=replace)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Results:
        """Read a results file; a missing, corrupt or hand-edited one raises ValueError
        naming the file and what is wrong (OSError for one that cannot be read)."""
        try:
            data = orjson.loads(Path(path).read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"{path}: not a perflab results file (a JSON {type(data).__name__}, not an object)"
            )
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from None


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "parameters": (list, tuple),
    "metrics": (list, tuple),
    "rows": (list,),
    "metadata": (dict,),
    "units": (dict,),
    "higher_is_better": (dict,),
    "extra": (dict,),
    "hosts": (dict,),
}
_REQUIRED_FIELDS = ("name", "parameters", "metrics", "rows")


def _check_fields(data: Mapping[str, Any]) -> None:
    """Refuse a results dict whose fields are missing or of the wrong kind (a hand edit),
    naming the field, instead of failing later somewhere inside pandas."""
    missing = [name for name in _REQUIRED_FIELDS if name not in data]
    if missing:
        raise ValueError(f"results file lacks {missing}")
    for name, kinds in _FIELD_TYPES.items():
        if name in data and not isinstance(data[name], kinds):
            expected = " or ".join(kind.__name__ for kind in kinds)
            raise ValueError(
                f"results file field {name!r} must be a {expected}, got {type(data[name]).__name__}"
            )
    for name in ("parameters", "metrics"):
        bad = [item for item in data[name] if not isinstance(item, str)]
        if bad:
            raise ValueError(f"results file field {name!r} must list names (strings), got {bad[0]!r}")
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict):
            raise ValueError(f"results file rows[{i}] must be an object, got {type(row).__name__}")
        for metric in data["metrics"]:
            value = row.get(metric)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(
                    f"results file rows[{i}][{metric!r}] must be a number or null, got {value!r}"
                )


def summarize(
    frame: pd.DataFrame, parameters: Sequence[str], metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per parameter point and metric (long format) with n, median, quartiles, IQR,
    min, max, the 95% CI of the median, relative noise and pyperf's noise verdict.

    ``frame`` is a tidy sweep (parameter columns, ``repeat``, metric columns). Samples of
    different hosts (a ``host`` column, from a cluster) are never pooled: the summary has a
    row per point, host and metric.
    """
    import numpy as np
    import pandas as pd

    parameters = list(parameters)
    clash = sorted(set(parameters) & set(SUMMARY_COLUMNS))
    if clash:
        raise ValueError(
            f"parameters {clash} clash with summary columns {list(SUMMARY_COLUMNS)}: rename them"
        )
    missing = [p for p in parameters if p not in frame.columns]
    if missing:
        raise ValueError(f"parameters not in the frame: {missing}")
    if metrics is None:
        metrics = metric_columns(frame, parameters)
    if HOST_COLUMN in frame.columns and HOST_COLUMN not in parameters:
        parameters = [*parameters, HOST_COLUMN]
    records = []
    groups = frame.groupby(parameters, sort=False, dropna=False) if parameters else [((), frame)]
    for key, group in groups:
        point = dict(zip(parameters, key if isinstance(key, tuple) else (key,), strict=True))
        for metric in metrics:
            values = pd.to_numeric(group[metric], errors="coerce").dropna().to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            if values.size == 0:
                continue
            stats = sample_stats(values)
            q25, q75 = np.percentile(values, [25, 75])
            records.append(
                {
                    **point,
                    "metric": metric,
                    "n": stats.n,
                    "median": stats.median,
                    "q25": float(q25),
                    "q75": float(q75),
                    "iqr": stats.iqr,
                    "min": stats.min,
                    "max": stats.max,
                    "ci_low": stats.ci95[0],
                    "ci_high": stats.ci95[1],
                    "rel_noise": stats.rel_noise,
                    "noisy": stats.is_noisy,
                    "noise_reasons": "; ".join(stats.noise_reasons),
                }
            )
    return pd.DataFrame.from_records(records)
