"""``perflab history``: every dated run in a reports folder as one static page: per host,
notebook and metric the trend of medians with their CIs, the changes found in it (steps
and drifts, :mod:`perflab.measure.changes`), the recommended settings over time with the date each
moved, and the regressions. Runs from different hosts are never pooled: a host is the
fingerprint of its metadata (CPU model and count, memory, Python, perflab version).
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perflab.measure.changes import MIN_RUNS, Change, detect_changes
from perflab.measure.metadata import host_fingerprint
from perflab.measure.results import Results, summarize
from perflab.workbench._html import page as html_page
from perflab.workbench.findings import decisions_overlap
from perflab.workbench.runs import load_finding, load_run, run_folders

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["History", "RunRecord", "host_fingerprint", "load_history", "write_history"]


@dataclasses.dataclass(frozen=True, slots=True)
class RunRecord:
    """One report run: when, on which host, its results and findings per notebook."""

    name: str
    directory: Path
    time: str
    host: str
    host_label: str
    results: dict[str, Results]
    findings: dict[str, dict[str, Any]]


def load_history(
    reports_dir: str | os.PathLike[str], *, skipped: list[tuple[Path, str]] | None = None
) -> list[RunRecord]:
    """Every run folder of ``reports_dir`` (one holding ``*/results.json``), oldest first.

    A run whose files are corrupt or hand-edited does not stop the others: it is left out
    and, with ``skipped``, listed there as ``(folder, what is wrong)``."""
    folder = Path(reports_dir)
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder of report runs")
    runs = []
    for directory in run_folders(folder):
        try:
            results = load_run(directory)
            findings = {}
            for name in results:
                finding = load_finding(directory / name)
                if finding is not None:
                    findings[name] = finding
        except (ValueError, OSError) as error:  # orjson's decode error is a ValueError
            if skipped is not None:
                skipped.append((directory, str(error)))
            continue
        metadata = next(iter(results.values())).metadata
        host, label = host_fingerprint(metadata)
        runs.append(
            RunRecord(
                directory.name, directory, str(metadata.get("time", "")), host, label, results, findings
            )
        )
    runs.sort(key=lambda run: (run.time, run.name))
    return runs


@dataclasses.dataclass(frozen=True)
class History:
    """The trends (one row per host, notebook, point, metric and run), the changes found
    in them, and the recommended settings over time."""

    trends: pd.DataFrame
    changes: pd.DataFrame
    settings: pd.DataFrame
    hosts: dict[str, str]
    #: (host, notebook) -> (metric, point) of the latest run's key figure, drawn on the page.
    keys: dict[tuple[str, str], tuple[str, str]] = dataclasses.field(default_factory=dict)

    def regressions(self) -> pd.DataFrame:
        """The changes for the worse (the ones reaching the latest run of their host)."""
        worse = self.changes[self.changes["worse"]] if not self.changes.empty else self.changes
        if not worse.empty:
            worse = worse[worse["reaches_latest"]]
        return worse


def analyze_history(runs: Sequence[RunRecord], *, min_effect: float = 0.03) -> History:
    """Trends, changes and settings of ``runs`` (from :func:`load_history`), per host."""
    import pandas as pd

    rows = []
    for index, run in enumerate(runs):
        for notebook, results in run.results.items():
            summary = summarize(results.to_frame(), results.parameters, results.metrics)
            for record in summary.to_dict("records"):
                point = ", ".join(f"{p}={record[p]}" for p in results.parameters)
                rows.append(
                    {
                        "host": run.host,
                        "run": run.name,
                        "order": index,
                        "time": run.time,
                        "notebook": notebook,
                        "point": point,
                        "metric": record["metric"],
                        "unit": results.units.get(record["metric"], ""),
                        "higher_is_better": results.higher_is_better.get(record["metric"]),
                        "median": record["median"],
                        "ci_low": record["ci_low"],
                        "ci_high": record["ci_high"],
                        "n": record["n"],
                    }
                )
    trends = pd.DataFrame(rows)
    changes = []
    if not trends.empty:
        keys = ["host", "notebook", "point", "metric"]
        for key, series in trends.groupby(keys, sort=False):
            series = series.sort_values("order")
            if len(series) < MIN_RUNS:
                continue
            higher = series["higher_is_better"].iloc[0]
            found = detect_changes(series["median"].to_list(), min_effect=min_effect)
            for i, change in enumerate(found):
                latest = change.kind == "drift" or i == len(found) - 1  # no later step follows
                changes.append(_change_row(dict(zip(keys, key, strict=True)), series, change, higher, latest))
    settings = []
    for run in runs:
        for notebook, finding in run.findings.items():
            for name, value in (finding.get("recommended") or {}).items():
                settings.append(
                    {
                        "host": run.host,
                        "run": run.name,
                        "time": run.time,
                        "notebook": notebook,
                        "setting": name,
                        "value": str(value),
                        "decision": finding.get("decision"),
                    }
                )
    key_series: dict[tuple[str, str], tuple[str, str]] = {}
    for run in runs:  # oldest first: the latest run's key figure wins
        for notebook, finding in run.findings.items():
            value = finding.get("key_value")
            if value and notebook in run.results:
                point = ", ".join(f"{p}={value['point'].get(p)}" for p in run.results[notebook].parameters)
                key_series[(run.host, notebook)] = (str(value["metric"]), point)
    return History(
        trends,
        pd.DataFrame(changes, columns=[*_CHANGE_COLUMNS]),
        pd.DataFrame(settings, columns=["host", "run", "time", "notebook", "setting", "value", "decision"]),
        {run.host: run.host_label for run in runs},
        key_series,
    )


_CHANGE_COLUMNS = (
    "host",
    "notebook",
    "point",
    "metric",
    "kind",
    "from_run",
    "at_run",
    "at_time",
    "before",
    "after",
    "change",
    "difference",
    "worse",
    "reaches_latest",
)


def change_text(change: float, difference: float) -> str:
    """A change as people read it: relative, or the difference for a signed metric."""
    return f"{difference:+,.4g} (diff)" if change != change else f"{change:+.1%}"


def _change_row(
    key: dict[str, Any], series: pd.DataFrame, change: Change, higher: bool | None, latest: bool
) -> dict[str, Any]:
    runs = series["run"].to_list()
    return {
        **key,
        "kind": change.kind,
        "from_run": runs[change.start],
        "at_run": runs[change.at],
        "at_time": series["time"].to_list()[change.at],
        "before": change.before,
        "after": change.after,
        # A relative change only for a metric that cannot go negative; a signed one (an error
        # in percent) shows its difference instead.
        "change": change.ratio - 1 if change.before > 0 and change.after >= 0 else math.nan,
        "difference": change.after - change.before,
        "worse": bool(higher is not None and change.worse(higher)),
        "reaches_latest": latest,
    }


def setting_moves(settings: pd.DataFrame) -> pd.DataFrame:
    """The runs at which a notebook's recommended setting took a new value, per host."""
    import pandas as pd

    moves: list[dict[str, Any]] = []
    columns = ["host", "notebook", "setting", "run", "time", "from", "to", "overlap"]
    if settings.empty:
        return pd.DataFrame(moves, columns=columns)
    for (host, notebook, setting), rows in settings.groupby(["host", "notebook", "setting"], sort=False):
        previous: Mapping[Any, Any] | None = None
        for row in rows.to_dict("records"):
            if previous is not None and row["value"] != previous["value"]:
                moves.append(
                    {
                        "host": host,
                        "notebook": notebook,
                        "setting": setting,
                        "run": row["run"],
                        "time": row["time"],
                        "from": previous["value"],
                        "to": row["value"],
                        "overlap": decisions_overlap(previous["decision"], row["decision"]),
                    }
                )
            previous = row
    return pd.DataFrame(moves, columns=columns)


def write_history(history: History, out: str | os.PathLike[str]) -> Path:
    """The history page: ``out`` (an .html file) with its figures beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    page = Path(out)
    figures = page.parent / f"{page.stem}-figures"
    figures.mkdir(parents=True, exist_ok=True)
    esc = html.escape
    sections = []
    trends = history.trends
    for host, label in history.hosts.items():
        at_host = trends[trends["host"] == host] if not trends.empty else trends
        runs = at_host["run"].nunique() if not at_host.empty else 0
        parts = [f"<h2>Host {esc(host)}</h2><p class='meta'>{esc(label)} · {runs} run(s)</p>"]
        for notebook_key, rows in at_host.groupby("notebook", sort=True):
            notebook = str(notebook_key)
            key_metric, key_point = _key_series(rows, history, host, notebook)
            series = rows[(rows["metric"] == key_metric) & (rows["point"] == key_point)].sort_values("order")
            fig, ax = plt.subplots(figsize=(7, 2.8), layout="constrained")
            x = list(range(len(series)))
            ax.errorbar(
                x,
                series["median"],
                yerr=[series["median"] - series["ci_low"], series["ci_high"] - series["median"]],
                fmt="o-",
                capsize=3,
            )
            found = _changes_of(history.changes, host, notebook, key_metric, key_point)
            runs_list = series["run"].to_list()
            for change in found.to_dict("records"):
                where = runs_list.index(change["at_run"]) - 0.5
                label = f"{change['kind']} {change_text(change['change'], change['difference'])}"
                ax.axvline(where, color="crimson", linestyle="--", label=label)
            ax.set_xticks(x, [r[:15] for r in runs_list], rotation=30, fontsize=6, ha="right")
            ax.set(
                title=f"{notebook}: {key_metric} at {key_point}",
                ylabel="median" + (f" ({series['unit'].iloc[0]})" if series["unit"].iloc[0] else ""),
            )
            ax.grid(True, alpha=0.3)
            if not found.empty:
                ax.legend(fontsize=7)
            name = f"{host}-{notebook}.png"
            fig.savefig(figures / name, dpi=100)
            plt.close(fig)
            parts.append(
                f"<h3>{esc(notebook)}</h3><img src='{figures.name}/{name}' alt='{esc(notebook)} trend'>"
            )
        sections.append("\n".join(parts))
    change_rows = (
        "".join(
            _row(
                [c["host"], c["notebook"], c["point"], c["metric"], c["kind"], c["at_run"]]
                + [f"{c['before']:,.4g}", f"{c['after']:,.4g}", change_text(c["change"], c["difference"])]
                + ["worse" if c["worse"] else "better or neutral"],
                "worse" if c["worse"] else "",
            )
            for c in history.changes.to_dict("records")
        )
        or "<tr><td colspan=10>No change found: every trend stays within its run-to-run noise.</td></tr>"
    )
    moves = setting_moves(history.settings)
    move_rows = (
        "".join(
            _row(
                [m["host"], m["notebook"], m["setting"], m["from"], m["to"], m["run"], m["time"]]
                + [{True: "within the noise", False: "a real move"}.get(m["overlap"], "no decision")],
                "worse" if m["overlap"] is False else "",
            )
            for m in moves.to_dict("records")
        )
        or "<tr><td colspan=8>No recommended setting moved.</td></tr>"
    )
    warning = ""
    if len(history.hosts) > 1:
        warning = (
            f"<p class='warning'>These runs come from {len(history.hosts)} different hosts: each host's "
            "trend stands alone; a comparison across hosts would compare hardware, not code.</p>"
        )
    run_count = history.trends["run"].nunique() if not history.trends.empty else 0
    body = f"""<h1>perflab history</h1>
<p class="meta">{run_count} runs · changes found with PELT (ruptures) and a Kendall trend
test, kept when larger than the run-to-run noise and 3%</p>
{warning}
<h2>Changes</h2>
<table><tr>{_heads("host notebook point metric kind at_run before after change direction")}</tr>
{change_rows}</table>
<h2>Recommended settings: when they moved</h2>
<table><tr>{_heads("host notebook setting from to run time decision")}</tr>{move_rows}</table>
{"".join(sections)}"""
    body = html_page("perflab history", body, style="tr.worse td { background: #fde8e8; }\n")
    page.write_text(body, encoding="utf-8")
    return page


def _heads(names: str) -> str:
    return "".join(f"<th>{name.replace('_', ' ')}</th>" for name in names.split())


def _row(cells: Sequence[Any], css: str = "") -> str:
    inner = "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells)
    return f"<tr class='{css}'>{inner}</tr>"


def _changes_of(changes: pd.DataFrame, host: str, notebook: str, metric: str, point: str) -> pd.DataFrame:
    if changes.empty:
        return changes
    mask = (changes["host"] == host) & (changes["notebook"] == notebook)
    return changes[mask & (changes["metric"] == metric) & (changes["point"] == point)]


def _key_series(rows: pd.DataFrame, history: History, host: str, notebook: str) -> tuple[str, str]:
    """The series to draw for a notebook: the first one with a change, else its key
    figure's, else its first."""
    changes = history.changes
    if not changes.empty:
        mine = changes[(changes["host"] == host) & (changes["notebook"] == notebook)]
        if not mine.empty:
            return str(mine["metric"].iloc[0]), str(mine["point"].iloc[0])
    key = history.keys.get((host, notebook))
    if key is not None and ((rows["metric"] == key[0]) & (rows["point"] == key[1])).any():
        return key
    first = rows.iloc[0]
    return str(first["metric"]), str(first["point"])
