"""The lab fitted from production: read what a running service's client metrics say
about the API it calls (answered latency, its rate limit and its concurrency cap, told
apart by the status they refuse with) from Prometheus, as a server profile the task-pool,
rate-limit and collector notebooks take as a parameter; and hold a lab prediction
against an observed window.

Queries go to Prometheus's HTTP API (``/api/v1/query``) over the metrics of
:meth:`perflab.exporter.Exporter.add_api` (and, when present, the simulated collector's
cycle time from :mod:`perflab.workbench.monitoring`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perflab._files import write_new
from perflab._validate import check_number, check_str

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ServerProfile", "lab_against_observed", "observe", "prometheus_query", "profile_overrides"]


def prometheus_query(
    url: str, expr: str, *, timeout: float = 10.0, at: float | None = None, kind: str = "vector"
) -> list[dict[str, Any]]:
    """The result of an instant query (``[]`` when nothing matched), evaluated now or
    ``at`` (Unix seconds); ``kind`` is the result type expected (vector or matrix)."""
    params = {"query": expr, **({} if at is None else {"time": f"{at:.3f}"})}
    target = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode(params)}"
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
    if data["resultType"] != kind:
        raise ValueError(f"query {expr!r} gave a {data['resultType']}, not a {kind}")
    return list(data["result"])


def _scalar(url: str, expr: str, at: float | None = None) -> float:
    """One number from a query that yields at most one series (NaN when none)."""
    result = prometheus_query(url, expr, at=at)
    if not result:
        return math.nan
    if len(result) > 1:
        raise ValueError(f"query {expr!r} gave {len(result)} series; expected one")
    return float(result[0]["value"][1])


#: What a profile's limit is: seen (refusals showed where it is), a lower bound (the
#: server never refused at the highest level reached), or unknown (no data).
LimitKind = str


@dataclasses.dataclass(frozen=True, slots=True)
class ServerProfile:
    """What a window of production says about an API, from the client's own metrics
    (:meth:`perflab.exporter.Exporter.add_api`).

    Latency: of answered calls (p50, p99, mean, and the lognormal model the simulated
    API takes). Two limits, told apart by the status they answer with:

    - the rate limit (``rate_statuses``, 429 by default): ``server_rate`` is the rate of
      calls it let through while it refused some (the median over the sub-windows of a few
      seconds in which it did; ``server_rate_kind`` "seen"); with no
      refusal it is the highest send rate seen, a "lower bound". Its burst (a token
      bucket's capacity: calls let through at once) is bounded from below by the most
      answered calls sent within a short window, less what the rate allows in it
      (``ApiCalls.answered_in_window``): ``server_burst_kind`` "lower bound" once the rate
      was seen, else None and "unknown". It reaches the true burst only if the client once
      sent a burst after a pause long enough to fill the bucket.
    - the concurrency cap (``cap_statuses``, 503 by default): ``server_cap`` is one below
      the fewest calls at the server (counted by the client from send to answer) at which
      one was refused ("seen"); with no refusal, the most calls answered at once, a
      "lower bound". Calls waiting on the client's own limiter or pool are not at the
      server, so they never inflate it.

    ``send_jitter_ms`` is the p99 of the job's event-loop lag (``Exporter.watch_loop``):
    how late a send can leave after its limiter's grant, what
    :func:`perflab.aio.ratelimit.rate_with_headroom` sizes a rate's headroom from (NaN
    when no loop is watched).

    ``range_s`` is the window actually read (clamped to the series' age) and ``end`` its
    end (the last scrape, Unix seconds)."""

    job: str
    api: str
    source: str
    range_s: float
    end: float
    latency: str
    latency_p50_ms: float
    latency_p99_ms: float
    latency_mean_ms: float
    call_rate: float
    answered_rate: float
    rejected_share: float
    rate_rejected_share: float
    cap_rejected_share: float
    server_rate: float
    server_rate_kind: LimitKind
    server_burst: float | None
    server_cap: int
    server_cap_kind: LimitKind
    at_server_mean: float
    at_server_max: float
    retry_after_p50_s: float
    rate_statuses: tuple[int, ...] = (429,)
    cap_statuses: tuple[int, ...] = (503,)
    cycle_p50_s: float = math.nan
    cycle_p99_s: float = math.nan
    server_burst_kind: LimitKind = "unknown"
    send_jitter_ms: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """The profile in two lines of words."""
        rate = f"{self.server_rate:,.1f}/s" + (
            " or more (never refused)" if self.server_rate_kind != "seen" else ""
        )
        cap = f"{self.server_cap}" + (" or more (never refused)" if self.server_cap_kind != "seen" else "")
        burst = "unknown" if self.server_burst is None else f"{self.server_burst:g}"
        if self.server_burst is not None and self.server_burst_kind == "lower bound":
            burst += " or more"
        return (
            f"rate limit {rate}, burst {burst}; "
            f"concurrency cap {cap}; answered latency p50 {self.latency_p50_ms:.1f} ms, "
            f"p99 {self.latency_p99_ms:.1f} ms"
            + (
                f"; send jitter (event-loop lag p99) {self.send_jitter_ms:.2f} ms"
                if math.isfinite(self.send_jitter_ms)
                else ""
            )
        )

    def save(self, path: str | os.PathLike[str], *, replace: bool = False) -> Path:
        return write_new(path, json.dumps(self.as_dict(), indent=2).encode(), replace=replace)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ServerProfile:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"server profile {path}: {error}") from None
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = {n for n, f in fields.items() if f.default is dataclasses.MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(f"server profile {path} lacks {missing}: write it with perflab observe")
        values = {k: v for k, v in data.items() if k in fields}
        for name in ("rate_statuses", "cap_statuses"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def _label_values(
    url: str, metric: str, label: str, selector: str = "", at: float | None = None
) -> list[str]:
    result = prometheus_query(url, f"group by ({label}) ({metric}{{{selector}}})", at=at)
    return sorted(str(r["metric"].get(label, "")) for r in result)


def _statuses(statuses: Any, name: str) -> tuple[int, ...]:
    values = tuple(statuses)
    for status in values:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"{name} must be HTTP statuses (100-599), got {status!r}")
    return values


def _series_span(url: str, selector: str, range_s: float) -> tuple[float, float, float]:
    """The first and last scrape times of ``perflab_api_calls_total{selector}`` within
    ``range_s`` seconds of now, and the scrape interval (the median gap between scrapes)."""
    result = prometheus_query(
        url, f"perflab_api_calls_total{{{selector}}}[{int(math.ceil(range_s))}s]", kind="matrix"
    )
    times = [float(t) for series in result for t, _ in series["values"]]
    if not times:
        raise ValueError(
            f"no samples of perflab_api_calls_total{{{selector}}} in the last {range_s:g} s: "
            "did the job stop long ago? pass a longer --range"
        )
    longest = max((series["values"] for series in result), key=len)
    gaps = sorted(float(b[0]) - float(a[0]) for a, b in zip(longest, longest[1:], strict=False))
    interval = gaps[len(gaps) // 2] if gaps else 1.0
    return min(times), max(times), interval


def _levels(url: str, selector: str, window: str, at: float) -> list[tuple[float, float]]:
    """(le, count) of a histogram's buckets over the window ending ``at``, summed over
    the other labels. A series born inside the window counts whole (``increase`` would
    drop its first scrape: the first refusals of a status)."""
    x = f"perflab_api_in_flight_at_send_bucket{{{selector}}}"
    result = prometheus_query(url, f"sum by (le) (({x} - {x} offset {window}) or {x})", at=at)
    return sorted((float(r["metric"]["le"]), float(r["value"][1])) for r in result)


def _burst_lower_bound(
    url: str, selector: str, window: str, at: float, rate: float
) -> tuple[float | None, LimitKind]:
    """The most answered calls sent within ``w`` seconds, less ``rate * w``, at the best
    of the windows ``w`` the client counts in: a token bucket of that rate lets no more
    through. At least 1 (every bucket lets one call through); None when not exported."""
    peaks = prometheus_query(
        url, f"max by (window) (max_over_time(perflab_api_answered_in_window{{{selector}}}[{window}]))", at=at
    )
    if not peaks:
        return None, "unknown"
    bound = max(float(r["value"][1]) - rate * float(r["metric"]["window"]) for r in peaks)
    return float(max(1, math.floor(bound + 1e-9))), "lower bound"


def observe(
    url: str,
    job: str,
    *,
    range_s: float = 3600.0,
    api: str | None = None,
    rate_statuses: Sequence[int] = (429,),
    cap_statuses: Sequence[int] = (503,),
) -> ServerProfile:
    """A :class:`ServerProfile` of the API ``api`` (the one the job exports, by default)
    over the last ``range_s`` seconds of ``job``'s series (clamped to their age, with a
    warning), ending at its last scrape."""
    check_str("url", url)
    check_str("job", job)
    check_number("range_s", range_s, minimum=1)
    rate_codes = _statuses(rate_statuses, "rate_statuses")
    cap_codes = _statuses(cap_statuses, "cap_statuses")
    if set(rate_codes) & set(cap_codes):
        raise ValueError(f"a status cannot mean both limits: {sorted(set(rate_codes) & set(cap_codes))}")
    jobs = _label_values(url, "perflab_api_calls_total", "job")
    if job not in jobs:
        seen = ", ".join(jobs) if jobs else "none (register the client's API with exporter.add_api)"
        raise ValueError(f'no series perflab_api_calls_total{{job="{job}"}}; jobs seen: {seen}')
    names = _label_values(url, "perflab_api_calls_total", "name", f'job="{job}"')
    if api is None:
        if len(names) != 1:
            raise ValueError(f"job {job!r} exports the APIs {names}: name one (api=..., --api)")
        api = names[0]
    elif api not in names:
        raise ValueError(
            f'no series perflab_api_calls_total{{job="{job}",name="{api}"}}; APIs seen: {", ".join(names)}'
        )
    sel = f'job="{job}",name="{api}"'
    first, last, scrape = _series_span(url, sel, range_s)
    age = last - first
    if age < 2:
        raise ValueError(
            f"job {job!r} has {age:.1f} s of perflab_api_calls_total: let Prometheus scrape longer"
        )
    if range_s > age + 1:
        warnings.warn(
            f"the window ({range_s:g} s) is longer than job {job!r}'s series ({age:.0f} s): "
            f"read over {age:.0f} s",
            UserWarning,
            stacklevel=2,
        )
        range_s = math.floor(age)
    window = f"{int(range_s)}s"
    # The sub-windows a limit is judged in: 4 scrapes long, one scrape apart.
    step, resolution = f"{round(max(2.0, 4 * scrape) * 1000)}ms", f"{round(max(0.1, scrape) * 1000)}ms"

    def scalar(expr: str) -> float:
        return _scalar(url, expr, at=last)

    def of(statuses: tuple[int, ...]) -> str:
        return "|".join(str(s) for s in statuses)

    calls = f"perflab_api_calls_total{{{sel}}}"
    total = scalar(f"sum(rate({calls}[{window}]))")
    if not total > 0:
        raise ValueError(f"job {job!r} made no calls to {api!r} in the {window} ending at its last scrape")
    answered = scalar(f'sum(rate(perflab_api_calls_total{{{sel},status=~"[23].."}}[{window}]))')
    rate_refused = scalar(f'sum(rate(perflab_api_calls_total{{{sel},status=~"{of(rate_codes)}"}}[{window}]))')
    cap_refused = scalar(f'sum(rate(perflab_api_calls_total{{{sel},status=~"{of(cap_codes)}"}}[{window}]))')
    rate_refused = rate_refused if math.isfinite(rate_refused) else 0.0
    cap_refused = cap_refused if math.isfinite(cap_refused) else 0.0
    answered = answered if math.isfinite(answered) else 0.0

    latency = f"perflab_api_call_seconds_bucket{{{sel}}}"
    p50, p99 = (
        scalar(f"histogram_quantile({q}, sum by (le) (rate({latency}[{window}])))") * 1e3 for q in (0.5, 0.99)
    )
    mean = (
        scalar(
            f"sum(rate(perflab_api_call_seconds_sum{{{sel}}}[{window}])) / "
            f"sum(rate(perflab_api_call_seconds_count{{{sel}}}[{window}]))"
        )
        * 1e3
    )

    # The rate limit: what it let through in the sub-windows where it refused some.
    let_through = f'sum(rate(perflab_api_calls_total{{{sel},status!~"{of(rate_codes)}"}}[{step}]))'
    refused_now = f'sum(rate(perflab_api_calls_total{{{sel},status=~"{of(rate_codes)}"}}[{step}])) > 0'
    server_rate = scalar(f"quantile_over_time(0.5, ({let_through} and {refused_now})[{window}:{resolution}])")
    rate_kind = "seen"
    if not math.isfinite(server_rate):
        server_rate = scalar(f"max_over_time(sum(rate({calls}[{step}]))[{window}:{resolution}])")
        rate_kind = "lower bound"

    # The concurrency cap: the fewest calls at the server at which one was refused.
    refused_levels = [
        le for le, n in _levels(url, f'{sel},status=~"{of(cap_codes)}"', window, last) if n >= 0.5
    ]
    if refused_levels:
        server_cap, cap_kind = max(1, int(refused_levels[0]) - 1), "seen"
    else:
        levels = _levels(url, f'{sel},status=~"[23].."', window, last)
        most = levels[-1][1] if levels else 0.0
        reached = [le for le, n in levels if n >= most - 0.5 and math.isfinite(le)]
        server_cap, cap_kind = (int(reached[0]), "lower bound") if most > 0 and reached else (1, "unknown")
    server_burst, burst_kind = (
        _burst_lower_bound(url, sel, window, last, server_rate) if rate_kind == "seen" else (None, "unknown")
    )
    in_flight = f"perflab_api_in_flight{{{sel}}}"
    retry = f"perflab_api_retry_after_seconds_bucket{{{sel}}}"
    latency_model = f"lognormal:{p50:.3g}:{p99:.3g}" if p99 > p50 > 0 else f"constant:{max(p50, 0.001):.3g}"
    cycles = f'perflab_collector_cycle_seconds_bucket{{job="{job}"}}'
    lag = f'perflab_event_loop_lag_seconds_bucket{{job="{job}"}}'
    return ServerProfile(
        job=job,
        api=api,
        source=url,
        range_s=float(range_s),
        end=last,
        latency=latency_model,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        latency_mean_ms=mean,
        call_rate=total,
        answered_rate=answered,
        rejected_share=(rate_refused + cap_refused) / total,
        rate_rejected_share=rate_refused / total,
        cap_rejected_share=cap_refused / total,
        server_rate=server_rate,
        server_rate_kind=rate_kind,
        server_burst=server_burst,
        server_burst_kind=burst_kind,
        server_cap=server_cap,
        server_cap_kind=cap_kind,
        at_server_mean=scalar(f"avg_over_time({in_flight}[{window}])"),
        at_server_max=scalar(f"max_over_time(perflab_api_peak_in_flight{{{sel}}}[{window}])"),
        retry_after_p50_s=scalar(f"histogram_quantile(0.5, sum by (le) (increase({retry}[{window}])))"),
        rate_statuses=rate_codes,
        cap_statuses=cap_codes,
        cycle_p50_s=scalar(f"histogram_quantile(0.5, sum by (le) (rate({cycles}[{window}])))"),
        cycle_p99_s=scalar(f"histogram_quantile(0.99, sum by (le) (rate({cycles}[{window}])))"),
        send_jitter_ms=scalar(f"histogram_quantile(0.99, sum by (le) (rate({lag}[{window}])))") * 1e3,
    )


#: Which notebook parameter each profile field sets.
_PROFILE_PARAMETERS = {
    "latencies": lambda p: [p.latency],
    "latency": lambda p: p.latency,
    "server_cap": lambda p: p.server_cap,
    "server_rate": lambda p: round(p.server_rate, 1),
    # An unknown burst is modelled as none at all, a lower bound as itself: the cautious readings.
    "server_burst": lambda p: 1.0 if p.server_burst is None else float(p.server_burst),
    # Not watched: None, and the notebook measures its own loop's.
    "send_jitter_ms": lambda p: round(p.send_jitter_ms, 3) if math.isfinite(p.send_jitter_ms) else None,
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
