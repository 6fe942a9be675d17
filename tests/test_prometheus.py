"""A real Prometheus server (Debian's ``prometheus``, installed by .ci/run) scrapes a
running simulated collector: every metric the dashboard uses is there with the values the
primitives' own stats hold, and ``perflab observe`` reads a server profile back from it."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_bed import PrometheusBed, wait_for

from perflab import Results
from perflab.exporter import Exporter
from perflab.workbench.cli import main
from perflab.workbench.collector import CollectorConfig, LiveCounts, ServiceConfig, run_collector
from perflab.workbench.monitoring import dashboard, export_collector
from perflab.workbench.observe import ServerProfile, lab_against_observed, observe, prometheus_query

JOB = "perflab-collector"
pytestmark = [pytest.mark.slow, pytest.mark.exclusive]


class LiveCollector:
    """The simulated collector running in its own thread and loop, exported on a port."""

    def __init__(self, log_dir: Path, cycles: int) -> None:
        self.exporter = Exporter()
        self.live = LiveCounts()
        export_collector(self.exporter, self.live)
        self.port = self.exporter.serve(0)
        self.config = CollectorConfig(symbols=400, pool_size=32, rate=3000)
        self.service = ServiceConfig(
            latency="lognormal:15:80", max_concurrency=24, incident_cycle=4, incident_cap=12
        )
        self.thread = threading.Thread(target=self._run, args=(log_dir, cycles), daemon=True)
        self.error: BaseException | None = None

    def _run(self, log_dir: Path, cycles: int) -> None:
        try:
            asyncio.run(
                run_collector(
                    self.config,
                    self.service,
                    log_dir=log_dir,
                    cycles=cycles,
                    cycle_interval_s=0.5,
                    live=self.live,
                    exporter=self.exporter,
                )
            )
        except BaseException as error:  # reported by the test
            self.error = error


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LiveCollector]]:
    work = tmp_path_factory.mktemp("prometheus")
    collector = LiveCollector(work, cycles=12)
    server = PrometheusBed(work, JOB, [f"127.0.0.1:{collector.port}"])
    try:
        server.start()
        url = server.url
        server.wait_scraping()  # scraping already, so the series cover the whole run
        collector.thread.start()
        collector.thread.join(timeout=60)
        assert not collector.thread.is_alive() and collector.error is None, collector.error
        finished = time.time()
        wait_for(  # a scrape that began after the run ended: every counter's final value
            lambda: (
                [
                    float(r["value"][1]) > finished
                    for r in prometheus_query(
                        url, f'timestamp(perflab_collector_cycles_total{{job="{JOB}"}})'
                    )
                ]
                == [True]
            ),
            15,
            "a scrape after the run",
        )
        yield url, collector
    finally:
        server.stop()
        collector.exporter.close()


def labels(metric: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(metric.items()) if k not in ("job", "instance", "__name__"))


def increases(url: str, expr: str, window: str) -> dict[str, float]:
    """Last minus first scraped value of each series in the window (what rate() divides)."""
    query = urllib.parse.urlencode({"query": f"{expr}[{window}]"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=10) as response:
        result = json.loads(response.read())["data"]["result"]
    return {labels(r["metric"]): float(r["values"][-1][1]) - float(r["values"][0][1]) for r in result}


def dashboard_metrics() -> set[str]:
    """Every metric name the dashboard's queries use (histograms by their series names)."""
    exprs = [t["expr"] for panel in dashboard(collector=True)["panels"] for t in panel["targets"]]
    return set(re.findall(r"\b(perflab_[a-z_]+)\{", " ".join(exprs)))


def test_every_metric_the_dashboard_uses_is_scraped(prometheus: tuple[str, LiveCollector]) -> None:
    url, _ = prometheus
    names = dashboard_metrics()
    assert len(names) >= 10
    missing = [n for n in sorted(names) if not prometheus_query(url, f'{n}{{job="{JOB}"}}')]
    assert not missing, f"not in Prometheus: {missing}"


def test_scraped_values_match_the_primitives_own_stats(prometheus: tuple[str, LiveCollector]) -> None:
    url, collector = prometheus
    live = collector.live

    def last(expr: str) -> dict[str, float]:
        return {
            ",".join(
                f"{k}={v}" for k, v in sorted(r["metric"].items()) if k not in ("job", "instance", "__name__")
            ): float(r["value"][1])
            for r in prometheus_query(url, expr)
        }

    assert last(f'perflab_collector_collected_total{{job="{JOB}"}}') == {
        f"track={t}": float(n) for t, n in live.collected.items()
    }
    assert last(f'perflab_collector_missed_total{{job="{JOB}"}}') == {
        f"track={t}": float(n) for t, n in live.missed.items()
    }
    assert sum(live.collected.values()) + sum(live.missed.values()) == 12 * 400
    # The primitives and the API calls, through the exporter's own scrape of the same objects.
    text = collector.exporter.text()
    own = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith(
            ("perflab_pool_submitted_total", "perflab_limiter_acquired_total", "perflab_api_calls_total")
        )
    }
    assert last(f'perflab_api_calls_total{{job="{JOB}"}}') == {
        f"name=api,status={key.split('status=')[1][1:-2]}": value
        for key, value in own.items()
        if key.startswith("perflab_api_calls_total")
    }
    # The cap's refusals answer 503 (the rate limit's would be 429): the incident shows.
    assert own['perflab_api_calls_total{name="api",status="503"}'] > 0
    assert last(f'perflab_pool_submitted_total{{job="{JOB}"}}') == {
        "name=collector": own['perflab_pool_submitted_total{name="collector"}']
    }
    assert last(f'perflab_limiter_acquired_total{{job="{JOB}"}}') == {
        "name=api": own['perflab_limiter_acquired_total{name="api"}']
    }
    # The incident (the server's cap halved from cycle 4) shows as gaps.
    assert sum(live.missed.values()) > 0


def test_observe_reads_a_server_profile_back(
    prometheus: tuple[str, LiveCollector], tmp_path: Path, capsys
) -> None:
    url, collector = prometheus
    with pytest.warns(UserWarning, match="longer than"):
        profile = observe(url, JOB, range_s=3600)  # the job ran ~12 s: the window is clamped
    assert profile.range_s < 60 and profile.api == "api"
    window = f"{int(profile.range_s)}s"
    scraped = increases(url, f'perflab_api_calls_total{{job="{JOB}"}}', window)
    # rate() extrapolates each series to the window edges a little differently: within 5%
    refused = scraped["name=api,status=503"] / sum(scraped.values())
    assert profile.cap_rejected_share == pytest.approx(refused, rel=0.05)
    assert profile.rate_rejected_share == 0 and profile.server_rate_kind == "lower bound"
    assert profile.server_burst is None and profile.server_burst_kind == "unknown"  # no rate, no burst
    # The cap fell from 24 to 12 mid-run: refusals came from 13 calls at the server up.
    assert profile.server_cap_kind == "seen" and 12 <= profile.server_cap <= 24
    assert 5 < profile.latency_p50_ms < 45  # the simulated API's p50 is 15 ms (10-20 ms bucket)
    assert profile.latency_p99_ms > profile.latency_p50_ms
    assert profile.latency.startswith("lognormal:")
    assert 0 < profile.cycle_p50_s <= profile.cycle_p99_s
    out = tmp_path / "profile.json"
    assert main(["observe", "--prometheus", url, "--job", JOB, "--range", "1m", "--out", str(out)]) == 0
    assert ServerProfile.load(out).job == JOB
    assert "server_profile" in capsys.readouterr().out
    assert main(["observe", "--prometheus", url, "--job", "nobody", "--range", "1m"]) == 2
    assert f'no series perflab_api_calls_total{{job="nobody"}}; jobs seen: {JOB}' in capsys.readouterr().err
    assert main(["observe", "--prometheus", url, "--job", JOB, "--api", "other"]) == 2
    assert "APIs seen: api" in capsys.readouterr().err


def test_the_lab_is_held_against_the_observed_window(
    prometheus: tuple[str, LiveCollector], tmp_path: Path, capsys
) -> None:
    url, _ = prometheus
    run = tmp_path / "run"
    (run / "collector").mkdir(parents=True)
    rows = [
        {
            "stage": "confirm",
            "pool_size": 32,
            "rate": 3000.0,
            "repeat": r,
            "cycle_s": 0.2 + 0.01 * r,
            "rejected_share": 0.0,
        }
        for r in range(3)
    ]
    Results.new("collector", ["stage", "pool_size", "rate"], ["cycle_s", "rejected_share"], rows).dump(
        run / "collector" / "results.json"
    )
    summary = {"recommended": {"pool_size": 32, "rate": 3000.0}}
    (run / "collector" / "summary.json").write_bytes(orjson.dumps(summary))
    with pytest.warns(UserWarning, match="longer than"):
        table = lab_against_observed(run, observe(url, JOB, range_s=60))
    by = table.set_index("metric")
    assert by.loc["cycle_s", "lab_max"] == pytest.approx(0.22)
    # The planted incident made production refuse calls the lab never saw refused.
    assert by.loc["rejected_share", "verdict"].startswith("worse than the lab")
    code = main(
        ["compare", str(run), "--prometheus", url, "--job", JOB, "--range", "1m", "--fail-on-regression", "5"]
    )
    assert code == 1
    assert "rejected_share" in capsys.readouterr().out


def test_the_dashboard_is_a_grafana_json_model() -> None:
    model = dashboard(job="my-collector", collector=True)
    json.dumps(model)  # plain JSON
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert variables["job"]["current"]["value"] == "my-collector"
    titles = [panel["title"] for panel in model["panels"]]
    for wanted in (
        "Symbols per cycle",
        "Collection rate per track",
        "Pool slot usage",
        "Gaps",
        "refused share (429, 503)",
        "latency",
        "at the server",
        "limiter",
        "lag",
    ):
        assert any(wanted.lower() in t.lower() for t in titles), wanted
    ids = [panel["id"] for panel in model["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in model["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        for target in panel["targets"]:
            assert target["refId"] and 'job="$job"' in target["expr"]
