"""Reading sweeps: the knee of a curve, the Pareto front of two objectives, the settings
another beats, and run-against-run comparison with a verdict per metric. Per-point
summaries with their spread are :func:`perflab.measure.results.summarize`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from perflab.measure.metadata import host_fingerprint
from perflab.measure.results import HOST_COLUMN
from perflab.measure.stats import compare, compare_difference

if TYPE_CHECKING:
    import pandas as pd

    from perflab.measure.results import Results

__all__ = [
    "Knee",
    "aa_effects",
    "compare_groups",
    "compare_runs",
    "comparison_table",
    "dominated",
    "host_ratios",
    "knee",
    "pareto_front",
]


def medians(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of one metric from :func:`summarize`."""
    rows = summary[summary["metric"] == metric]
    if rows.empty:
        raise ValueError(f"metric {metric!r} is not in the summary (has {sorted(set(summary['metric']))})")
    return rows


@dataclasses.dataclass(frozen=True, slots=True)
class Knee:
    """The smallest setting whose median reaches ``fraction`` of the best median."""

    x: Any
    y: float
    best_x: Any
    best_y: float
    fraction: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def knee(
    summary: pd.DataFrame,
    x: str,
    metric: str,
    *,
    fraction: float = 0.95,
    higher_is_better: bool = True,
    where: Mapping[str, Any] | None = None,
) -> Knee:
    """The smallest ``x`` whose median ``metric`` is within ``fraction`` of the best.

    E.g. the pool size that reaches 95% of peak throughput. ``where`` picks one slice of a
    multi-parameter summary (``{"latency": "lognormal"}``). For a lower-is-better metric
    the setting must be at most ``best / fraction``.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    rows = medians(summary, metric)
    for column, value in (where or {}).items():
        rows = rows[rows[column] == value]
    if rows.empty:
        raise ValueError(f"no rows of {metric!r} match {dict(where or {})}")
    rows = rows.sort_values(x)
    values = rows["median"].to_numpy()
    best = rows.iloc[int(values.argmax() if higher_is_better else values.argmin())]
    if higher_is_better:
        good = rows[rows["median"] >= fraction * best["median"]]
    else:
        good = rows[rows["median"] <= best["median"] / fraction]
    first = good.iloc[0]
    return Knee(_scalar(first[x]), float(first["median"]), _scalar(best[x]), float(best["median"]), fraction)


def pareto_front(frame: pd.DataFrame, objectives: Mapping[str, Literal["max", "min"]]) -> pd.DataFrame:
    """The rows no other row beats on every objective (and strictly on one).

    ``objectives`` maps column to "max" or "min", e.g. ``{"throughput": "max", "p99_ms": "min"}``.
    """
    import numpy as np

    if not objectives:
        raise ValueError("objectives must name at least one column")
    for column, sense in objectives.items():
        if sense not in ("max", "min"):
            raise ValueError(f"objectives[{column!r}] must be 'max' or 'min', got {sense!r}")
        if column not in frame.columns:
            raise ValueError(f"objective {column!r} is not a column")
    values = np.column_stack(
        [frame[c].to_numpy(dtype=float) * (1 if s == "max" else -1) for c, s in objectives.items()]
    )
    keep = np.ones(len(frame), dtype=bool)
    for i in range(len(frame)):
        dominated_by = np.all(values >= values[i], axis=1) & np.any(values > values[i], axis=1)
        keep[i] = not dominated_by.any()
    return frame[keep]


def dominated(
    points: pd.DataFrame,
    objectives: Mapping[str, Literal["max", "min"]],
    key: str,
    *,
    tolerance: float | Mapping[str, float] = 0.0,
) -> pd.DataFrame:
    """The rows another row beats: at least as good on every objective and better on one,
    where a relative difference within ``tolerance`` counts as a tie (per objective when
    a mapping: a timing is noisy, a compression ratio is not). Each dominated row is
    listed with the dominator best on the first objective."""
    import pandas as pd

    columns = list(objectives)
    tol = {c: float(tolerance.get(c, 0.0) if isinstance(tolerance, Mapping) else tolerance) for c in columns}
    if any(t < 0 for t in tol.values()):
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    signs = {c: 1.0 if objectives[c] == "max" else -1.0 for c in columns}
    rows = []
    for i, row in points.iterrows():
        best = None
        for j, other in points.iterrows():
            if i == j:
                continue
            gains = {c: signs[c] * (other[c] - row[c]) / max(abs(row[c]), 1e-12) for c in columns}
            if all(gains[c] >= -tol[c] for c in columns) and any(gains[c] > tol[c] for c in columns):
                if best is None or signs[columns[0]] * (other[columns[0]] - best[columns[0]]) > 0:
                    best = other
        if best is not None:
            rows.append({"dominated": row[key], "by": best[key], **{c: row[c] for c in columns}})
    return pd.DataFrame(rows, columns=["dominated", "by", *columns])


def compare_runs(
    baseline: Results, candidate: Results, *, min_effect: float | None = None, alpha: float = 0.05
) -> pd.DataFrame:
    """Per parameter point and metric present in both runs: medians, ratio with CI,
    p-value and verdict ("faster", "slower", "no significant change").

    When either run was measured on a cluster (a ``host`` column), samples are compared
    host by host (a run without the column counts as measured on its metadata's host):
    the table gets a ``host`` column and a host found in one run only is left out."""
    import pandas as pd

    if tuple(baseline.parameters) != tuple(candidate.parameters):
        raise ValueError(
            f"the runs have different parameters: {list(baseline.parameters)} vs {list(candidate.parameters)}"
        )
    parameters = list(baseline.parameters)
    a, b = baseline.to_frame(), candidate.to_frame()
    if baseline.hosts or candidate.hosts:
        a, b = _with_host(a, baseline), _with_host(b, candidate)
        parameters.append(HOST_COLUMN)
    metrics = [m for m in baseline.metrics if m in candidate.metrics]
    detectable = _detectable(baseline, candidate)
    signed = _signed(metrics, a, b)
    rows = []
    a_groups: dict[Any, pd.DataFrame] = (
        dict(iter(a.groupby(parameters, sort=False))) if parameters else {(): a}
    )
    b_groups: dict[Any, pd.DataFrame] = (
        dict(iter(b.groupby(parameters, sort=False))) if parameters else {(): b}
    )
    for key, a_group in a_groups.items():
        b_group = b_groups.get(key)
        if b_group is None:
            continue
        point = dict(zip(parameters, key if isinstance(key, tuple) else (key,), strict=True))
        rows += _comparison_rows(
            point,
            a_group,
            b_group,
            metrics,
            baseline.units,
            baseline.higher_is_better,
            min_effect,
            alpha,
            signed=signed,
        )
    table = pd.DataFrame.from_records(rows)
    if not table.empty:
        # A relative A/A effect means nothing for a metric around 0: none is shown for it.
        table["detectable"] = table["metric"].map(lambda m: None if m in signed else detectable.get(m))
    return table


def _signed(metrics: Sequence[str], *frames: pd.DataFrame) -> set[str]:
    """The metrics that go negative anywhere in the frames (an error in percent, a margin):
    compared by difference at every point, so one metric reads the same way throughout."""
    import pandas as pd

    return {
        metric
        for metric in metrics
        if any((pd.to_numeric(frame[metric], errors="coerce") < 0).any() for frame in frames)
    }


def _with_host(frame: pd.DataFrame, run: Results) -> pd.DataFrame:
    """``frame`` with its ``host`` column: a local run's rows are its metadata's host."""
    if HOST_COLUMN in frame.columns:
        return frame
    return frame.assign(**{HOST_COLUMN: host_fingerprint(run.metadata)[0]})


def host_ratios(
    frame: pd.DataFrame, parameters: Sequence[str], metric: str, baseline: Mapping[str, Any]
) -> pd.DataFrame:
    """Each point's median ``metric`` over the ``baseline`` point's, both measured on the
    same host, then combined across hosts: the geometric mean of the hosts' ratios, with
    the lowest and highest. How to pool hosts of different speed: their absolute numbers
    differ, a ratio measured on one host does not (a frame without ``host`` is one host)."""
    import numpy as np
    import pandas as pd

    if set(baseline) != set(parameters):
        raise ValueError(f"baseline must give every parameter {list(parameters)}, got {dict(baseline)}")
    if metric not in frame.columns:
        raise ValueError(f"metric {metric!r} is not in the frame")
    hosts = frame[HOST_COLUMN] if HOST_COLUMN in frame.columns else pd.Series("", index=frame.index)
    values = pd.to_numeric(frame[metric], errors="coerce")
    medians = values.groupby([*(frame[p] for p in parameters), hosts]).median()
    rows = []
    for point, by_host in medians.groupby(level=list(range(len(parameters)))):
        ratios = []
        for key, median in by_host.items():
            host = key[-1] if isinstance(key, tuple) else key
            base = medians.get((*(baseline[p] for p in parameters), host))
            if base is not None and base != 0 and np.isfinite(base) and np.isfinite(median):
                ratios.append(median / base)
        if not ratios:
            continue
        named = dict(zip(parameters, point if isinstance(point, tuple) else (point,), strict=True))
        rows.append(
            {
                **named,
                "metric": metric,
                "ratio": float(np.exp(np.mean(np.log(ratios)))),
                "lowest": float(min(ratios)),
                "highest": float(max(ratios)),
                "hosts": len(ratios),
            }
        )
    return pd.DataFrame.from_records(rows)


def _detectable(*runs: Results) -> dict[str, float | None]:
    """The larger of the runs' A/A detectable effects per metric (None where unknown)."""
    out: dict[str, float | None] = {}
    for run in runs:
        for metric, effect in (run.extra.get("min_detectable_effect") or {}).items():
            if effect is not None:
                previous = out.get(metric)
                out[metric] = effect if previous is None else max(previous, effect)
    return out


def compare_groups(
    frame: pd.DataFrame,
    column: str,
    baseline: Any,
    candidate: Any,
    metrics: Sequence[str],
    *,
    units: Mapping[str, str] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    min_effect: float | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """:func:`compare_runs` within one tidy frame: the rows whose ``column`` is
    ``candidate`` against those where it is ``baseline`` (e.g. "after" against "before"),
    with the same columns and verdicts as ``perflab compare``."""
    import pandas as pd

    if column not in frame.columns:
        raise ValueError(f"column {column!r} is not in the frame")
    a, b = frame[frame[column] == baseline], frame[frame[column] == candidate]
    for label, rows in ((baseline, a), (candidate, b)):
        if rows.empty:
            raise ValueError(f"no rows have {column} == {label!r}")
    directions = dict(higher_is_better or {})
    rows = _comparison_rows(
        {}, a, b, metrics, dict(units or {}), directions, min_effect, alpha, signed=_signed(metrics, a, b)
    )
    return pd.DataFrame.from_records(rows)


def _comparison_rows(
    point: dict[str, Any],
    before_rows: pd.DataFrame,
    after_rows: pd.DataFrame,
    metrics: Sequence[str],
    units: Mapping[str, str],
    directions: Mapping[str, bool],
    min_effect: float | None,
    alpha: float,
    signed: set[str],
) -> list[dict[str, Any]]:
    """One comparison row per metric with samples on both sides: a ratio of medians, or,
    for a signed metric (one of ``signed``: :func:`_signed` of the frames these rows come
    from) or a baseline median of 0, the difference of medians with its CI."""
    import pandas as pd

    options = {} if min_effect is None else {"min_effect": min_effect}
    rows = []
    for metric in metrics:
        before = pd.to_numeric(before_rows[metric], errors="coerce").dropna().tolist()
        after = pd.to_numeric(after_rows[metric], errors="coerce").dropna().tolist()
        if not before or not after:
            continue
        higher = directions.get(metric, False)
        if metric in signed or _median(before) == 0:
            result = compare_difference(before, after, higher_is_better=directions.get(metric), alpha=alpha)
        else:
            result = compare(before, after, higher_is_better=higher, alpha=alpha, **options)
        rows.append(
            {
                **point,
                "metric": metric,
                "unit": units.get(metric, ""),
                "higher_is_better": higher,
                "baseline_median": result.baseline_median,
                "candidate_median": result.candidate_median,
                "ratio": result.ratio,
                "difference": result.difference,
                "ci_low": result.ci95[0],
                "ci_high": result.ci95[1],
                "p_value": result.p_value,
                "verdict": result.verdict,
            }
        )
    return rows


def aa_effects(
    frame: pd.DataFrame, parameters: Sequence[str], metrics: Sequence[str]
) -> dict[str, float | None]:
    """The smallest change this run could have told from noise, per metric, from an A/A
    pair inside the same run: each point's even repeats against its odd ones (measured
    interleaved, same code, same machine). The 95th percentile over the points of
    ``|median(odd) / median(even) - 1|``; None without two repeats of some point."""
    import numpy as np
    import pandas as pd

    effects: dict[str, float | None] = {}
    keys = list(parameters)
    if HOST_COLUMN in frame.columns and HOST_COLUMN not in keys:
        keys.append(HOST_COLUMN)  # a pair is measured on one host
    groups = list(frame.groupby(keys, sort=False)) if keys else [((), frame)]
    for metric in metrics:
        found = []
        for _, group in groups:
            values = pd.to_numeric(group[metric], errors="coerce")
            even = values[group["repeat"] % 2 == 0].dropna()
            odd = values[group["repeat"] % 2 == 1].dropna()
            if even.empty or odd.empty or even.median() == 0:
                continue
            found.append(abs(float(odd.median()) / float(even.median()) - 1))
        effects[metric] = float(np.percentile(found, 95)) if found else None
    return effects


def comparison_table(table: pd.DataFrame) -> pd.DataFrame:
    """A comparison (:func:`compare_runs`, :func:`compare_groups`) as people read it: the
    change and its 95% CI in percent beside the medians and the verdict."""
    if table.empty:
        return table
    if "detectable" in table:
        table = table.assign(
            detectable=table["detectable"].map(lambda v: "n/a" if v is None or v != v else f"±{v:.1%}")
        )
    differences = table["difference"] if "difference" in table else [None] * len(table)
    changes, cis = [], []
    for ratio, difference, low, high in zip(
        table["ratio"], differences, table["ci_low"], table["ci_high"], strict=True
    ):
        if difference is None or difference != difference:  # a ratio
            changes.append(f"{ratio - 1:+.1%}")
            cis.append(f"[{low - 1:+.1%}, {high - 1:+.1%}]")
        else:  # a signed metric: the difference, in its unit
            changes.append(f"{difference:+.4g} (diff)")
            cis.append(f"[{low:+.4g}, {high:+.4g}]")
    dropped = ["ratio", "difference", "ci_low", "ci_high", "higher_is_better", "p_value"]
    return table.assign(change=changes, ci=cis).drop(columns=[c for c in dropped if c in table])


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
