"""ApiCalls: the public instrumentation of a client's API calls, by hand and through the
aiohttp and httpx hooks against a real local HTTP server."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from token_bucket import bucket_answers

from perflab import ApiCalls
from perflab.aio import apicalls
from perflab.aio.apicalls import (
    BURST_WINDOWS,
    PEAK_HOLD_S,
    HttpxTransport,
    aiohttp_trace,
    retry_after_seconds,
)
from perflab.exporter import Exporter


def test_a_call_counts_its_status_latency_and_the_calls_at_the_server_when_sent() -> None:
    api = ApiCalls("quotes")

    async def main() -> None:
        async def one(status: int, delay: float) -> None:
            async with api.call() as call:
                await asyncio.sleep(delay)
                call.status = status
                if status == 429:
                    call.retry_after = "2"

        await asyncio.gather(one(200, 0.02), one(200, 0.02), one(429, 0.0), one(503, 0.0))

    asyncio.run(main())
    stats = api.stats
    assert stats.calls == 4 and stats.by_status == {"200": 2, "429": 1, "503": 1}
    assert stats.answered == 2 and stats.in_flight == 0 and stats.peak_in_flight == 4
    latency = api.latency_histogram()
    assert latency.count == 2 and latency.sum >= 0.03  # only answered calls, ~20 ms each
    levels = api.in_flight_histograms()
    # Sent in order: the first at level 1 ... the fourth (the 503) at level 4.
    assert levels["503"].quantile(1.0) == pytest.approx(4.0)
    assert levels["200"].count == 2 and levels["429"].count == 1
    assert api.retry_after_histogram().sum == pytest.approx(2.0)
    assert stats.retry_after == 1


def test_a_call_that_raises_counts_as_error_timeout_or_cancelled_and_leaves_the_server() -> None:
    api = ApiCalls()

    async def main() -> None:
        with pytest.raises(ConnectionResetError):
            async with api.call():
                raise ConnectionResetError
        with pytest.raises(TimeoutError):
            async with api.call(), asyncio.timeout(0.01):  # the client's own timeout
                await asyncio.sleep(1)
        task = asyncio.create_task(_hang(api))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with api.call():  # no status set: answered
            pass

    asyncio.run(main())
    assert api.stats.by_status == {"error": 1, "timeout": 1, "cancelled": 1, "ok": 1}
    assert api.stats.in_flight == 0


async def _hang(api: ApiCalls) -> None:
    async with api.call():
        await asyncio.sleep(10)


def test_observe_records_a_call_timed_elsewhere_and_checks_its_arguments() -> None:
    api = ApiCalls()
    api.observe(200, 0.05)
    api.observe(429, 0.001, retry_after="1.5")
    assert api.stats.by_status == {"200": 1, "429": 1} and api.stats.peak_in_flight == 0
    assert api.in_flight_histograms() == {}  # never at the server as far as it knows
    with pytest.raises(ValueError, match="seconds"):
        api.observe(200, -1)
    with pytest.raises(TypeError, match="status"):
        api.observe(None, 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        ApiCalls("")


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_seconds(date, now=now) == pytest.approx(30, abs=1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(apicalls, "time", fake)
    return fake


def run_calls(api: ApiCalls, clock: FakeClock, calls: list[tuple[float, float, int]]) -> None:
    """Calls given as (sent, answered, status) in seconds from now, entered and left in
    the order those instants come."""
    start = clock.now
    events = sorted(
        [(sent, 0, i) for i, (sent, _, _) in enumerate(calls)]
        + [(answered, 1, i) for i, (_, answered, _) in enumerate(calls)]
    )
    open_calls = {}
    for at, kind, i in events:
        clock.now = start + at
        if kind == 0:
            open_calls[i] = api.call().__enter__()
        else:
            open_calls[i].status = calls[i][2]
            open_calls[i].__exit__(None, None, None)


def test_answered_calls_sent_close_together_are_counted_per_window_and_held(clock: FakeClock) -> None:
    api = ApiCalls()
    assert api.answered_in_window() == dict.fromkeys(BURST_WINDOWS, 0)
    # Answered at 0, 0.01 and 0.2 s; a 429 in between does not count; windows are (t-w, t].
    run_calls(api, clock, [(0.0, 0.02, 200), (0.01, 0.03, 200), (0.015, 0.016, 429), (0.2, 0.25, 200)])
    assert api.answered_in_window() == {0.05: 2, 0.1: 2, 0.2: 2, 0.5: 3, 1.0: 3}
    clock.now += PEAK_HOLD_S - 1
    assert api.answered_in_window()[1.0] == 3  # still held
    clock.now += 2
    assert api.answered_in_window() == dict.fromkeys(BURST_WINDOWS, 0)
    run_calls(api, clock, [(0.0, 0.01, 200)])
    assert api.answered_in_window() == dict.fromkeys(BURST_WINDOWS, 1)
    text = Exporter()
    text.add_api("quotes", api)
    assert 'perflab_api_answered_in_window{name="quotes",window="0.05"} 1.0' in text.text()


def test_the_answered_peaks_show_a_burst_the_client_once_sent_into_a_full_bucket(clock: FakeClock) -> None:
    """nginx-like: 200/s with 11 calls at once; the client sends evenly at 250/s from a
    full bucket. The bound found is within one call of the capacity (windows are open at
    their start)."""
    api = ApiCalls()
    sends = [i / 250 for i in range(500)]
    answered = bucket_answers(sends, 200, 11)
    calls = [(at, at + 0.02, 200 if ok else 429) for at, ok in zip(sends, answered, strict=True)]
    run_calls(api, clock, calls)
    bound = max(count - 200 * window for window, count in api.answered_in_window().items())
    assert 10 <= bound <= 11


@settings(max_examples=60, deadline=None)
@given(
    rate=st.sampled_from([20.0, 200.0, 1000.0]),
    capacity=st.integers(1, 30),
    offered=st.floats(0.5, 3.0),
    pause=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**16),
)
def test_the_answered_peaks_never_overstate_a_token_buckets_capacity(
    rate: float, capacity: int, offered: float, pause: float, seed: int
) -> None:
    """Through any token bucket (rate, capacity), the most answered calls in a window w,
    less rate * w, is at most the capacity: what observe reports as the burst's lower
    bound. Poisson sends at ``offered`` x the rate, with a pause (the bucket refills)."""
    fake = FakeClock()
    original = apicalls.time
    apicalls.time = fake  # type: ignore[assignment]
    try:
        api = ApiCalls()
        rng = random.Random(seed)
        at, sends = 0.0, []
        for i in range(600):
            at += rng.expovariate(rate * offered) + (pause if i == 300 else 0.0)
            sends.append(at)
        answered = bucket_answers(sends, rate, capacity)
        calls = [
            (at, at + rng.uniform(0.001, 0.05), 200 if ok else 429)
            for at, ok in zip(sends, answered, strict=True)
        ]
        run_calls(api, fake, calls)
        peaks = api.answered_in_window()
    finally:
        apicalls.time = original  # type: ignore[assignment]
    assert max(count - rate * window for window, count in peaks.items()) <= capacity + 1e-6
    assert max(peaks.values()) >= 1


def test_the_exporter_publishes_an_api_under_its_name() -> None:
    exporter = Exporter()
    api = exporter.add_api("quotes")
    api.observe(200, 0.02)
    api.observe(503, 0.001)
    with api.call() as call:
        call.status = 200
    text = exporter.text()
    assert 'perflab_api_calls_total{name="quotes",status="200"} 2.0' in text
    assert 'perflab_api_calls_total{name="quotes",status="503"} 1.0' in text
    assert 'perflab_api_call_seconds_count{name="quotes"} 2.0' in text
    assert 'perflab_api_in_flight{name="quotes"} 0.0' in text
    assert 'perflab_api_in_flight_at_send_bucket{le="1.0",name="quotes",status="200"} 1.0' in text
    with pytest.raises(ValueError, match="already registered"):
        exporter.add_api("quotes")
    assert exporter.add_api("quotes", api, replace=True) is api


# --------------------------------------------------------------------------- real HTTP


@pytest.fixture
async def server() -> AsyncIterator[str]:
    """A local aiohttp server: /ok answers 200 after 20 ms, /busy 503, /slow-down 429."""
    from aiohttp import web

    async def ok(request: web.Request) -> web.Response:
        await asyncio.sleep(0.02)
        return web.Response(text="ok")

    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=503)

    async def slow_down(request: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "1"})

    app = web.Application()
    app.add_routes([web.get("/ok", ok), web.get("/busy", busy), web.get("/slow-down", slow_down)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_the_aiohttp_trace_records_every_request(server: str) -> None:
    import aiohttp

    api = ApiCalls()
    async with aiohttp.ClientSession(trace_configs=[aiohttp_trace(api)]) as session:
        for path in ("ok", "ok", "busy", "slow-down"):
            async with session.get(f"{server}/{path}") as response:
                await response.read()
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get("http://127.0.0.1:1/")  # nobody listens: no answer
    assert api.stats.by_status == {"200": 2, "503": 1, "429": 1, "error": 1}
    assert api.stats.in_flight == 0
    assert api.latency_histogram().count == 2 and api.latency_histogram().sum >= 0.035
    assert api.retry_after_histogram().sum == pytest.approx(1.0)


@pytest.mark.asyncio
async def test_the_httpx_transport_records_every_request(server: str) -> None:
    import httpx

    api = ApiCalls()
    async with httpx.AsyncClient(transport=HttpxTransport(api)) as client:
        statuses = [
            (await client.get(f"{server}/{path}")).status_code for path in ("ok", "busy", "slow-down")
        ]
        with pytest.raises(httpx.ConnectError):
            await client.get("http://127.0.0.1:1/")
        with pytest.raises(httpx.TimeoutException):
            await client.get(f"{server}/ok", timeout=0.001)
    assert statuses == [200, 503, 429]
    by_status = dict(api.stats.by_status)
    assert by_status == {"200": 1, "503": 1, "429": 1, "error": 1, "timeout": 1}
    assert api.stats.in_flight == 0
    with pytest.raises(TypeError, match="ApiCalls"):
        HttpxTransport("api")  # type: ignore[arg-type]
