"""Live monitoring of the simulated collector: its own metrics beside the primitives'
(``perflab.exporter``), the Grafana dashboard over them, and a scraper that turns
``/metrics`` into time series for the monitoring notebook.

The collector's metrics (no label per symbol: tracks and answer kinds only):
``perflab_collector_symbols{track}`` (symbols per cycle), ``perflab_collector_collected_total{track}``,
``perflab_collector_missed_total{track}`` and ``perflab_collector_cycle_missed{track}`` (gaps),
``perflab_collector_cycles_total``, ``perflab_collector_cycle_seconds``,
``perflab_api_calls_total{status}`` (ok, 429, error) and ``perflab_api_call_seconds``.
"""

from __future__ import annotations

import math
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
    "DASHBOARD_PANELS",
    "Scraper",
    "dashboard",
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
        calls = CounterMetricFamily("perflab_api_calls", "API calls, by answer.", labels=["status"])
        for status, count in live.calls.items():
            calls.add_metric([status], float(count))
        yield calls
        latency = [("", live.latency.snapshot())]
        yield histogram_family(
            "perflab_api_call_seconds", "API call latency seen by the client.", latency, label=None
        )

    def describe(self) -> Iterator[Any]:
        return self.collect()


def export_collector(exporter: Exporter, live: LiveCounts) -> None:
    """Export the collector's live counts beside the primitives the exporter holds."""
    exporter.registry.register(_LiveCountsMetrics(live))


# --------------------------------------------------------------------------- the dashboard

#: The dashboard's panels: title, unit, and PromQL targets (legend, expression). ``$job``
#: is the dashboard's job variable; rates use Grafana's ``$__rate_interval``.
DASHBOARD_PANELS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Symbols per cycle (universe)",
        "short",
        (("track {{track}}", 'perflab_collector_symbols{job="$job"}'),),
    ),
    (
        "Collection rate per track",
        "ops",
        (("track {{track}}", 'rate(perflab_collector_collected_total{job="$job"}[$__rate_interval])'),),
    ),
    (
        "Pool slot usage",
        "percentunit",
        (
            (
                "in flight / slots",
                'perflab_pool_in_flight{job="$job",name="collector"} / '
                'perflab_pool_max_concurrent{job="$job",name="collector"}',
            ),
            ("queued", 'perflab_pool_queued{job="$job",name="collector"}'),
        ),
    ),
    (
        "Gaps: symbols missed per cycle",
        "short",
        (("track {{track}}", 'perflab_collector_cycle_missed{job="$job"}'),),
    ),
    (
        "API calls and 429s",
        "reqps",
        (
            ("{{status}}", 'sum by (status) (rate(perflab_api_calls_total{job="$job"}[$__rate_interval]))'),
            (
                "429 share",
                'sum(rate(perflab_api_calls_total{job="$job",status="429"}[$__rate_interval])) / '
                'sum(rate(perflab_api_calls_total{job="$job"}[$__rate_interval]))',
            ),
        ),
    ),
    (
        "Rate limiter: achieved rate and waits",
        "short",
        (
            (
                "achieved tokens/s",
                'rate(perflab_limiter_acquired_total{job="$job",name="api"}[$__rate_interval])',
            ),
            ("configured rate", 'perflab_limiter_rate{job="$job",name="api"}'),
            (
                "wait p99 (s)",
                "histogram_quantile(0.99, sum by (le) "
                '(rate(perflab_limiter_wait_seconds_bucket{job="$job",name="api"}[$__rate_interval])))',
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
                '(rate(perflab_event_loop_lag_seconds_bucket{job="$job"}[$__rate_interval])))',
            ),
            (
                "mean",
                'rate(perflab_event_loop_lag_seconds_sum{job="$job"}[$__rate_interval]) / '
                'rate(perflab_event_loop_lag_seconds_count{job="$job"}[$__rate_interval])',
            ),
        ),
    ),
)


def dashboard(*, title: str = "perflab collector", job: str = "perflab-collector") -> dict[str, Any]:
    """A Grafana dashboard (JSON model, importable as is) over the collector's and the
    primitives' metrics, with a Prometheus data-source variable and a job variable."""
    check_str("title", title)
    check_str("job", job)
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    panels = []
    for i, (panel_title, unit, targets) in enumerate(DASHBOARD_PANELS):
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
        "uid": "perflab-collector",
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


def panel_series(frame: pd.DataFrame) -> pd.DataFrame:
    """The dashboard's panels from scraped samples: one row per scrape, rates from the
    counters' change since the previous scrape (as ``rate()`` over one interval)."""
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
    in_flight = _value(frame, "perflab_pool_in_flight", name="collector")
    out["slot_usage"] = in_flight / _value(frame, "perflab_pool_max_concurrent", name="collector")
    for status in ("ok", "429", "error"):
        out[f"calls_{status}_per_s"] = rate(_value(frame, "perflab_api_calls_total", status=status))
    all_calls = out[["calls_ok_per_s", "calls_429_per_s", "calls_error_per_s"]].sum(axis=1)
    out["share_429"] = out["calls_429_per_s"] / all_calls.where(all_calls > 0)
    out["limiter_per_s"] = rate(_value(frame, "perflab_limiter_acquired_total", name="api"))
    out["limiter_target"] = _value(frame, "perflab_limiter_rate", name="api")
    for metric, column in (
        ("perflab_limiter_wait_seconds", "limiter_wait_ms"),
        ("perflab_event_loop_lag_seconds", "loop_lag_ms"),
        ("perflab_api_call_seconds", "call_ms"),
    ):
        labels = (
            {} if metric == "perflab_api_call_seconds" else {"name": "api" if "limiter" in metric else "main"}
        )
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
        "share_429",
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
