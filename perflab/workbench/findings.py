"""What each notebook concludes, computed from its measurements.

Every sentence of a conclusion and every recommended value comes from the data passed in:
a claim ("more connections only draw 429s") is made only when the numbers show it, and
is replaced by what they do show otherwise. A :class:`Finding` also names the value
behind its key figure (metric, setting, statistic), so a test can hold it against the
saved ``summary.csv``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from perflab.measure.decision import Decision, decide
from perflab.measure.results import HOST_COLUMN
from perflab.measure.sweep import facts_of
from perflab.workbench.io_experiments import READER_RATIOS

if TYPE_CHECKING:
    import pandas as pd


__all__ = [
    "Finding",
    "KeyValue",
    "adaptive",
    "batching",
    "collector",
    "compression",
    "decision_move",
    "decisions_overlap",
    "monitoring",
    "move_text",
    "profiler",
    "ratelimit",
    "read_decisions",
    "reading",
    "taskpool",
    "writes",
]


@dataclasses.dataclass(frozen=True, slots=True)
class KeyValue:
    """The measured value a key figure quotes: ``statistic`` of ``metric`` at ``point``."""

    metric: str
    point: dict[str, Any]
    value: float
    statistic: Literal["median", "min", "max"] = "median"


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """A notebook's result for the report: its title, key figure (and the value behind
    it), the recommended settings and the conclusion in Markdown."""

    title: str
    key_figure: str
    recommended: dict[str, Any]
    conclusion: str
    key_value: KeyValue | None = None
    #: how sure the recommendation is (:func:`decision_card`), for the report's card
    decision: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def decision_card(decision: Decision, runs: int | None = None) -> dict[str, Any]:
    """What the report card says of a decision: the choice, its PCS, whether it settled
    (and if not, why), the settings it could not tell apart, and the runs it took."""
    return {
        "chosen": None if decision.chosen is None else dict(decision.chosen),
        "pcs": round(decision.pcs, 4),
        "settled": decision.settled,
        "why": decision.why,
        "indistinguishable": [dict(p) for p in decision.indistinguishable],
        "runs": runs if runs is not None else sum(v.n for v in decision.settings),
    }


def _median(summary: pd.DataFrame, metric: str, **point: Any) -> float:
    rows = summary[summary["metric"] == metric]
    for column, value in point.items():
        rows = rows[rows[column] == value]
    if len(rows) != 1:
        raise ValueError(f"expected one {metric} row at {point}, found {len(rows)}")
    return float(rows["median"].iloc[0])


def _per_s(value: float) -> str:
    """A rate as people read it: 6.5, 22,400."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


# --------------------------------------------------------------------------- asyncio


def taskpool(
    summary: pd.DataFrame,
    baselines: pd.DataFrame,
    decisions: Mapping[str, Decision],
    *,
    server_cap: int,
    server_rate: float | None = None,
    server_burst: float = 1,
    client_rate: float | None = None,
    send_jitter_ms: float | None = None,
) -> Finding:
    """The decision for the last (hardest) latency: the smallest pool within the zone of the
    best throughput that draws no refusal and stays within the server's cap, against one call
    at a time (``baselines``: the tidy baseline sweep); what larger pools drew; against a
    rate limit, the rate the pool was paced at (``client_rate``, sized for
    ``send_jitter_ms``)."""
    key = list(decisions)[-1]
    decision = decisions[key]
    worst = str(decision.scenario.get("latency", key))
    at = summary[summary["latency"] == worst]
    sequential = float(
        baselines[(baselines["baseline"] == "sequential") & (baselines["latency"] == worst)][
            "throughput"
        ].median()
    )
    text = f"With latency `{worst}`: {decision.text(_setting)} "
    if server_rate:
        paced = server_rate if client_rate is None else client_rate
        text += f"Every pool sent through a limiter at {paced:,.1f}/s"
        if send_jitter_ms is not None and paced < server_rate:
            text += (
                f", {1 - paced / server_rate:.1%} under the server's {server_rate:g}/s: the headroom "
                f"{send_jitter_ms:.2f} ms of send jitter needs with a burst of {server_burst:g}. "
            )
        else:
            text += f" (the server's rate limit {server_rate:g}/s, burst {server_burst:g}). "
    # Any refusal in any repeat counts, as the decision counts it: a median hides a sporadic one.
    rejected = at[(at["metric"] == "rejected_per_s") & (at["max"] > 0)].sort_values("max_concurrent")
    if rejected.empty:
        text += f"No setting drew a refusal (429, 503) from the server (cap {server_cap}) in any repeat. "
    else:
        pools = ", ".join(
            f"{int(pool)} (median {_per_s(median)}/s, max {_per_s(most)}/s)"
            for pool, median, most in zip(
                rejected["max_concurrent"], rejected["median"], rejected["max"], strict=True
            )
        )
        text += f"The server (cap {server_cap}) refused calls (429, 503) in a repeat at pool sizes {pools}. "
    if decision.chosen is None:
        return Finding(
            title="Task pool: concurrency against a capped API",
            key_figure=f"no pool size met the limits ({worst})",
            recommended={},
            conclusion=text.strip(),
            decision=decision_card(decision),
        )
    chosen = decision.verdict(decision.chosen)
    pool = _scalar(decision.chosen["max_concurrent"])
    text += (
        f"It collects {chosen.median / sequential:,.1f}x what one call at a time does. "
        f"Recommended: `TaskPool(max_concurrent={pool})`."
    )
    return Finding(
        title="Task pool: concurrency against a capped API",
        key_figure=f"{chosen.median:,.0f} req/s at max_concurrent={pool} ({worst})",
        recommended={"max_concurrent": pool},
        conclusion=text,
        key_value=KeyValue("throughput", {"max_concurrent": pool, "latency": worst}, chosen.median),
        decision=decision_card(decision),
    )


def ratelimit(
    summary: pd.DataFrame,
    decision: Decision,
    *,
    server_rate: float,
    server_burst: float,
    spacing: str = "average",
    no_burst: pd.DataFrame | None = None,
    rate_ceiling: float | None = None,
    send_jitter_ms: float | None = None,
) -> Finding:
    """How far the achieved rate strays from its target; the decision (the lowest rate and
    burst within the zone of the best achieved rate that draw no 429 in any run, under
    ``rate_ceiling``); the headroom ``send_jitter_ms`` cost; what rates past the server's
    limit and bursts past its burst drew."""
    error = summary[summary["metric"] == "rate_error_pct"]
    worst = error.iloc[int(error["median"].abs().to_numpy().argmax())]
    rejected = summary[summary["metric"] == "rejected_per_s"]
    text = (
        f"Across the grid the achieved rate stays within {abs(worst['median']):.2f}% of its target "
        f"(worst: rate {worst['rate']:g}, burst {int(worst['burst'])}). {decision.text(_setting)} "
    )
    if rate_ceiling is not None and send_jitter_ms is not None:
        headroom = 1 - rate_ceiling / server_rate
        text += f"Sends that leave up to {send_jitter_ms:.2f} ms late (the event loop's lag p99) " + (
            f"need {headroom:.1%} headroom under the server's {server_rate:g}/s with a burst of "
            f"{server_burst:g}: no rate above {rate_ceiling:,.1f}/s is recommended. "
            if headroom > 0
            else f"are absorbed by the server's burst of {server_burst:g}: no headroom is needed. "
        )
    above = rejected[rejected["rate"] > server_rate]
    if not above.empty:
        spared = above[above["max"] == 0]
        if spared.empty:
            text += f"Every rate above the server's {server_rate:g}/s drew 429s with every burst measured. "
        else:
            pairs = ", ".join(f"{r['rate']:g}/s burst {int(r['burst'])}" for _, r in spared.iterrows())
            text += f"Above the server's {server_rate:g}/s, these drew no 429 in any run: {pairs}. "
    bursty = rejected[(rejected["rate"] <= server_rate) & (rejected["burst"] > server_burst)]
    if not bursty.empty:
        hit = int((bursty["max"] > 0).sum())
        text += (
            f"Below the limit, {hit} of {len(bursty)} settings with a burst above the server's "
            f"({server_burst:g}) drew 429s in some run."
        )
    if no_burst is not None and not no_burst.empty:
        top = float(no_burst["rate"].max())
        share = top / server_rate

        def refused(spacing_: str) -> float:
            return _median(no_burst, "rejected_per_s", rate=top, spacing=spacing_)

        text = text.rstrip() + (
            f" Against a server that allows no burst, at {share:.0%} of its rate the default spacing drew "
            f'{refused("average"):,.1f} 429/s (median) and spacing="strict" {refused("strict"):,.1f}/s, '
            f"achieving {_median(no_burst, 'achieved_rate', rate=top, spacing='strict'):,.1f}/s."
        )
    key = f"rate error within {abs(worst['median']):.2f}%"
    recommended: dict[str, Any] = {}
    if decision.chosen is not None:
        rate, burst = float(decision.chosen["rate"]), int(decision.chosen["burst"])
        recommended = {"rate": rate, "burst_size": burst, "spacing": spacing}
        key += f"; {rate:g}/s burst {burst} draws no 429"
        if spacing != "average":
            text += (
                f' The limiter runs with spacing="{spacing}": the server allows no burst, or none is known '
                "(perflab observe cannot see one), so no two calls may come closer than 1/rate."
            )
    return Finding(
        title="Rate limit: achieved rate, waits and 429s",
        key_figure=key,
        recommended=recommended,
        conclusion=text.strip(),
        key_value=KeyValue(
            "rate_error_pct",
            {"rate": float(worst["rate"]), "burst": _scalar(worst["burst"])},
            float(worst["median"]),
        ),
        decision=decision_card(decision),
    )


def batching(
    points: pd.DataFrame,
    front: pd.DataFrame,
    decision: Decision,
    *,
    arrival_rate: float,
    latency_budget_ms: float,
) -> Finding:
    """The decision (the smallest batch, then the shortest interval, within the zone of the
    fewest sink calls among the settings that keep up within the latency budget); which
    settings fall behind; the Pareto front. ``points`` holds the medians per setting."""
    slowest = points.sort_values("throughput").iloc[0]
    text = (
        f"{len(front)} of {len(points)} settings are on the Pareto front of throughput against "
        "p99 item latency. "
    )
    if slowest["throughput"] < 0.95 * arrival_rate:
        text += (
            f"Batches of {int(slowest['batch_size'])} land {slowest['throughput']:,.0f} items/s against "
            f"{arrival_rate:,.0f} arriving: the per-call cost makes the sink fall behind and items queue "
            f"(p99 {slowest['item_p99_ms']:,.0f} ms). "
        )
    else:
        text += f"Every setting keeps up with {arrival_rate:,.0f} items/s arriving. "
    text += decision.text(_setting)
    if decision.chosen is None:
        return Finding(
            title="Batching: throughput against item latency",
            key_figure=f"no setting keeps up within {latency_budget_ms:g} ms",
            recommended={},
            conclusion=text,
            decision=decision_card(decision),
        )
    point = {
        "batch_size": int(decision.chosen["batch_size"]),
        "flush_interval": float(decision.chosen["flush_interval"]),
    }
    row = points[
        (points["batch_size"] == point["batch_size"]) & (points["flush_interval"] == point["flush_interval"])
    ].iloc[0]
    text += (
        f" It lands {row['throughput']:,.0f} items/s at p99 {row['item_p99_ms']:,.1f} ms with "
        f"{row['sink_calls_per_s']:,.0f} sink calls/s."
    )
    return Finding(
        title="Batching: throughput against item latency",
        key_figure=f"{row['throughput']:,.0f} items/s at p99 {row['item_p99_ms']:,.1f} ms",
        recommended=dict(point),
        conclusion=text,
        key_value=KeyValue("throughput", point, float(row["throughput"])),
        decision=decision_card(decision),
    )


# --------------------------------------------------------------------------- I/O


def writes(
    summary: pd.DataFrame, ways: pd.DataFrame, decision: Decision, *, max_writes: int, records: int
) -> Finding:
    """The decision on the buffer size (the smallest within the zone of the best speed as a
    share of the floor, measured in the same run), against the usual ways; what joining
    large chunks and fsync cost, as measured. ``ways`` is the tidy frame of
    :func:`perflab.workbench.io_experiments.write_ways`."""
    medians = ways.groupby(["way", "chunk"], sort=False, as_index=False).median(numeric_only=True)
    by_way = medians.groupby("way", sort=False).first()
    naive = float(by_way["records_per_s"]["json.dumps per record, unbuffered"])
    orjson_file = float(by_way["records_per_s"]["orjson per record, buffered file"])
    text = f"{decision.text(_setting)} "
    if decision.chosen is None:
        return Finding(
            title="Buffered writes: buffer size against the floor",
            key_figure="no buffer size could be chosen",
            recommended={},
            conclusion=text.strip(),
            decision=decision_card(decision),
        )
    size = _scalar(decision.chosen["buffer_size"])
    share = decision.verdict(decision.chosen)
    low, high = share.median_ci
    mb_s = _median(summary, "mb_per_s", buffer_size=size, max_writes=max_writes)
    chosen = _median(summary, "records_per_s", buffer_size=size, max_writes=max_writes)
    faults_here = _median(summary, "minor_faults", buffer_size=size, max_writes=max_writes)
    text += (
        f"At {size:,} bytes BufferedWriter writes {mb_s:,.0f} MB/s, {share.median:.2f}x the floor of "
        f"serializing everything and writing once (timed moments before it in every run; "
        f"median of {share.n}, 95% CI {low:.2f}-{high:.2f}). It writes {chosen / naive:,.1f}x as many "
        "records per second as `json.dumps` per unbuffered record and "
        f"{chosen / orjson_file:.2f}x orjson per record into Python's buffered file. "
    )
    joins = medians[medians["way"] == "list + join"]
    big = joins[joins["chunk"] >= 1 << 20]
    if not big.empty:
        worst = big.iloc[int(big["minor_faults"].to_numpy().argmax())]
        per_record = worst["minor_faults"] / records
        text += (
            f"Joining a list of lines into {int(worst['chunk']) // 1024:,} KiB chunks took "
            f"{worst['minor_faults']:,.0f} minor page faults per run ({per_record:.2f} per record; "
            f"BufferedWriter at {size:,}: {faults_here:,.0f}) and ran at {worst['mb_per_s']:,.0f} MB/s. "
        )
    fsync = [w for w in by_way.index if "fsync=flush" in w]
    never = [w for w in by_way.index if "fsync=never" in w]
    if fsync and never:
        cost = by_way.loc[fsync[0], "records_per_s"] / by_way.loc[never[0], "records_per_s"]
        text += (
            f"fsync after every flush keeps {cost:.0%} of the speed: use it only where a power cut must not "
            "lose records (a kill -9 loses nothing flushed anyway)."
        )
    return Finding(
        title="Buffered writes: buffer size against the floor",
        key_figure=f"{mb_s:,.0f} MB/s at buffer_size={size:,} ({share.median:.2f}x the floor)",
        recommended={"buffer_size": size, "max_writes": int(max_writes)},
        conclusion=text.strip(),
        key_value=KeyValue("of_floor", {"buffer_size": size, "max_writes": max_writes}, share.median),
        decision=decision_card(decision),
    )


def compression(
    points: pd.DataFrame,
    front: pd.DataFrame,
    decision: Decision,
    dominated_within: pd.DataFrame,
    modes: pd.DataFrame,
    windows: Mapping[str, Sequence[float]],
    *,
    whole_saved: float,
    repetitive_saved: float,
    min_compress_mb_s: float,
    max_frame_cost: float,
) -> Finding:
    """The decision (the fastest codec level within the zone of the best saving among those
    that compress at ``min_compress_mb_s`` or more); whether a frame per
    flush (readable by standard tools after a crash) costs little enough against a sync
    flush (``max_frame_cost`` points of saving) at each buffer size; what samples promise.
    ``modes`` holds the medians by codec, buffer and mode."""
    import pandas as pd

    if decision.chosen is None:
        return Finding(
            title="Compression: codec and level for the log",
            key_figure=f"no codec level compresses at >= {min_compress_mb_s:g} MB/s",
            recommended={},
            conclusion=decision.text(_setting),
            decision=decision_card(decision),
        )
    choice = points[points["codec"] == decision.chosen["codec"]].iloc[0]
    text = (
        f"{decision.text(_setting)} It saves {choice['saved_pct']:.1f}% at "
        f"{choice['compress_mb_s']:,.0f} MB/s ({len(front)} levels are on the Pareto front of "
        "saving against speed). "
    )
    beaten = "; ".join(f"{row.dominated} by {row.by}" for row in dominated_within.itertuples()) or "none"
    text += f"Within their own codec, beaten on both saving and speed: {beaten}. "
    saved = modes.set_index(["codec", "buffer", "mode"])["saved_pct"]
    costs = {
        (codec, buffer): float(saved[(codec, buffer, "sync")] - saved[(codec, buffer, "frame")])
        for codec, buffer in {(c, b) for c, b, _ in saved.index}
    }
    family = str(choice["codec"]).partition("-")[0]
    mode_codec = next((c for c in sorted({c for c, _ in costs}) if c.startswith(family)), None)
    if mode_codec is None:  # isal writes gzip: judge by gzip
        mode_codec = next(c for c in sorted({c for c, _ in costs}) if c.startswith("gzip"))
    buffers = sorted(b for c, b in costs if c == mode_codec)
    frame_cost = costs[(mode_codec, buffers[0])]
    flush_mode = "frame" if frame_cost <= max_frame_cost else "sync"
    text += (
        f"A frame per {buffers[0] // 1024} KiB flush, which keeps every flushed record readable by "
        f"`zcat`/`zstd -d` after a kill, costs {mode_codec} {frame_cost:.2f} points of saving "
        "against a sync flush "
        f"({'within' if flush_mode == 'frame' else 'past'} the {max_frame_cost:g}-point allowance: "
        f'flush_mode="{flush_mode}")'
    )
    if len(buffers) > 1:
        large = costs[(mode_codec, buffers[-1])]
        trend = "less" if large < frame_cost else "no less"
        text += f"; at {buffers[-1] // 1024} KiB buffers it costs {large:.2f} points ({trend}). "
    else:
        text += ". "
    medians = {name: float(pd.Series(values).median()) for name, values in windows.items()}
    furthest = max(medians, key=lambda name: abs(medians[name] - whole_saved))
    text += (
        f"Samples mislead: {furthest} promise {medians[furthest]:.1f}% against {whole_saved:.1f}% "
        f"for the whole set, and 3.9 KB of repetitive test records promise {repetitive_saved:.1f}%."
    )
    codec, _, level = str(choice["codec"]).partition("-")
    return Finding(
        title="Compression: codec and level for the log",
        key_figure=(
            f"{choice['codec']}: {choice['saved_pct']:.1f}% saved at {choice['compress_mb_s']:,.0f} MB/s"
        ),
        recommended={"codec": codec, "compression_level": int(level), "flush_mode": flush_mode},
        conclusion=text,
        key_value=KeyValue("saved_pct", {"codec": choice["codec"]}, float(choice["saved_pct"])),
        decision=decision_card(decision),
    )


#: The reading notebook's ways, by what they are for.
READ_TASKS = {
    "lines": ("open lines", "mmap lines"),
    "whole logs": ("json.loads records", "mmap records", "read_jsonl records"),
    "random access": ("python index + seek", "mmap line(i)"),
}


def read_decisions(frame: pd.DataFrame, *, records: int) -> dict[str, Decision]:
    """For each task of :data:`READ_TASKS`, the decision among its ways at ``records``: the
    first listed way (the usual one) unless another is more than 5% faster."""
    import pandas as pd

    at = frame[frame["records"] == records]
    decisions = {}
    for task, ways in READ_TASKS.items():
        rows = pd.concat([at[at["how"] == way] for way in ways if (at["how"] == way).any()])
        decisions[task] = decide(rows, ["how"], objective="per_s:max")
    return decisions


def reading(
    table: pd.DataFrame,
    compressed: pd.DataFrame,
    ratios: pd.DataFrame,
    decisions: Mapping[str, Decision],
    *,
    records: int,
) -> Finding:
    """For each task, the decision at the largest file (``records``: the usual way unless
    another is more than 5% faster, :func:`read_decisions`); perflab's reader against the
    usual way at every size; what compressed logs cost to read back. ``table`` is one row
    per (records, how) with ``per_s``; ``compressed`` the medians by ``file``; ``ratios`` a
    :func:`~perflab.workbench.io_experiments.reader_ratios` table."""
    at = table[table["records"] == records].set_index("how")["per_s"]
    recommended: dict[str, Any] = {}
    parts = []
    for task, decision in decisions.items():
        if decision.chosen is None:
            continue
        way = str(decision.chosen["how"])
        recommended[task] = way
        chosen = decision.verdict(decision.chosen)
        others = [v for v in decision.settings if v.status != "chosen"]
        against = ", ".join(
            f"{v.point['how']} {v.change:+.0%} (CI {v.change_ci[0]:+.0%} to {v.change_ci[1]:+.0%})"
            for v in others
        )
        parts.append(f"for {task}, **{way}** ({chosen.median:,.0f}/s, PCS {decision.pcs:.0%}; {against})")
    text = f"On {records:,} records: " + "; ".join(parts) + ". "
    sizes = []
    for size, rows in ratios.groupby("records"):
        cells = ", ".join(
            f"{str(r['ratio']).partition(' vs ')[0]} {r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}]"
            for r in rows.to_dict("records")
        )
        sizes.append(f"at {size:,} lines {cells}")
    if sizes:
        paired = "; ".join(sizes)
        text += f"Against the usual way, in runs paired moments apart (median [min-max]): {paired}. "
    plain = float(at["read_jsonl records"])
    if not compressed.empty:
        text += (
            "Compressed logs read back with `read_jsonl` (any codec, torn tails detected) at "
            + ", ".join(f"{name} {row.records_per_s / plain:.0%}" for name, row in compressed.iterrows())
            + " of the plain file's speed."
        )
    largest = ratios[ratios["records"] == records].set_index("ratio")["median"]
    lines_x, records_x, lookup_x = (float(largest[what]) for what, _, _ in READER_RATIOS)
    best_whole = recommended["whole logs"]
    lowest = min(decisions.values(), key=lambda d: d.pcs)
    return Finding(
        title="Reading logs back: lines, records, random access",
        key_figure=(
            f"iter_lines {lines_x:.2f}x open(); records() {records_x:.1f}x json.loads; "
            f"line(i) {lookup_x:.1f}x a Python index"
        ),
        recommended=recommended,
        conclusion=text.strip(),
        key_value=KeyValue("per_s", {"records": records, "how": best_whole}, float(at[best_whole])),
        decision=decision_card(lowest, runs=sum(v.n for d in decisions.values() for v in d.settings)),
    )


# --------------------------------------------------------------------------- the collector


def profiler(
    side: pd.DataFrame, titles: Sequence[str], recommended: Mapping[str, Any], *, symbols: int
) -> Finding:
    """What the profile found, and the before/after comparison (``side``, a
    :func:`perflab.measure.analysis.compare_groups` table) of applying its advice."""
    by = side.set_index("metric")
    cycle = side[side["metric"] == "cycle_s"].iloc[0]
    change = cycle["candidate_median"] / cycle["baseline_median"] - 1
    text = (
        f"The profile of the planted collector found: {'; '.join(titles) or 'nothing'}. "
        f"With the advice applied, a cycle of {symbols:,} symbols takes "
        f"{cycle['candidate_median']:.2f} s instead of "
        f"{cycle['baseline_median']:.2f} s ({change:+.1%}, 95% CI [{cycle['ci_low'] - 1:+.1%}, "
        f"{cycle['ci_high'] - 1:+.1%}], {cycle['verdict']})"
    )
    pieces = []
    for metric, label, fmt in (
        ("loop_stall_ms", "the longest loop stall", "{:,.0f} ms"),
        ("write_calls", "write calls per cycle", "{:,.0f}"),
        ("rejected_share", "the share of calls refused (429, 503)", "{:.0%}"),
    ):
        if metric in by.index:
            row = by.loc[metric]
            pieces.append(
                f"{label} {fmt.format(row['baseline_median'])} -> {fmt.format(row['candidate_median'])} "
                f"({row['verdict']})"
            )
    text += ("; " + ", ".join(pieces) if pieces else "") + "."
    return Finding(
        title="Profiling a collector: planted problems found and fixed",
        key_figure=(
            f"cycle {cycle['baseline_median']:.2f} s -> {cycle['candidate_median']:.2f} s ({change:+.1%})"
        ),
        recommended=dict(recommended),
        conclusion=text,
        key_value=KeyValue("cycle_s", {"version": "after"}, float(cycle["candidate_median"])),
    )


def collector(
    searched: pd.DataFrame,
    chosen: Mapping[str, Any] | None,
    decision: Decision,
    batches: pd.DataFrame,
    codecs: pd.DataFrame,
    *,
    symbols: int,
    target_cycle_s: float,
    required_margin: float,
    floor_s: float,
    server_cap: int,
    server_rate: float,
) -> Finding:
    """The cheapest configuration the search confirmed (``decision``: the same choice made
    by :func:`~perflab.measure.decision.decide` over the confirmed candidates, with why each
    cheaper one was ruled out), what larger pools did against the server's cap, and the
    batch size and codec chosen for it. ``searched`` holds one row per measured cycle
    (stage, pool_size, rate, repeat, metrics)."""
    if chosen is not None and (
        decision.chosen is None
        or (int(decision.chosen["pool_size"]), float(decision.chosen["rate"]))
        != (int(chosen["pool_size"]), float(chosen["rate"]))
    ):
        raise ValueError(f"the decision ({decision.chosen}) and the search ({dict(chosen)}) disagree")
    if chosen is None:
        text = (
            f"No configuration met {target_cycle_s:g} s per cycle with {required_margin:.0%} margin: "
            f"the server allows at best {floor_s:.2f} s ({symbols:,} symbols at {server_rate:g}/s "
            "with a cap of "
            f"{server_cap}). Raise the target or the quota."
        )
        return Finding(
            title="Collector: the cheapest configuration meeting the cycle time",
            key_figure=f"no configuration meets {target_cycle_s:g} s",
            recommended={},
            conclusion=text,
            decision=decision_card(decision) if decision.settings else None,
        )
    pool, rate, worst = int(chosen["pool_size"]), float(chosen["rate"]), float(chosen["cycle_worst_s"])
    runs = int(chosen["repeats"])
    margin = target_cycle_s - worst
    chosen_runs = searched[
        (searched["stage"] == chosen["stage"]) & (searched["pool_size"] == pool) & (searched["rate"] == rate)
    ]
    text = (
        f"The cheapest configuration that meets {target_cycle_s:g} s per cycle for {symbols:,} symbols "
        f"is **pool_size={pool}, rate={rate:,.0f}/s**: its worst of {runs} cycles took {worst:.3f} s, "
        f"a margin of {margin:.3f} s ({margin / target_cycle_s:.0%}), with "
        f"{chosen_runs['rejected_share'].median():.1%} of calls refused (429, 503) and "
        f"{chosen_runs['failed_per_cycle'].max():,.0f} symbols lost. "
    )
    ruled = [v for v in decision.settings if v.status == "infeasible"]
    if ruled:
        text += (
            "Confirmed and ruled out: " + "; ".join(f"{_setting(v.point)}: {v.reason}" for v in ruled) + ". "
        )
    beyond = searched[searched["pool_size"] > server_cap]
    if not beyond.empty:
        share = beyond["rejected_share"].median()
        fastest = beyond["cycle_s"].min()
        text += (
            f"Pools past the server's cap of {server_cap} (measured: "
            f"{', '.join(str(p) for p in sorted(set(beyond['pool_size'].astype(int))))}) drew "
            f"{share:.1%} refused (median) and their best cycle took {fastest:.3f} s"
            + (" — no faster than the choice. " if fastest >= chosen_runs["cycle_s"].min() else ". ")
        )
    ok = batches[batches["cycle_s"] <= target_cycle_s * (1 - required_margin)]
    batch = (ok if not ok.empty else batches).sort_values(["sink_calls_per_cycle", "batch_size"]).iloc[0]
    compressed = codecs[codecs["codec"] != "plain"]
    light = compressed[compressed["cpu_ms_per_cycle"] <= 1.5 * compressed["cpu_ms_per_cycle"].min()]
    codec = (light if not light.empty else codecs).sort_values("log_kb_per_cycle").iloc[0]
    plain = codecs[codecs["codec"] == "plain"]
    text += (
        f"Batches of {int(batch['batch_size'])} keep the sink to {batch['sink_calls_per_cycle']:.0f} "
        "calls a cycle; "
        f"the log as {codec['codec']} (the smallest within 1.5x the cheapest compressed codec's CPU) takes "
        f"{codec['log_kb_per_cycle']:,.0f} KiB a cycle "
        + (f"(plain: {plain['log_kb_per_cycle'].iloc[0]:,.0f} KiB) " if not plain.empty else "")
        + f"for {codec['cpu_ms_per_cycle']:.1f} ms of CPU."
    )
    return Finding(
        title="Collector: the cheapest configuration meeting the cycle time",
        key_figure=f"pool {pool}, {rate:,.0f}/s: {worst:.2f} s (margin {margin:.2f} s)",
        recommended={
            "pool_size": pool,
            "rate": rate,
            "batch_size": int(batch["batch_size"]),
            "codec": str(codec["codec"]),
        },
        conclusion=text,
        key_value=KeyValue(
            "cycle_s", {"stage": str(chosen["stage"]), "pool_size": pool, "rate": rate}, worst, "max"
        ),
        decision=decision_card(decision),
    )


def monitoring(
    side: pd.DataFrame,
    decision: Decision,
    *,
    pool_size: int,
    server_cap: int,
    incident_cap: int,
    estimate: int,
) -> Finding:
    """What the dashboard showed when the server's cap fell mid-run (``side``, a
    :func:`perflab.measure.analysis.compare_groups` table of the scraped panels by phase),
    and the pool size decided in the lab against the server as it is after it (``decision``,
    from :func:`perflab.workbench.tuning.confirm_pool_sizes`), starting from ``estimate``
    (:func:`perflab.workbench.monitoring.supported_pool`)."""
    by: dict[str, dict[Any, Any]] = {str(row["metric"]): row for row in side.to_dict("records")}

    def moved(metric: str, fmt: str) -> str:
        row = by[metric]
        before, after = fmt.format(row["baseline_median"]), fmt.format(row["candidate_median"])
        verdict = {"faster": "better", "slower": "worse"}.get(row["verdict"], row["verdict"])
        return f"{before} -> {after} ({verdict})"

    parts = [f"collection rate {moved('collected_per_s', '{:,.0f}/s')}"]
    if "refused_share" in by:
        parts.append(f"refused share (429, 503) {moved('refused_share', '{:.0%}')}")
    if "gaps" in by:
        parts.append(f"gaps per cycle {moved('gaps', '{:,.0f}')}")
    if "call_ms" in by:
        parts.append(f"answered-call latency {moved('call_ms', '{:.1f} ms')}")
    text = (
        f"The server's concurrency cap fell from {server_cap} to {incident_cap} mid-run. On the dashboard's "
        f"panels, measured scrape by scrape before and after: {'; '.join(parts)}. "
        f"After it the answered rate and latency sustain {estimate} calls in flight (Little's law); the lab "
        f"tried pools around that against the server as it now is (cap {incident_cap}), a cycle per run, "
        f"no refusal and no lost symbol allowed. {decision.text(_setting)}"
    )
    recommended: dict[str, Any] = {}
    if decision.chosen is None:
        text += f" Keep watching: no pool tried met the limits, the pool of {pool_size} included."
    elif (chosen := int(_scalar(decision.chosen["pool_size"]))) != pool_size:
        recommended["max_concurrent"] = chosen
        text += f" **max_concurrent = {chosen}** replaces the pool of {pool_size}."
    else:
        text += f" The pool of {pool_size} stays: nothing to change."
    after = by["refused_share"] if "refused_share" in by else None
    share_after = float(after["candidate_median"]) if after is not None else 0.0
    return Finding(
        title="Monitoring: the collector's dashboard through an incident",
        key_figure=f"refused {float(after['baseline_median']):.0%} -> {share_after:.0%} when the cap fell"
        if after is not None
        else "no API calls scraped",
        recommended=recommended,
        conclusion=text,
        key_value=KeyValue("refused_share", {"phase": "after"}, share_after) if after is not None else None,
        decision=decision_card(decision),
    )


def _spread(values: Sequence[float], fmt: str) -> str:
    import numpy as np

    array = np.asarray(values, dtype=float)
    return f"{fmt.format(np.median(array))} [{fmt.format(array.min())}-{fmt.format(array.max())}]"


def adaptive(
    table: pd.DataFrame,
    decision: Decision,
    *,
    phases: Sequence[Any],
    rate_table: pd.DataFrame | None = None,
    rate_decision: Decision | None = None,
    max_refused: float,
) -> Finding:
    """The bake-off's decision over the whole moving-cap run (``table``:
    :func:`perflab.workbench.adaptive.phase_table`, phase 0 the whole run): which contender
    to run, the best adaptive one against the best static one that keeps the refusal
    limit (ratio of goodput with its CI), how fast it followed each change, and what a
    rate limit did to them all (``rate_table``, ``rate_decision``)."""
    import math

    from perflab.measure.stats import compare
    from perflab.workbench.adaptive import contender_code

    overall = table[table["phase"] == 0]

    def runs(name: str, metric: str, phase: int = 0) -> list[float]:
        rows = table[(table["phase"] == phase) & (table["contender"] == name)]
        return [float(v) for v in rows[metric]]

    feasible = {v.point["contender"] for v in decision.settings if v.status != "infeasible" and v.n > 0}
    medians = overall.groupby("contender")["goodput"].median()
    statics = [c for c in medians.index if c.startswith("static:") and c in feasible]
    adaptives = [c for c in medians.index if not c.startswith("static:") and c in feasible]
    caps = " -> ".join(str(p.cap) for p in phases)
    text = f"The server's cap moved {caps} (latency {' -> '.join(p.latency for p in phases)}). "
    text += decision.text(_setting) + " "
    key_figure = "no contender kept the refusal limit"
    key_value = None
    recommended: dict[str, Any] = {}
    if decision.chosen is not None:
        chosen = str(_scalar(decision.chosen["contender"]))
        recommended["max_concurrent"] = chosen
        text += f"Run it as `{contender_code(chosen)}`. "
        key_value = KeyValue("goodput", {"contender": chosen}, float(medians[chosen]))
        key_figure = f"{chosen}: {medians[chosen]:,.0f} answers/s over the whole run"
    if statics and adaptives:
        best_static = max(statics, key=lambda c: medians[c])
        best_adaptive = max(adaptives, key=lambda c: medians[c])
        side = compare(runs(best_static, "goodput"), runs(best_adaptive, "goodput"), higher_is_better=True)
        text += (
            f"The best adaptive limit, {best_adaptive}, collected {side.ratio:.2f}x "
            f"(95% CI {side.ci95[0]:.2f}-{side.ci95[1]:.2f}) the goodput of the best static pool that "
            f"kept refusals under {max_refused:.0%} ({best_static}), with "
            f"{_spread(runs(best_adaptive, 'refused_share'), '{:.2%}')} of its calls refused. "
        )
        follows = []
        for number in range(2, len(phases) + 1):
            times = runs(best_adaptive, "converge_s", number)
            if any(math.isnan(t) for t in times):
                follows.append(f"to cap {phases[number - 1].cap}: not within the phase in some runs")
            else:
                follows.append(f"to cap {phases[number - 1].cap} in {_spread(times, '{:.1f}')} s")
        text += f"It reached 90% of the best static goodput after each change: {'; '.join(follows)}. "
        key_figure = f"{best_adaptive}: {side.ratio:.2f}x the best static pool ({best_static})"
    elif not statics:
        text += f"No static pool kept refusals under {max_refused:.0%} through every phase. "
    if "aimd+throttle" in set(overall["contender"]):
        throttled = float(overall[overall["contender"] == "aimd+throttle"]["throttled_share"].median())
        text += (
            "Client-side throttling never engaged (the server refused fewer than half the calls). "
            if throttled == 0
            else f"Client-side throttling shed {throttled:.1%} of the calls locally. "
        )
    if rate_table is not None and rate_decision is not None:
        rate = rate_table[rate_table["phase"] == 0]
        shares = rate.groupby("contender")["refused_share"].median()
        text += (
            "Behind a rate limit instead of a cap, concurrency limits see only the refusals: "
            + ", ".join(f"{name} {share:.1%}" for name, share in shares.items())
            + " of calls refused. "
            + rate_decision.text(_setting).rstrip(".")
            + ". There, pace the calls with a `TokenBucketLimiter` at the server's rate."
        )
    return Finding(
        title="Adaptive concurrency: following a server whose limits move",
        key_figure=key_figure,
        recommended=recommended,
        conclusion=text.strip(),
        key_value=key_value,
        decision=decision_card(decision),
    )


def user_sweep(
    summary: pd.DataFrame,
    frame: pd.DataFrame,
    parameters: Sequence[str],
    *,
    target: str,
    decision: Decision | None = None,
) -> Finding:
    """The decision on a user's workload (:func:`perflab.measure.decision.decide`; by default
    the cheapest setting within 5% of the fastest), in words, with the repeats it took.
    Measured on several hosts (a cluster), settings are ranked by their time relative to
    the first setting on the same host, never pooled."""
    if HOST_COLUMN in summary.columns and summary[HOST_COLUMN].nunique() > 1:
        return _user_sweep_on_hosts(summary, frame, parameters, target=target, metric="seconds")
    facts = facts_of(frame)
    followed = facts.decision if facts is not None else None
    decision = decision or followed or decide(frame, parameters, objective="seconds")
    metric = decision.objective.metric
    text = f"`{target}`: {decision.text()}"
    if facts is not None and (saving := facts.adaptive_saving) is not None:
        total, fixed = saving
        text += (
            f" The repeats followed the decision: {total} runs where a fixed count would take "
            f"{fixed} ({1 - total / fixed:.0%} saved)."
        )
    if decision.chosen is None:
        return Finding(
            title=f"Sweep of {target}",
            key_figure="no setting met the constraints",
            recommended={},
            conclusion=text,
            decision=decision_card(decision),
        )
    point = dict(decision.chosen)
    chosen = decision.verdict(point)
    return Finding(
        title=f"Sweep of {target}",
        key_figure=f"{_setting(point)}: {metric} {chosen.median:.4g} (PCS {decision.pcs:.0%})",
        recommended=point,
        conclusion=text,
        key_value=KeyValue(metric, point, float(chosen.median)),
        decision=decision_card(decision),
    )


def _user_sweep_on_hosts(
    summary: pd.DataFrame, frame: pd.DataFrame, parameters: Sequence[str], *, target: str, metric: str
) -> Finding:
    """:func:`user_sweep` for samples of several hosts: each host's medians relative to the
    first setting measured there, combined across hosts by their geometric mean; the
    fastest against the runner-up host by host."""
    from perflab.measure.analysis import host_ratios
    from perflab.measure.stats import compare

    first = {p: _scalar(frame[p].iloc[0]) for p in parameters}
    ratios = host_ratios(frame, parameters, metric, first).sort_values("ratio")
    best = ratios.iloc[0]
    point = {p: _scalar(best[p]) for p in parameters}
    hosts = sorted(frame[HOST_COLUMN].unique())
    text = (
        f"`{target}` was measured on {len(hosts)} hosts, never pooled: each setting's time is "
        f"taken relative to {_setting(first)} on the same host, then combined (geometric mean). "
        f"The fastest setting is **{_setting(point)}** at {best['ratio']:.3g}x "
        f"(hosts {best['lowest']:.3g}x-{best['highest']:.3g}x). "
    )
    key_figure = f"{_setting(point)}: the fastest on {len(hosts)} hosts"
    if len(ratios) > 1:
        second = ratios.iloc[1]
        other = {p: _scalar(second[p]) for p in parameters}
        key_figure += f"; {_setting(other)} takes {second['ratio'] / best['ratio']:.2f}x its time"
        verdicts = []
        for host in hosts:
            on_host = frame[frame[HOST_COLUMN] == host]
            mine, theirs = _samples(on_host, point, metric), _samples(on_host, other, metric)
            if mine and theirs:
                result = compare(theirs, mine, higher_is_better=False)
                verdicts.append(f"{host} {result.ratio:.2f}x ({result.verdict})")
        text += f"Against the runner-up ({_setting(other)}, {second['ratio']:.3g}x), host by host: "
        text += "; ".join(verdicts) + ". "
    row = summary[(summary["metric"] == metric) & (summary[HOST_COLUMN] == hosts[0])]
    for p, value in point.items():
        row = row[row[p] == value]
    return Finding(
        title=f"Sweep of {target}",
        key_figure=key_figure,
        recommended=point,
        conclusion=text.strip(),
        key_value=KeyValue(metric, {**point, HOST_COLUMN: hosts[0]}, float(row["median"].iloc[0])),
    )


def decision_move(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, Any]:
    """Two runs' findings (``summary.json``) side by side: each recommendation, whether it
    is the ``same`` or ``moved``, and for a move whether each decision's choice lies in
    the other's set of settings it could not tell apart (``overlap``: the move is within
    the noise; ``False``: the runs decided differently; None: no decision to compare)."""
    was = dict((before or {}).get("recommended") or {})
    now = dict((after or {}).get("recommended") or {})
    status = "same" if was == now else "moved"
    overlap = None
    if status == "moved":
        overlap = decisions_overlap((before or {}).get("decision"), (after or {}).get("decision"))
    return {"before": was, "after": now, "status": status, "overlap": overlap}


def decisions_overlap(first: Mapping[str, Any] | None, second: Mapping[str, Any] | None) -> bool | None:
    """Whether either decision card (:func:`decision_card`) could not tell the other's
    choice apart from its own; None when a run has no decision."""
    if not first or not second:
        return None
    ties_first = [first.get("chosen"), *(first.get("indistinguishable") or [])]
    ties_second = [second.get("chosen"), *(second.get("indistinguishable") or [])]
    return second.get("chosen") in ties_first or first.get("chosen") in ties_second


def move_text(move: Mapping[str, Any]) -> str:
    """A :func:`decision_move` in words."""
    was, now = _setting(move["before"]) or "nothing", _setting(move["after"]) or "nothing"
    if move["status"] == "same":
        return f"{now}: same"
    text = f"{was} -> {now}: moved"
    if move["overlap"] is True:
        return text + " (within the noise: each decision could not tell the other's choice apart)"
    if move["overlap"] is False:
        return text + " (the decisions' sets of ties do not overlap: a real move)"
    return text


def _setting(point: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def _samples(frame: pd.DataFrame, point: Mapping[str, Any], metric: str) -> list[float]:
    chosen = frame
    for column, value in point.items():
        chosen = chosen[chosen[column] == value]
    return [float(x) for x in chosen[metric].dropna()]
