"""The lab fitted from production: read what a running collector's metrics say about its
API (latency quantiles, 429 share, request rate, concurrency) from Prometheus, as a
server profile the task-pool, rate-limit and collector notebooks take as a parameter; and
hold a lab prediction against an observed window.

Queries go to Prometheus's HTTP API (``/api/v1/query``) over the metrics of
:mod:`perflab.workbench.monitoring` and :mod:`perflab.exporter`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perflab._files import write_new
from perflab._validate import check_number, check_str
from perflab.measure.queueing import in_flight

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ServerProfile", "lab_against_observed", "observe", "prometheus_query", "profile_overrides"]


def prometheus_query(url: str, expr: str, *, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The result vector of an instant query (``[]`` when nothing matched)."""
    query = urllib.parse.urlencode({"query": expr})
    target = f"{url.rstrip('/')}/api/v1/query?{query}"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:  # noqa: S310 - the user's URL
            payload = json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise ValueError(
            f"Prometheus refused {expr!r}: {error.read().decode(errors='replace')[:200]}"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        raise ConnectionError(f"cannot reach Prometheus at {url}: {error}") from None
    if payload.get("status") != "success":
        raise ValueError(f"Prometheus query {expr!r} failed: {payload.get('error')}")
    data = payload["data"]
    if data["resultType"] != "vector":
        raise ValueError(f"query {expr!r} gave a {data['resultType']}, not a vector")
    return list(data["result"])


def _scalar(url: str, expr: str) -> float:
    """One number from a query that yields at most one series (NaN when none)."""
    result = prometheus_query(url, expr)
    if not result:
        return math.nan
    if len(result) > 1:
        raise ValueError(f"query {expr!r} gave {len(result)} series; expected one")
    return float(result[0]["value"][1])


@dataclasses.dataclass(frozen=True, slots=True)
class ServerProfile:
    """What a window of production says about the API: the latency of answered calls
    (p50, p99 and the lognormal model the simulated API takes), the 429 share, the call
    rate, how many calls the pool had in flight, and the cycle time.

    ``server_cap`` is how many calls the server was seen to answer at once: when it
    refused more than 1% of calls, its answered rate times the answered latency (Little's
    law); otherwise the most calls in flight. Client-side metrics cannot see the cap
    itself, so this is a lower bound, and sweeps run on it are conservative.
    ``server_rate`` is the answered calls per second (a lower bound of its rate limit)."""

    job: str
    source: str
    range_s: float
    latency: str
    latency_p50_ms: float
    latency_p99_ms: float
    call_rate: float
    rejected_share: float
    concurrency_mean: float
    concurrency_max: float
    server_cap: int
    server_rate: float
    cycle_p50_s: float
    cycle_p99_s: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike[str], *, replace: bool = False) -> Path:
        return write_new(path, json.dumps(self.as_dict(), indent=2).encode(), replace=replace)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ServerProfile:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"server profile {path}: {error}") from None
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(fields - set(data))
        if missing:
            raise ValueError(f"server profile {path} lacks {missing}: write it with perflab observe")
        return cls(**{k: v for k, v in data.items() if k in fields})


def observe(url: str, job: str, *, range_s: float = 3600.0) -> ServerProfile:
    """A :class:`ServerProfile` of ``job`` over the last ``range_s`` seconds."""
    check_str("url", url)
    check_str("job", job)
    check_number("range_s", range_s, minimum=1)
    window = f"{int(range_s)}s"
    sel = f'job="{job}"'

    def quantile(q: float, metric: str) -> float:
        return _scalar(
            url, f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{sel}}}[{window}])))"
        )

    calls = _scalar(url, f"sum(rate(perflab_api_calls_total{{{sel}}}[{window}]))")
    if not calls > 0:
        raise ValueError(f"job {job!r} made no API calls in the last {window} (perflab_api_calls_total)")
    ok = _scalar(url, f'sum(rate(perflab_api_calls_total{{{sel},status="ok"}}[{window}]))')
    rejected = _scalar(url, f'sum(rate(perflab_api_calls_total{{{sel},status="429"}}[{window}]))')
    p50, p99 = (
        quantile(0.5, "perflab_api_call_seconds") * 1e3,
        quantile(0.99, "perflab_api_call_seconds") * 1e3,
    )
    in_flight_series = f'perflab_pool_in_flight{{{sel},name="collector"}}'
    mean = _scalar(url, f"avg_over_time({in_flight_series}[{window}])")
    peak = _scalar(url, f"max_over_time({in_flight_series}[{window}])")
    share = (rejected if math.isfinite(rejected) else 0.0) / calls
    latency_sum = f"sum(rate(perflab_api_call_seconds_sum{{{sel}}}[{window}]))"
    latency_count = f"sum(rate(perflab_api_call_seconds_count{{{sel}}}[{window}]))"
    mean_latency = _scalar(url, f"{latency_sum} / {latency_count}")
    # What the server was seen to answer at once (Little's law: answered rate x latency)
    # when it refused calls; without refusals the most in flight. A lower bound either way.
    answered = in_flight(
        ok if math.isfinite(ok) else 0.0, mean_latency if math.isfinite(mean_latency) else 0.0
    )
    cap = answered if share > 0.01 else peak
    latency = f"lognormal:{p50:.3g}:{p99:.3g}" if p99 > p50 > 0 else f"constant:{max(p50, 0.001):.3g}"
    return ServerProfile(
        job=job,
        source=url,
        range_s=float(range_s),
        latency=latency,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        call_rate=calls,
        rejected_share=share,
        concurrency_mean=mean,
        concurrency_max=peak,
        server_cap=max(1, int(cap)) if math.isfinite(cap) else 1,
        server_rate=ok if math.isfinite(ok) else 0.0,
        cycle_p50_s=quantile(0.5, "perflab_collector_cycle_seconds"),
        cycle_p99_s=quantile(0.99, "perflab_collector_cycle_seconds"),
    )


#: Which notebook parameter each profile field sets.
_PROFILE_PARAMETERS = {
    "latencies": lambda p: [p.latency],
    "latency": lambda p: p.latency,
    "server_cap": lambda p: p.server_cap,
    "server_rate": lambda p: round(p.server_rate, 1),
}


def profile_overrides(path: str, **parameters: Any) -> dict[str, Any]:
    """The notebook parameters given, with those a server profile knows replaced by its
    observed values (``path`` empty: unchanged). Unknown names are refused."""
    unknown = sorted(set(parameters) - set(_PROFILE_PARAMETERS))
    if unknown:
        raise ValueError(f"a server profile sets {sorted(_PROFILE_PARAMETERS)}, not {unknown}")
    if not path:
        return dict(parameters)
    profile = ServerProfile.load(path)
    return {name: _PROFILE_PARAMETERS[name](profile) for name in parameters}


def lab_against_observed(run: str | os.PathLike[str], profile: ServerProfile) -> pd.DataFrame:
    """The collector notebook's prediction for its recommended setting (the cycles it
    confirmed it with) beside what production showed in the profile's window."""
    import pandas as pd

    from perflab.workbench.runs import RESULTS, load_finding, load_run

    folder = Path(run) / "collector"
    finding = load_finding(folder)
    if finding is None:
        raise ValueError(f"{run} holds no collector results: run the collector notebook (perflab report)")
    recommended = finding["recommended"]
    if not recommended:
        raise ValueError(f"{run}: the collector notebook recommended no setting (none met its target)")
    frame = load_run(folder / RESULTS)["collector"].to_frame()
    chosen = frame[
        (frame["stage"] == "confirm")
        & (frame["pool_size"] == recommended["pool_size"])
        & (frame["rate"] == recommended["rate"])
    ]
    setting = f"pool_size={recommended['pool_size']}, rate={recommended['rate']:g}"
    rows = []
    for metric, observed_p50, observed_p99 in (
        ("cycle_s", profile.cycle_p50_s, profile.cycle_p99_s),
        ("rejected_share", profile.rejected_share, profile.rejected_share),
    ):
        lab = chosen[metric]
        worst = float(lab.max())
        if not math.isfinite(observed_p99):
            verdict = "no observation"
        elif observed_p99 <= worst * 1.05 + (0.005 if metric == "rejected_share" else 0.0):
            verdict = "as the lab predicted"
        else:
            verdict = (
                f"worse than the lab's worst by {observed_p99 / worst - 1:+.0%}"
                if worst
                else "worse than the lab"
            )
        rows.append(
            {
                "setting": setting,
                "metric": metric,
                "lab_median": float(lab.median()),
                "lab_min": float(lab.min()),
                "lab_max": worst,
                "lab_n": int(lab.size),
                "observed_p50": observed_p50,
                "observed_p99": observed_p99,
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows)
