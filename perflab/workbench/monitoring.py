"""Live monitoring of the simulated collector: its own metrics beside the primitives'
(``perflab.exporter``), the Grafana dashboard over them, and a scraper that turns
``/metrics`` into time series for the monitoring notebook.

The collector's metrics (no label per symbol: tracks and answer kinds only):
``perflab_collector_symbols{track}`` (symbols per cycle), ``perflab_collector_collected_total{track}``,
``perflab_collector_missed_total{track}`` and ``perflab_collector_cycle_missed{track}`` (gaps),
``perflab_collector_cycles_total``, ``perflab_collector_cycle_seconds``; its API calls
go through the public instrumentation (``Exporter.add_api``) as a user's client's would.
"""

from __future__ import annotations

import math
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from perflab._validate import check_number, check_str
from perflab.exporter import Exporter, histogram_family, metric_family
from perflab.measure.queueing import in_flight
from perflab.workbench.collector import TRACKS, LiveCounts

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Panel",
    "Scraper",
    "dashboard",
    "dashboard_panels",
    "export_collector",
    "panel_series",
    "phases",
    "supported_pool",
]


class _LiveCountsMetrics:
    """prometheus_client collector over a :class:`LiveCounts`, read at scrape time."""

    def __init__(self, live: LiveCounts) -> None:
        self.live = live

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        live = self.live
        for kind, metric, text, values in (
            ("gauge", "perflab_collector_symbols", "Symbols polled per cycle.", live.symbols),
            ("counter", "perflab_collector_collected", "Symbols collected.", live.collected),
            ("counter", "perflab_collector_missed", "Symbols missed in their cycle (gaps).", live.missed),
            (
                "gauge",
                "perflab_collector_cycle_missed",
                "Gaps in the last finished cycle.",
                live.cycle_missed,
            ),
        ):
            yield metric_family(kind, metric, text, ((t, values[t]) for t in TRACKS), label="track")
        yield CounterMetricFamily("perflab_collector_cycles", "Cycles finished.", value=float(live.cycles))
        cycles = [("", live.cycle_seconds.snapshot())]
        yield histogram_family("perflab_collector_cycle_seconds", "Cycle duration.", cycles, label=None)

    def describe(self) -> Iterator[Any]:
        return self.collect()


def export_collector(exporter: Exporter, live: LiveCounts) -> None:
    """Export the collector's live counts beside the primitives the exporter holds."""
    exporter.registry.register(_LiveCountsMetrics(live))


# --------------------------------------------------------------------------- the dashboard

#: A dashboard panel: title, unit, and PromQL targets (legend, expression).
Panel = tuple[str, str, tuple[tuple[str, str], ...]]


def dashboard_panels(
    *,
    pool: str = "collector",
    limiter: str = "api",
    api: str = "api",
    loop: str = "main",
    collector: bool = False,
) -> tuple[Panel, ...]:
    """The dashboard's panels over the names a service registered its pool, limiter, API
    (:meth:`perflab.exporter.Exporter.add_api`) and loop under; ``collector`` adds the
    simulated collector's own panels (symbols, tracks, gaps, cycles). ``$job`` is the
    dashboard's job variable; rates use Grafana's ``$__rate_interval``."""
    for label, value in (("pool", pool), ("limiter", limiter), ("api", api), ("loop", loop)):
        check_str(label, value)
        if not value or any(c in value for c in '"\\\n'):
            raise ValueError(f"{label} must be a non-empty name without quotes or backslashes, got {value!r}")
    job = 'job="$job"'
    window = "[$__rate_interval]"
    calls = f'perflab_api_calls_total{{{job},name="{api}"}}'
    panels: list[Panel] = []
    if collector:
        panels += [
            (
                "Symbols per cycle (universe)",
                "short",
                (("track {{track}}", f"perflab_collector_symbols{{{job}}}"),),
            ),
            (
                "Collection rate per track",
                "ops",
                (("track {{track}}", f"rate(perflab_collector_collected_total{{{job}}}{window})"),),
            ),
            (
                "Gaps: symbols missed per cycle",
                "short",
                (("track {{track}}", f"perflab_collector_cycle_missed{{{job}}}"),),
            ),
        ]
    panels += [
        (
            "Pool slot usage",
            "percentunit",
            (
                (
                    "in flight / slots",
                    f'perflab_pool_in_flight{{{job},name="{pool}"}} / '
                    f'perflab_pool_max_concurrent{{{job},name="{pool}"}}',
                ),
                ("queued", f'perflab_pool_queued{{{job},name="{pool}"}}'),
            ),
        ),
        (
            "Pool limit and calls in flight (an adaptive limit moves)",
            "short",
            (
                ("limit", f'perflab_pool_limit{{{job},name="{pool}"}}'),
                ("in flight", f'perflab_pool_in_flight{{{job},name="{pool}"}}'),
            ),
        ),
        (
            "API calls by answer, and the refused share (429, 503)",
            "reqps",
            (
                ("{{status}}", f"sum by (status) (rate({calls}{window}))"),
                (
                    "refused share",
                    f'sum(rate(perflab_api_calls_total{{{job},name="{api}",status=~"429|503"}}{window})) / '
                    f"sum(rate({calls}{window}))",
                ),
            ),
        ),
        (
            "API latency of answered calls",
            "s",
            tuple(
                (
                    f"p{int(q * 100)}",
                    f"histogram_quantile({q}, sum by (le) "
                    f'(rate(perflab_api_call_seconds_bucket{{{job},name="{api}"}}{window})))',
                )
                for q in (0.5, 0.99)
            ),
        ),
        (
            "Calls at the server and in the pool",
            "short",
            (
                ("at the server (sent, not answered)", f'perflab_api_in_flight{{{job},name="{api}"}}'),
                ("pool in flight", f'perflab_pool_in_flight{{{job},name="{pool}"}}'),
            ),
        ),
        (
            "Rate limiter: achieved rate and waits",
            "short",
            (
                (
                    "achieved tokens/s",
                    f'rate(perflab_limiter_acquired_total{{{job},name="{limiter}"}}{window})',
                ),
                ("configured rate", f'perflab_limiter_rate{{{job},name="{limiter}"}}'),
                (
                    "wait p99 (s)",
                    "histogram_quantile(0.99, sum by (le) "
                    f'(rate(perflab_limiter_wait_seconds_bucket{{{job},name="{limiter}"}}{window})))',
                ),
            ),
        ),
        (
            "Event-loop lag",
            "s",
            (
                (
                    "p99",
                    "histogram_quantile(0.99, sum by (le) "
                    f'(rate(perflab_event_loop_lag_seconds_bucket{{{job},name="{loop}"}}{window})))',
                ),
                (
                    "mean",
                    f'rate(perflab_event_loop_lag_seconds_sum{{{job},name="{loop}"}}{window}) / '
                    f'rate(perflab_event_loop_lag_seconds_count{{{job},name="{loop}"}}{window})',
                ),
            ),
        ),
    ]
    if collector:
        panels.append(
            (
                "Cycle duration",
                "s",
                tuple(
                    (
                        f"p{int(q * 100)}",
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate(perflab_collector_cycle_seconds_bucket{{{job}}}{window})))",
                    )
                    for q in (0.5, 0.99)
                ),
            )
        )
    return tuple(panels)


def dashboard(
    *,
    title: str = "perflab service",
    job: str = "perflab-collector",
    pool: str = "collector",
    limiter: str = "api",
    api: str = "api",
    loop: str = "main",
    collector: bool = False,
) -> dict[str, Any]:
    """A Grafana dashboard (JSON model, importable as is) over the primitives' and the
    API's metrics under the given names (see :func:`dashboard_panels`), with a Prometheus
    data-source variable and a job variable."""
    check_str("title", title)
    check_str("job", job)
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    panels = []
    chosen = dashboard_panels(pool=pool, limiter=limiter, api=api, loop=loop, collector=collector)
    for i, (panel_title, unit, targets) in enumerate(chosen):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": panel_title,
                "datasource": datasource,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [
                    {
                        "refId": chr(ord("A") + j),
                        "datasource": datasource,
                        "expr": expr,
                        "legendFormat": legend,
                    }
                    for j, (legend, expr) in enumerate(targets)
                ],
            }
        )
    return {
        "title": title,
        "uid": "perflab-" + re.sub(r"[^A-Za-z0-9_-]", "-", job)[:32],
        "tags": ["perflab"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"},
                {
                    "name": "job",
                    "label": "job",
                    "type": "custom",
                    "query": job,
                    "current": {"text": job, "value": job},
                },
            ]
        },
        "panels": panels,
    }


# --------------------------------------------------------------------------- scraping


class Scraper:
    """Scrapes an exporter's ``/metrics`` every ``interval`` seconds from a thread (as
    Prometheus would) and keeps every sample with its time, for plotting a run after it."""

    def __init__(self, url: str, *, interval: float = 0.5) -> None:
        self.url = check_str("url", url)
        self.interval = check_number("interval", interval, positive=True)
        self.rows: list[dict[str, Any]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def start(self) -> Scraper:
        if self._thread is not None:
            raise RuntimeError("the scraper is already running")
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="perflab-scraper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> pd.DataFrame:
        """Stop (after one last scrape) and return every sample: t, metric, labels, value."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.scrape()
        return self.frame()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.scrape()

    def scrape(self) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:  # noqa: S310 - a local exporter
                text = response.read().decode()
        except OSError:
            self.errors += 1
            return
        t = time.monotonic() - self._started
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.rows.append({"t": t, "metric": sample.name, **sample.labels, "value": sample.value})

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.rows)


def _value(frame: pd.DataFrame, metric: str, **labels: str) -> pd.Series:
    """One series of the scraped samples, indexed by scrape time (summed over the other
    labels)."""
    rows = frame[frame["metric"] == metric]
    for label, wanted in labels.items():
        rows = rows[rows[label] == wanted]
    return rows.groupby("t")["value"].sum()


def panel_series(
    frame: pd.DataFrame,
    *,
    pool: str = "collector",
    limiter: str = "api",
    api: str = "api",
    loop: str = "main",
) -> pd.DataFrame:
    """The dashboard's panels from scraped samples: one row per scrape, rates from the
    counters' change since the previous scrape (as ``rate()`` over one interval).
    ``calls_ok_per_s`` counts the answered (2xx, 3xx) calls."""
    import pandas as pd

    def rate(series: pd.Series) -> pd.Series:
        return series.diff() / series.index.to_series().diff()

    out = pd.DataFrame(index=sorted(frame["t"].unique()))
    out.index.name = "t"
    for track in TRACKS:
        out[f"symbols_{track}"] = _value(frame, "perflab_collector_symbols", track=track)
        out[f"collected_per_s_{track}"] = rate(
            _value(frame, "perflab_collector_collected_total", track=track)
        )
        out[f"gaps_{track}"] = _value(frame, "perflab_collector_cycle_missed", track=track)
    out["cycles"] = _value(frame, "perflab_collector_cycles_total")
    in_flight = _value(frame, "perflab_pool_in_flight", name=pool)
    out["slot_usage"] = in_flight / _value(frame, "perflab_pool_max_concurrent", name=pool)
    calls = frame[(frame["metric"] == "perflab_api_calls_total") & (frame["name"] == api)]
    by_status = {
        str(status): rate(group.groupby("t")["value"].sum()) for status, group in calls.groupby("status")
    }
    answered = [s for s in by_status if s.isdigit() and 200 <= int(s) < 400]
    zero = pd.Series(0.0, index=out.index)
    out["calls_ok_per_s"] = sum((by_status[s] for s in answered), zero)
    out["calls_429_per_s"] = by_status.get("429", zero)
    out["calls_503_per_s"] = by_status.get("503", zero)
    out["calls_error_per_s"] = sum(
        (v for s, v in by_status.items() if s not in {*answered, "429", "503"}), zero
    )
    all_calls = sum(by_status.values(), zero)
    refused = out["calls_429_per_s"] + out["calls_503_per_s"]
    out["refused_share"] = refused / all_calls.where(all_calls > 0)
    out["api_in_flight"] = _value(frame, "perflab_api_in_flight", name=api)
    out["limiter_per_s"] = rate(_value(frame, "perflab_limiter_acquired_total", name=limiter))
    out["limiter_target"] = _value(frame, "perflab_limiter_rate", name=limiter)
    for metric, column, name in (
        ("perflab_limiter_wait_seconds", "limiter_wait_ms", limiter),
        ("perflab_event_loop_lag_seconds", "loop_lag_ms", loop),
        ("perflab_api_call_seconds", "call_ms", api),
    ):
        labels = {"name": name}
        total = _value(frame, f"{metric}_sum", **labels).diff()
        count = _value(frame, f"{metric}_count", **labels).diff()
        out[column] = total / count.where(count > 0) * 1e3
    return out


def phases(series: pd.DataFrame, incident_cycle: int) -> pd.DataFrame:
    """The panels' per-scrape values as a tidy frame by phase: "before" while fewer than
    ``incident_cycle`` cycles had finished, "after" from then on; the first scrape (no
    rate yet) is dropped. One row per scrape: the repeats of each phase."""
    rows = series.dropna(subset=["calls_ok_per_s"]).copy()
    rows["phase"] = ["before" if c < incident_cycle else "after" for c in rows["cycles"]]
    rows["collected_per_s"] = rows[[f"collected_per_s_{t}" for t in TRACKS]].sum(axis=1)
    rows["gaps"] = rows[[f"gaps_{t}" for t in TRACKS]].sum(axis=1)
    rows["repeat"] = rows.groupby("phase").cumcount()
    metrics = [
        "collected_per_s",
        "refused_share",
        "slot_usage",
        "gaps",
        "calls_ok_per_s",
        "call_ms",
        "loop_lag_ms",
    ]
    return rows.reset_index(drop=True)[["phase", "repeat", *metrics]]


def supported_pool(side: pd.DataFrame) -> int:
    """The calls in flight the server sustained after the incident (Little's law over the
    answered rate and answered-call latency of ``side``, a before/after comparison of
    :func:`phases`): the first guess at the pool size its new cap supports."""
    after = side.set_index("metric")["candidate_median"]
    return max(1, math.ceil(in_flight(float(after["calls_ok_per_s"]), float(after["call_ms"]) / 1e3)))
