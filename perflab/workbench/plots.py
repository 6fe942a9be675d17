"""Plots for the workbench: every measured line carries its spread (the interquartile band
and min-max whiskers), with the ideal drawn beside it. Each function returns a Figure."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from perflab.measure.queueing import throughput
from perflab.measure.results import HOST_COLUMN

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DASHBOARD_PLOTS",
    "plot_adaptive",
    "READ_PANELS",
    "ecdf_plot",
    "line_with_spread",
    "pareto_plot",
    "plot_batch_sweep",
    "plot_before_after",
    "plot_codec_front",
    "plot_dashboard",
    "plot_collector_search",
    "plot_pool_sweep",
    "plot_rate_sweep",
    "plot_read_sweep",
    "plot_sample_promises",
    "plot_write_sweep",
]

IDEAL_STYLE: dict[str, Any] = {"linestyle": "--", "linewidth": 1.2, "alpha": 0.8}


def _figure(panels: int, width: float = 5.2, height: float = 3.8) -> tuple[Figure, list[Axes]]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(width * panels, height), layout="constrained")
    return fig, list(axes) if panels > 1 else [axes]


def line_with_spread(
    ax: Axes, summary: pd.DataFrame, x: str, metric: str, *, label: str | None = None, color: Any = None
) -> Any:
    """Median line, interquartile band and min-max whiskers of one metric from
    :func:`perflab.measure.results.summarize`."""
    rows = summary[summary["metric"] == metric].sort_values(x)
    if rows.empty:
        return None
    xs = rows[x].to_numpy()
    (line,) = ax.plot(xs, rows["median"], marker="o", markersize=4, label=label, color=color)
    ax.fill_between(xs, rows["q25"], rows["q75"], alpha=0.25, color=line.get_color(), linewidth=0)
    ax.errorbar(
        xs,
        rows["median"],
        yerr=[rows["median"] - rows["min"], rows["max"] - rows["median"]],
        fmt="none",
        ecolor=line.get_color(),
        alpha=0.5,
        capsize=2,
    )
    return line


def _by(summary: pd.DataFrame, column: str | None) -> list[tuple[Any, pd.DataFrame]]:
    if column is None:
        return [(None, summary)]
    return [(value, summary[summary[column] == value]) for value in summary[column].drop_duplicates()]


def plot_pool_sweep(
    summary: pd.DataFrame,
    *,
    x: str = "max_concurrent",
    group: str | None = "latency",
    mean_latency_s: Mapping[Any, float] | None = None,
    server_cap: int | None = None,
    knees: Mapping[Any, Any] | None = None,
) -> Figure:
    """Throughput with Little's law (concurrency / mean latency) as the ideal, latency
    p50/p99, and the server's refusals (429, 503), against pool size."""
    fig, (thr, lat, rej) = _figure(3)
    for value, rows in _by(summary, group):
        line = line_with_spread(thr, rows, x, "throughput", label=f"{value} measured")
        color = line.get_color() if line is not None else None
        if mean_latency_s and value in mean_latency_s:
            xs = sorted(rows[x].unique())
            ideal = [throughput(min(c, server_cap or c), mean_latency_s[value]) for c in xs]
            thr.plot(xs, ideal, color=color, label=f"{value} ideal (Little's law)", **IDEAL_STYLE)
        if knees and value in knees:
            thr.axvline(knees[value], color=color, linestyle=":", linewidth=1)
        line_with_spread(lat, rows, x, "p50_ms", label=f"{value} p50", color=color)
        p99 = line_with_spread(lat, rows, x, "p99_ms", label=f"{value} p99", color=color)
        if p99 is not None:
            p99.set_linestyle("-.")
        line_with_spread(rej, rows, x, "rejected_per_s", label=f"{value}", color=color)
    if server_cap:
        for ax in (thr, rej):
            ax.axvline(
                server_cap, color="grey", linestyle="--", linewidth=1, label=f"server cap {server_cap}"
            )
    thr.set(title="Throughput (200s per second)", ylabel="requests/s")
    lat.set(title="Latency of answered calls", ylabel="ms", yscale="log")
    rej.set(title="refusals from the server (429, 503)", ylabel="per second")
    for ax in (thr, lat, rej):
        ax.set(xscale="log", xlabel=x)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def plot_rate_sweep(
    summary: pd.DataFrame, *, x: str = "rate", group: str | None = "burst", server_rate: float | None = None
) -> Figure:
    """Achieved against target rate (the target is the ideal), waits, and the server's 429s."""
    fig, (ach, wait, rej) = _figure(3)
    targets = sorted(summary[x].unique())
    ach.plot(targets, targets, color="black", label="target (ideal)", **IDEAL_STYLE)
    for value, rows in _by(summary, group):
        label = f"{group} {value}" if group else None
        line = line_with_spread(ach, rows, x, "achieved_rate", label=label)
        color = line.get_color() if line is not None else None
        line_with_spread(wait, rows, x, "wait_p99_ms", label=label, color=color)
        line_with_spread(rej, rows, x, "rejected_per_s", label=label, color=color)
    if server_rate:
        for ax in (ach, rej):
            ax.axvline(
                server_rate,
                color="grey",
                linestyle="--",
                linewidth=1,
                label=f"server limit {server_rate:g}/s",
            )
    ach.set(title="Achieved rate", ylabel="tokens/s")
    wait.set(title="Wait for a token, p99", ylabel="ms")
    rej.set(title="429s from the server", ylabel="per second")
    for ax in (ach, wait, rej):
        ax.set(xlabel=f"{x} (target, per second)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def ecdf_plot(samples: Mapping[str, Sequence[float]], *, xlabel: str, title: str) -> Figure:
    """Empirical CDFs of several sample sets, e.g. wait times per setting."""
    import numpy as np

    fig, (ax,) = _figure(1, width=6)
    for label, values in samples.items():
        data = np.sort(np.asarray(values, dtype=float))
        if data.size:
            ax.step(data, np.arange(1, data.size + 1) / data.size, where="post", label=label)
    ax.set(xlabel=xlabel, ylabel="share of requests", title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def pareto_plot(
    points: pd.DataFrame,
    front: pd.DataFrame,
    *,
    x: str,
    y: str,
    label: Callable[[Any], str],
    xlabel: str,
    ylabel: str,
    title: str,
) -> Figure:
    """Every setting as a point (median, with IQR whiskers when given), the front joined."""
    fig, (ax,) = _figure(1, width=6.5, height=4.5)
    xerr = _whiskers(points, x)
    yerr = _whiskers(points, y)
    ax.errorbar(
        points[x], points[y], xerr=xerr, yerr=yerr, fmt="o", alpha=0.6, label="settings (median, IQR)"
    )
    ordered = front.sort_values(x)
    ax.plot(ordered[x], ordered[y], "-o", color="crimson", label="Pareto front")
    for _, row in front.iterrows():
        ax.annotate(label(row), (row[x], row[y]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _whiskers(points: pd.DataFrame, column: str) -> Any:
    low, high = f"{column}_q25", f"{column}_q75"
    if low in points and high in points:
        return [(points[column] - points[low]).clip(lower=0), (points[high] - points[column]).clip(lower=0)]
    return None


def plot_batch_sweep(points: pd.DataFrame, front: pd.DataFrame, *, arrival_rate: float) -> Figure:
    """Throughput against item latency p99 per (batch_size, flush_interval); the arrival
    rate is the ideal throughput."""
    fig = pareto_plot(
        points,
        front,
        x="item_p99_ms",
        y="throughput",
        label=lambda row: f"{int(row['batch_size'])} / {row['flush_interval'] * 1e3:g} ms",
        xlabel="item latency p99 (ms, log)",
        ylabel="items/s landed",
        title="Batching: throughput against latency (batch_size / flush_interval)",
    )
    ax = fig.axes[0]
    ax.axhline(arrival_rate, color="black", label=f"arrival rate {arrival_rate:g}/s (ideal)", **IDEAL_STYLE)
    ax.set_xscale("log")
    ax.legend(fontsize=7)
    return fig


def plot_write_sweep(summary: pd.DataFrame, ways: pd.DataFrame) -> Figure:
    """Write speed and page faults against buffer size, per ``max_writes``, beside list +
    join by chunk size, the floor (ideal) and the per-record ways. ``ways`` is the tidy
    frame of :func:`perflab.workbench.io_experiments.write_ways`."""
    from perflab.measure.results import summarize

    fig, (speed, faults) = _figure(2, width=5.5, height=4)
    for value in summary["max_writes"].drop_duplicates():
        rows = summary[summary["max_writes"] == value]
        label = f"BufferedWriter, max_writes={value:,}"
        line_with_spread(speed, rows, "buffer_size", "mb_per_s", label=label)
        line_with_spread(faults, rows, "buffer_size", "minor_faults", label=label)
    joins = ways[ways["way"] == "list + join"]
    if not joins.empty:
        by_chunk = summarize(joins.drop(columns="way"), ["chunk"], ["mb_per_s", "minor_faults"])
        line_with_spread(speed, by_chunk, "chunk", "mb_per_s", label="list + join (chunk size)")
        line_with_spread(faults, by_chunk, "chunk", "minor_faults", label="list + join (chunk size)")
    medians = ways.groupby("way", sort=False)["mb_per_s"].median()
    floor = "floor: serialize all + one write"
    speed.axhline(medians[floor], color="black", label=f"{floor} (ideal)", **IDEAL_STYLE)
    left = float(summary["buffer_size"].min())
    for name in ("orjson per record, buffered file", "json.dumps per record, unbuffered"):
        speed.axhline(medians[name], linestyle=":", color="grey")
        speed.annotate(name, (left, medians[name]), fontsize=7, va="bottom")
    speed.set(xscale="log", xlabel="buffer_size (bytes)", ylabel="MB/s", title="Write speed")
    faults.set(
        xscale="log",
        yscale="symlog",
        xlabel="buffer_size (bytes)",
        ylabel="minor page faults per run",
        title="Page faults (the allocator cliff)",
    )
    for ax in (speed, faults):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return fig


#: The reading notebook's panels: title, ways, unit.
READ_PANELS = (
    ("Sequential lines", ("open lines", "mmap lines"), "lines/s"),
    ("Parsed records", ("json.loads records", "mmap records", "read_jsonl records"), "records/s"),
    ("Random lines (index build included)", ("python index + seek", "mmap line(i)"), "lookups/s"),
)


def plot_read_sweep(summary: pd.DataFrame) -> Figure:
    """Lines, records and random lookups per second against file size, each way with its
    spread."""
    fig, axes = _figure(3, width=5, height=4)
    for ax, (title, names, unit) in zip(axes, READ_PANELS, strict=True):
        for name in names:
            line_with_spread(ax, summary[summary["how"] == name], "records", "per_s", label=name)
        ax.set(xscale="log", xlabel="file size (records)", ylabel=unit, title=title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def plot_codec_front(points: pd.DataFrame, front: pd.DataFrame, *, flush_bytes: int) -> Figure:
    """Space saved against compress speed per codec level, the Pareto front joined."""
    fig = pareto_plot(
        points,
        front,
        x="compress_mb_s",
        y="saved_pct",
        label=lambda row: str(row["codec"]),
        xlabel="compress MB/s (log)",
        ylabel="space saved (%)",
        title=f"Saving against speed, {flush_bytes // 1024} KiB frames",
    )
    fig.axes[0].set_xscale("log")
    return fig


def plot_sample_promises(
    windows: Mapping[str, Sequence[float]], *, whole: float, whole_mb: float, repetitive: float
) -> Figure:
    """What samples of each size promise (box per size) against the whole data set and a
    3.9 KB repetitive sample."""
    fig, (ax,) = _figure(1, width=7, height=4)
    ax.boxplot(list(windows.values()), tick_labels=list(windows))
    ax.axhline(whole, color="black", linestyle="--", label=f"whole data set {whole_mb:.1f} MB: {whole:.1f}%")
    label = f"3.9 KB of repetitive test records: {repetitive:.1f}%"
    ax.axhline(repetitive, color="crimson", linestyle=":", label=label)
    ax.set(ylabel="space saved by gzip-6 (%)", title="What a sample promises")
    ax.legend(fontsize=8)
    return fig


def plot_before_after(frame: pd.DataFrame, metrics: Sequence[str], *, column: str = "version") -> Figure:
    """One bar pair per metric: the median before and after, with min-max whiskers."""
    fig, axes = _figure(len(metrics), width=3, height=3.4)
    for ax, metric in zip(axes, metrics, strict=True):
        values = [frame[frame[column] == v][metric] for v in ("before", "after")]
        medians = [v.median() for v in values]
        low = [m - v.min() for m, v in zip(medians, values, strict=True)]
        high = [v.max() - m for m, v in zip(medians, values, strict=True)]
        ax.bar(["before", "after"], medians, yerr=[low, high], capsize=4, color=["#c44e52", "#55a868"])
        ax.set_title(metric, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Before and after the advice (median, min-max whiskers)")
    return fig


def plot_collector_search(
    searched: pd.DataFrame,
    chosen: Mapping[str, Any] | None,
    codecs: pd.DataFrame,
    *,
    target_s: float,
    budget_s: float,
    floor_s: float,
    server_cap: int,
) -> Figure:
    """The worst cycle against pool size per rate (every setting the search measured),
    with the target, the budget, the server's floor and cap; and the log codecs' CPU
    against size."""
    fig, (surface, costs) = _figure(2, width=6, height=4.2)
    worst = searched.groupby(["rate", "pool_size"], as_index=False)["cycle_s"].max()
    for rate, rows in worst.groupby("rate"):
        surface.plot(rows["pool_size"], rows["cycle_s"], "o-", label=f"rate {rate:,.0f}/s")
    surface.axhline(target_s, color="crimson", linestyle="--", label=f"target {target_s:g} s")
    budget = "budget (target less margin)"
    surface.axhline(budget_s, color="crimson", linestyle=":", linewidth=1, label=budget)
    surface.axhline(floor_s, color="black", label=f"floor {floor_s:.2f} s (server limits)", **IDEAL_STYLE)
    surface.axvline(server_cap, color="grey", linestyle="--", linewidth=1, label=f"server cap {server_cap}")
    if chosen is not None:
        surface.plot(
            [chosen["pool_size"]],
            [chosen["cycle_worst_s"]],
            "*",
            markersize=16,
            color="gold",
            markeredgecolor="black",
            label="chosen",
        )
    surface.set(
        xlabel="pool size (connections)", ylabel="worst cycle (s)", title="Cycle time against pool size"
    )
    surface.grid(True, alpha=0.3)
    surface.legend(fontsize=7)
    for _, row in codecs.iterrows():
        costs.plot(row["cpu_ms_per_cycle"], row["log_kb_per_cycle"], "o")
        costs.annotate(
            row["codec"],
            (row["cpu_ms_per_cycle"], row["log_kb_per_cycle"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    costs.set(xlabel="CPU per cycle (ms)", ylabel="log per cycle (KiB)", title="Log codec: CPU against size")
    costs.grid(True, alpha=0.3)
    return fig


#: The monitoring notebook's panels: title, columns, y label.
DASHBOARD_PLOTS = (
    ("Symbols per cycle", ("symbols_A", "symbols_B"), "symbols"),
    ("Collection rate per track", ("collected_per_s_A", "collected_per_s_B"), "symbols/s"),
    ("Pool slot usage", ("slot_usage",), "in flight / slots"),
    ("Gaps: symbols missed per cycle", ("gaps_A", "gaps_B"), "symbols"),
    ("API calls and refusals", ("calls_ok_per_s", "calls_429_per_s", "calls_503_per_s"), "calls/s"),
    ("Limiter: achieved against target", ("limiter_per_s", "limiter_target"), "tokens/s"),
    ("Limiter wait (mean of waiters)", ("limiter_wait_ms",), "ms"),
    ("Event-loop lag (mean)", ("loop_lag_ms",), "ms"),
)


def plot_dashboard(series: pd.DataFrame, *, incident_t: float | None = None) -> Figure:
    """The dashboard's panels over the run, scrape by scrape, with the incident marked."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(18, 7), layout="constrained", sharex=True)
    for ax, (title, columns, ylabel) in zip(axes.flat, DASHBOARD_PLOTS, strict=True):
        for column in columns:
            if column in series:
                ax.plot(series.index, series[column], marker=".", markersize=3, label=column)
        if incident_t is not None:
            ax.axvline(incident_t, color="crimson", linestyle="--", linewidth=1, label="server cap halved")
        ax.set(title=title, ylabel=ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    return fig


def plot_user_sweep(
    summary: pd.DataFrame, parameters: Sequence[str], *, chosen: Mapping[str, Any] | None = None
) -> Figure:
    """A user's sweep: every metric the function returned (``seconds`` first), one panel
    each, against the first parameter, one line per setting of the others (and per host,
    for a sweep on a cluster), with the spread of every point; the recommended setting is
    marked with a star and a dashed line."""
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(summary["metric"]))
    columns = min(len(metrics), 3)
    rows_of_panels = -(-len(metrics) // columns)
    fig, grid = plt.subplots(
        rows_of_panels,
        columns,
        figsize=(5.2 * columns, 3.8 * rows_of_panels),
        layout="constrained",
        squeeze=False,
    )
    axes = list(grid.flat)
    x, others = parameters[0], list(parameters[1:])
    if HOST_COLUMN in summary.columns:
        others.append(HOST_COLUMN)
    numeric = summary[x].map(lambda v: isinstance(v, int | float)).all()
    log_x = numeric and summary[x].min() > 0 and summary[x].max() / summary[x].min() >= 8
    for ax, metric in zip(axes, metrics, strict=False):
        groups = summary.groupby(others, sort=False) if others else [((), summary)]
        for key, rows in groups:
            values = key if isinstance(key, tuple) else (key,)
            label = ", ".join(f"{k}={v}" for k, v in zip(others, values, strict=True))
            line_with_spread(ax, rows, x, metric, label=label or None)
        if chosen is not None:
            picked = summary[summary["metric"] == metric]
            for name, value in chosen.items():
                picked = picked[picked[name] == value]
            ax.axvline(chosen[x], color="0.3", linestyle="--", linewidth=1)
            ax.plot(picked[x], picked["median"], marker="*", markersize=14, color="gold", markeredgecolor="k",
                    linestyle="none", label="recommended", zorder=5)  # fmt: skip
        if log_x:
            ax.set_xscale("log")
        ax.set(xlabel=x, ylabel=metric, title=f"{metric} by {x}")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle(
        "median, IQR band, min-max" + ("; star: the recommended setting" if chosen else ""), fontsize=9
    )
    return fig


def plot_adaptive(traces: Sequence[Any], *, title: str = "") -> Figure:
    """Per contender (its first run): the pool's limit and calls in flight over time,
    against the server's true cap (a step line), phase changes marked."""
    import matplotlib.pyplot as plt

    from perflab.workbench.adaptive import cap_over_time

    first: dict[str, Any] = {}
    for trace in traces:
        first.setdefault(trace.contender, trace)
    columns = 2
    rows = (len(first) + columns - 1) // columns
    fig, axes = plt.subplots(
        rows, columns, figsize=(13, 2.6 * rows), layout="constrained", sharex=True, squeeze=False
    )
    for ax, (name, trace) in zip(axes.flat, first.items(), strict=False):
        times, caps = cap_over_time(trace.phases)
        ax.plot(times, caps, color="black", **IDEAL_STYLE, label="server cap")
        ax.plot(trace.times, trace.in_flight, linewidth=0.8, alpha=0.6, label="in flight")
        ax.plot(trace.times, trace.limit, linewidth=1.6, label="pool limit")
        for edge in trace.edges[1:-1]:
            ax.axvline(edge, color="crimson", linewidth=0.8, alpha=0.6)
        ax.set(title=name, ylabel="calls")
        ax.set_ylim(0, max(max(caps) * 1.6, 4))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, loc="upper right")
    for ax in axes.flat[len(first) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    return fig
