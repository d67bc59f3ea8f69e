"""Prometheus scraping against real HTTP targets on 127.0.0.1 and a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, start_http_server
from redis.asyncio import Redis

from services.collector import scrape as scrape_module
from services.collector.publish import Publisher
from services.collector.relabel import Target, targets_of
from services.collector.scrape import (
    LOG_EVERY,
    ScrapeFailed,
    ScrapeLimits,
    Scraper,
    _label_limit_exceeded,
    accept_header,
    protocol_for,
    start_scraping,
)
from shared.clock import FakeClock, SystemClock
from shared.codec import decode_entry
from shared.config import Config, load_config
from shared.scrape_config import ScrapeConfig
from shared.service import Service
from shared.streams import Keys
from shared.tasks import cancel_and_wait
from shared.yamlfile import ConfigErrors
from tests.polling import eventually
from tests.redis_server import LocalRedisServer

NOW = 1_763_800_000.0
SCRAPE_LOGGER = "services.collector.scrape"


class Exporter:
    """A scrape target on 127.0.0.1: answers every GET with `body` (and records what it was asked)."""

    def __init__(self) -> None:
        self.body = b""
        self.content_type = "text/plain; version=0.0.4; charset=utf-8"
        self.status = 200
        # While set and not released, requests wait: a slow or hanging target.
        self.gate: asyncio.Event | None = None
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._server: TestServer | None = None

    async def start(self) -> Exporter:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        return self

    @property
    def address(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.port}"

    def hold(self) -> None:
        self.gate = asyncio.Event()

    def release(self) -> None:
        if self.gate is not None:
            self.gate.set()

    async def stop(self) -> None:
        self.release()
        if self._server is not None:
            await self._server.close()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append({"path": request.path_qs, "headers": dict(request.headers)})
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            return web.Response(
                body=self.body, status=self.status, headers={"Content-Type": self.content_type}
            )
        finally:
            self.in_flight -= 1


@pytest.fixture
async def exporter() -> AsyncIterator[Exporter]:
    target = await Exporter().start()
    yield target
    await target.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def limits() -> ScrapeLimits:
    return ScrapeLimits.from_config(Config())


@pytest.fixture
async def make_scraper(redis: Redis, keys: Keys, clock: FakeClock, limits: ScrapeLimits):
    """A Scraper for jobs given as dicts (job_name defaults to "app"), publishing to this test's stream."""
    made: list[Scraper] = []

    def build(*jobs: dict[str, Any], publisher: Publisher | None = None, **options: Any) -> Scraper:
        configs = [ScrapeConfig.model_validate({"job_name": "app", **job}) for job in jobs]
        scraper = Scraper(
            configs,
            publisher or Publisher(redis, 100_000, 1.0),
            keys.metrics,
            None,
            options.pop("clock", clock),
            options.pop("limits", limits),
            CollectorRegistry(),
            **options,
        )
        made.append(scraper)
        return scraper

    yield build
    for scraper in made:
        await scraper.close()


def static(*addresses: str, **extra: Any) -> dict[str, Any]:
    return {"static_configs": [{"targets": list(addresses)}], **extra}


async def batches(redis: Redis, keys: Keys) -> list[list[dict[str, Any]]]:
    return [decode_entry(fields).items for _, fields in await redis.xrange(keys.metrics)]


def named(items: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [item for item in items if item["name"] == name]


def value_of(items: list[dict[str, Any]], name: str) -> float:
    (item,) = named(items, name)
    return item["value"]


def metric(scraper: Scraper, name: str, **labels: str) -> float:
    for collector in (
        scraper.metrics.scrapes,
        scraper.metrics.skipped,
        scraper.metrics.publish_failures,
        scraper.metrics.dropped,
    ):
        for family in collector.collect():
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
    return 0.0


@contextlib.asynccontextmanager
async def running(scraper: Scraper) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(scraper.run())
    try:
        yield task
    finally:
        await cancel_and_wait([task])


# A real prometheus-client app ----------------------------------------------------------------------------
@pytest.fixture
def client_app() -> Iterator[tuple[str, CollectorRegistry]]:
    """A prometheus-client app: its own registry served by start_http_server on a free port in a thread."""
    registry = CollectorRegistry()
    requests = Counter("http_requests", "Requests.", ["path"], registry=registry)
    requests.labels("/checkout").inc(3)
    Gauge("queue_depth", "Queue depth.", registry=registry).set(7)
    latency = Histogram("latency_seconds", "Latency.", buckets=(0.1, 1.0), registry=registry)
    latency.observe(0.5)
    Summary("payload_bytes", "Payload size.", registry=registry).observe(512)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield f"127.0.0.1:{server.server_address[1]}", registry
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.mark.parametrize(
    ("protocols", "protocol"),
    [({}, "text"), ({"scrape_protocols": ["OpenMetricsText1.0.0", "PrometheusText0.0.4"]}, "openmetrics")],
)
async def test_scrapes_a_prometheus_client_app_onto_the_stream(
    client_app, make_scraper, redis, keys, protocols, protocol
):
    address, _ = client_app
    scraper = make_scraper(static(address, **protocols))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason
    # A finished parse is not kept (with it, the scrape's whole result) until the target's next scrape.
    await eventually(lambda: _all_done(scraper), what="the parse to be forgotten")
    assert result.protocol == protocol  # prometheus-client honours our Accept header, in its order

    (items,) = await batches(redis, keys)  # one scrape, one entry
    target = {"job": "app", "instance": address}
    assert named(items, "http_requests_total") == [
        {
            "name": "http_requests_total",
            "labels": {"path": "/checkout", **target},
            "value": 3.0,
            "kind": "sample",
            "timestamp": NOW,
        }
    ]
    assert value_of(items, "queue_depth") == 7.0
    buckets = {item["labels"]["le"]: item["value"] for item in named(items, "latency_seconds_bucket")}
    assert buckets == {"0.1": 0.0, "1.0": 1.0, "+Inf": 1.0}
    assert value_of(items, "latency_seconds_count") == 1.0
    assert value_of(items, "latency_seconds_sum") == 0.5
    assert value_of(items, "payload_bytes_sum") == 512.0
    assert value_of(items, "up") == 1.0
    assert named(items, "up")[0]["labels"] == target
    exposed = [item for item in items if not item["name"].startswith(("up", "scrape_"))]
    assert value_of(items, "scrape_samples_scraped") == len(exposed)
    assert value_of(items, "scrape_samples_post_metric_relabeling") == len(exposed)
    assert 0 < value_of(items, "scrape_duration_seconds") < 5
    assert all(item["labels"]["job"] == "app" and item["timestamp"] == NOW for item in items)
    assert metric(scraper, "tripwire_scrapes_total", job="app", outcome="success") == 1


async def test_text_format_keeps_names_as_exposed_and_sample_timestamps(exporter, make_scraper, redis, keys):
    exporter.body = f"""# HELP legacy_counter A counter named without _total.
# TYPE legacy_counter counter
legacy_counter 7
# TYPE jobs_total counter
jobs_total{{queue="a"}} 3
# TYPE temperature gauge
temperature 21.5 {int((NOW - 30) * 1000)}
# TYPE rpc_seconds summary
rpc_seconds{{quantile="0.5"}} 0.2
rpc_seconds_sum 10
rpc_seconds_count 50
untyped_thing 1
""".encode()
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason
    assert result.protocol == "text"
    (items,) = await batches(redis, keys)
    assert value_of(items, "legacy_counter") == 7.0
    assert not named(items, "legacy_counter_total")
    assert named(items, "jobs_total")[0]["labels"]["queue"] == "a"
    assert named(items, "temperature")[0]["timestamp"] == NOW - 30  # its own timestamp (ms on the wire)
    assert named(items, "rpc_seconds")[0]["labels"]["quantile"] == "0.5"
    assert value_of(items, "rpc_seconds_count") == 50.0
    assert named(items, "untyped_thing")[0]["timestamp"] == NOW
    assert value_of(items, "scrape_samples_scraped") == 7


@pytest.mark.parametrize("plain_first", [True, False])
async def test_a_counter_and_a_total_counter_of_the_same_stem_keep_their_names(
    exporter, make_scraper, redis, keys, plain_first
):
    # prometheus-client names both families `foo`; only the samples it renamed get their name back.
    plain, total = "# TYPE foo counter\nfoo 3\n", "# TYPE foo_total counter\nfoo_total 4\n"
    exporter.body = (plain + total if plain_first else total + plain).encode()
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason
    (items,) = await batches(redis, keys)
    assert value_of(items, "foo") == 3.0
    assert value_of(items, "foo_total") == 4.0
    assert metric(scraper, "tripwire_scrape_samples_dropped_total", job="app", reason="duplicate") == 0


@pytest.mark.parametrize(
    "body",
    [
        # The parser renames by the type a family ends with: a TYPE line after some samples still counts.
        '# HELP foo h\nfoo{a="1"} 1\n# TYPE foo counter\nfoo{a="2"} 2\n',
        '# TYPE foo gauge\nfoo{a="1"} 1\n# TYPE foo counter\nfoo{a="2"} 2\n',
        # The name inside the braces, and a quoted TYPE name.
        '# TYPE foo counter\n{__name__="foo",a="1"} 1\n{"foo",a="2"} 2\n',
        '# TYPE "foo" counter\nfoo{a="1"} 1\nfoo{a="2"} 2\n',
    ],
)
async def test_every_sample_of_a_counter_declared_without_total_keeps_its_name(
    exporter, make_scraper, redis, keys, body
):
    exporter.body = body.encode()
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason
    (items,) = await batches(redis, keys)
    assert sorted(item["labels"]["a"] for item in named(items, "foo")) == ["1", "2"]
    assert not named(items, "foo_total")


@pytest.mark.parametrize("line", ['foo 1 # {a="b"} 1700000000000', 'foo{a="}"} 1 # {x="y"} 2'])
async def test_an_exemplar_in_a_text_body_fails_the_scrape_as_prometheus(exporter, make_scraper, line):
    # The text format has no exemplars; prometheus-client took the exemplar's time as the sample's.
    exporter.body = f"# TYPE foo counter\n{line}\n".encode()
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.outcome == "parse_error"
    assert "expected a value and an optional integer timestamp" in (result.reason or "")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        # Python's float() reads these; Go's strconv.ParseFloat, which Prometheus uses, refuses them
        # (helper-54, against Prometheus 2.42): "٣" was stored as 3.
        ("a \u0663", "invalid syntax"),
        ("a \uff11", "invalid syntax"),
        ("a 1e400", "value out of range"),
        ("a +NaN", "invalid syntax"),
        ("a 1_0", "unsupported character"),
        ("a 1 -1000", "expected a value and an optional integer timestamp"),
        # A line with a `__` label is dropped, but a broken one still fails the scrape, as there.
        ('a{__x="1"} 0x10', "invalid syntax"),
        ('a{__x="1"}', "expected a value"),
    ],
)
async def test_values_and_timestamps_prometheus_refuses_fail_the_scrape(exporter, make_scraper, line, reason):
    exporter.body = f"b 1\n{line}\n".encode()
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.outcome == "parse_error"
    assert "line 2" in (result.reason or "") and reason in (result.reason or "")


@pytest.mark.parametrize("value", ["1", "-2.5", "1e-3", "+Inf", "-inf", "NaN", "1.5E+06", "0.", ".5"])
async def test_values_go_reads_are_read(exporter, make_scraper, redis, keys, value):
    exporter.body = f"a {value}\n".encode()
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason
    assert value_of((await batches(redis, keys))[0], "scrape_samples_scraped") == 1


async def test_a_bare_type_line_is_a_comment_as_in_prometheus(exporter, make_scraper, redis, keys):
    exporter.body = b"# TYPE\na 1\n"
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason
    assert value_of((await batches(redis, keys))[0], "a") == 1.0


async def test_a_nan_dropped_still_takes_its_series_and_time_from_a_duplicate(
    exporter, make_scraper, redis, keys
):
    # Prometheus stores the NaN and refuses the second sample of the same series and time.
    exporter.body = b"a NaN\na 2\n"
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason
    assert not named((await batches(redis, keys))[0], "a")
    assert metric(scraper, "tripwire_scrape_samples_dropped_total", job="app", reason="duplicate") == 1


async def test_a_label_value_with_a_line_separator_character_does_not_shift_the_renames(
    exporter, make_scraper, redis, keys
):
    # The parser breaks lines at \n only; U+2028 and form feed are label value characters to it.
    exporter.body = '# TYPE bar gauge\nbar{a="x\u2028y\x0cz"} 1\n# TYPE foo counter\nfoo 3\n'.encode()
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason
    (items,) = await batches(redis, keys)
    assert named(items, "bar")[0]["labels"]["a"] == "x\u2028y\x0cz"
    assert value_of(items, "foo") == 3.0


def test_the_accept_header_lists_the_jobs_protocols_in_order_as_prometheus_writes_it():
    assert accept_header(["OpenMetricsText1.0.0", "PrometheusText0.0.4"]) == (
        "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.6,"
        "text/plain;version=0.0.4;q=0.5,*/*;q=0.4"
    )
    assert accept_header([]).startswith("text/plain;version=1.0.0;escaping=underscores;q=0.6,")


async def test_a_histogram_openmetrics_refuses_is_still_scraped_by_default(
    exporter, make_scraper, redis, keys
):
    # Read while observed, a histogram's _count can pass its +Inf bucket for one scrape: Prometheus stores it,
    # prometheus-client's OpenMetrics parser refuses the whole body. Asked for first, text is what we read.
    text = '# TYPE lat histogram\nlat_bucket{le="1"} 1\nlat_bucket{le="+Inf"} 2\nlat_count 3\nlat_sum 1\n'

    def answer(request_accept: str) -> None:
        openmetrics = request_accept.startswith("application/openmetrics-text")
        exporter.content_type = (
            "application/openmetrics-text; version=1.0.0" if openmetrics else "text/plain; version=0.0.4"
        )
        exporter.body = (text + "# EOF\n" if openmetrics else text).encode()

    answer(accept_header([]))
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason
    assert exporter.requests[0]["headers"]["Accept"] == accept_header([])
    assert exporter.requests[0]["headers"]["Accept-Encoding"] == "gzip"
    (items,) = await batches(redis, keys)
    assert value_of(items, "lat_count") == 3.0

    answer(accept_header(["OpenMetricsText1.0.0"]))
    scraper = make_scraper(static(exporter.address, scrape_protocols=["OpenMetricsText1.0.0"]))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.outcome == "parse_error"
    assert "Count does not match +Inf value" in (result.reason or "")


async def test_enable_compression_false_asks_for_an_uncompressed_body(exporter, make_scraper):
    scraper = make_scraper(static(exporter.address, enable_compression=False))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason
    assert exporter.requests[0]["headers"]["Accept-Encoding"] == "identity"


def test_label_limit_messages_name_the_first_label_in_prometheus_order_with_go_quoting():
    # Prometheus checks a sorted label set: upper-case names sort before __name__ (helper-53, against 2.42).
    job = ScrapeConfig(job_name="j", label_value_length_limit=5, label_name_length_limit=7)
    labels = {"Zone": 'eu"1a', "HostName": "x"}
    assert _label_limit_exceeded("some_metric_name", labels, job) == (
        "label_name_length_limit exceeded (metric: some_metric_name, label name: HostName, length: 8, "
        "limit: 7)"
    )
    job = ScrapeConfig(job_name="j", label_value_length_limit=5)
    assert _label_limit_exceeded("some_metric_name", {"Zone": 'eu"1a-b'}, job) == (
        'label_value_length_limit exceeded (metric: some_metric_name, label name: Zone, value: "eu\\"1a-b", '
        "length: 7, limit: 5)"
    )


@pytest.mark.parametrize(
    ("job_limits", "reason"),
    [
        # __name__, a, job, instance: four labels.
        ({"label_limit": 3}, "label_limit exceeded (metric: m, number of labels: 4, limit: 3)"),
        ({"label_limit": 4}, None),
        ({"label_name_length_limit": 7}, "label_name_length_limit exceeded (metric: m, label name: __name__"),
        ({"label_name_length_limit": 8}, None),
        # Bytes, not characters: "é" is two.
        (
            {"label_value_length_limit": 3},
            'label_value_length_limit exceeded (metric: m, label name: a, value: "éé", length: 4, limit: 3)',
        ),
        ({"label_value_length_limit": 4}, None),
    ],
)
async def test_label_limits_fail_the_scrape_as_prometheus(
    exporter, make_scraper, redis, keys, job_limits, reason
):
    exporter.body = 'm{a="éé"} 1\n'.encode()
    job = static(exporter.address, **job_limits)
    # Short values all round, so that "éé" is the one a value limit is about: instance is "x", job "j".
    job["job_name"] = "j"
    job["relabel_configs"] = [{"target_label": "instance", "replacement": "x"}]
    scraper = make_scraper(job)
    result = await scraper.scrape_once(scraper.targets[0])
    (items,) = await batches(redis, keys)
    if reason is None:
        assert result.up, result.reason
        assert value_of(items, "m") == 1.0
    else:
        assert result.outcome == "label_limit"
        assert (result.reason or "").startswith(reason)
        assert value_of(items, "up") == 0.0
        assert not named(items, "m")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"# just a comment \xff\na 1\n", None),  # Prometheus skips such comments unread
        (b"#\xff\na 1\n", None),
        (b"# HELP a caf\xe9\na 1\n", "line 1 is not UTF-8"),
        (b'# TYPE a gauge\na{x="\xff"} 1\n', "line 2 is not UTF-8"),
    ],
)
async def test_a_text_body_that_is_not_utf8_only_in_a_comment_is_read(
    exporter, make_scraper, redis, keys, body, reason
):
    exporter.body = body
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    (items,) = await batches(redis, keys)
    if reason is None:
        assert result.up, result.reason
        assert value_of(items, "a") == 1.0
    else:
        assert result.outcome == "parse_error"
        assert reason in (result.reason or "")


async def test_a_sample_with_a_reserved_label_name_is_dropped_not_the_whole_scrape(
    exporter, make_scraper, redis, keys
):
    # prometheus-client refuses `__x` with the whole body; Prometheus keeps the sample, which the stream
    # cannot carry. The rest of the scrape, counters renamed or not, is read.
    exporter.body = b'a{__x="1"} 1\n{__name__="b",y="__z"} 2\n# TYPE c counter\nc{"__q"="1"} 9\nc 3\n'
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason
    (items,) = await batches(redis, keys)
    assert value_of(items, "b") == 2.0
    assert value_of(items, "c") == 3.0
    assert not named(items, "a") and not named(items, "c_total")
    assert value_of(items, "scrape_samples_scraped") == 4
    assert metric(scraper, "tripwire_scrape_samples_dropped_total", job="app", reason="reserved_label") == 2


async def test_scrape_series_added_counts_series_new_since_the_last_successful_scrape(
    exporter, make_scraper, redis, keys
):
    scraper = make_scraper(static(exporter.address))
    target = scraper.targets[0]

    async def added(body: bytes, status: int = 200) -> float:
        exporter.body, exporter.status = body, status
        await scraper.scrape_once(target)
        return value_of((await batches(redis, keys))[-1], "scrape_series_added")

    assert await added(b'a 1\nb{x="1"} 1\n') == 2  # all of them, the first time
    assert await added(b'a 2\nb{x="1"} 2\n') == 0
    assert await added(b'a 3\nb{x="2"} 3\n') == 1  # b{x="2"} is new; b{x="1"} went
    assert await added(b"garbage {", status=500) == 0  # a failed scrape adds none...
    assert await added(b'a 4\nb{x="2"} 4\nc 1\n') == 1  # ...and forgets nothing


async def test_honor_timestamps_false_uses_the_scrape_time(exporter, make_scraper, redis, keys):
    exporter.body = f"temperature 21.5 {int((NOW - 30) * 1000)}\n".encode()
    scraper = make_scraper(static(exporter.address, honor_timestamps=False))
    await scraper.scrape_once(scraper.targets[0])
    (items,) = await batches(redis, keys)
    assert named(items, "temperature")[0]["timestamp"] == NOW


async def test_openmetrics_content_type_is_parsed_as_openmetrics(exporter, make_scraper, redis, keys):
    exporter.content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    exporter.body = f"""# TYPE build info
build_info{{version="1.2.3"}} 1
# TYPE temperature_celsius gauge
# UNIT temperature_celsius celsius
temperature_celsius 21.5 {NOW - 30}
# TYPE jobs counter
jobs_total 3
# EOF
""".encode()
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason
    assert result.protocol == "openmetrics"
    (items,) = await batches(redis, keys)
    assert named(items, "build_info")[0]["labels"]["version"] == "1.2.3"
    assert named(items, "temperature_celsius")[0]["timestamp"] == NOW - 30  # seconds in OpenMetrics
    assert value_of(items, "jobs_total") == 3.0


async def test_openmetrics_without_eof_is_a_failed_scrape(exporter, make_scraper, redis, keys):
    exporter.content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    exporter.body = b"# TYPE jobs counter\njobs_total 3\n"
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.outcome == "parse_error"
    assert "EOF" in (result.reason or "")
    (items,) = await batches(redis, keys)
    assert [item["name"] for item in items] == [
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    ]
    assert value_of(items, "up") == 0.0


# Failing targets -----------------------------------------------------------------------------------------
async def test_a_hanging_target_is_down_within_its_timeout(exporter, make_scraper, redis, keys):
    exporter.hold()  # never answers until the test ends
    scraper = make_scraper(static(exporter.address, scrape_interval="1s", scrape_timeout="300ms"))
    started = time.monotonic()
    result = await scraper.scrape_once(scraper.targets[0])
    elapsed = time.monotonic() - started
    assert result.outcome == "timeout"
    assert "300ms" in (result.reason or "")
    assert elapsed < 3
    (items,) = await batches(redis, keys)
    assert value_of(items, "up") == 0.0
    assert 0.25 < value_of(items, "scrape_duration_seconds") < 3
    assert exporter.requests[0]["headers"]["X-Prometheus-Scrape-Timeout-Seconds"] == "0.3"


async def test_a_body_slow_to_parse_is_parsed_once_at_a_time_and_spares_other_targets(
    client_app, make_scraper, monkeypatch
):
    # prometheus-client's parsers take seconds on some bodies (a 1 MB label value of escapes: 6 s). A parse
    # thread cannot be stopped at scrape_timeout: each later scrape of the target started another, and all
    # shared the default thread pool, so other targets were parsed late and reported down.
    address, _ = client_app
    stuck_address = "127.0.0.1:1"  # never fetched for real: _fetch is replaced below
    scraper = make_scraper(
        static(stuck_address, scrape_interval="1s", scrape_timeout="200ms"),
        {"job_name": "other", **static(address, scrape_interval="5s", scrape_timeout="5s")},
    )
    stuck, healthy = scraper.targets
    release = threading.Event()
    parses: list[str] = []
    parse = scrape_module.parse_scrape

    def slow_for_stuck(body: bytes, protocol: str, target: Target, *rest: Any) -> Any:
        parses.append(target.url)
        if target is stuck:
            release.wait(30)
        return parse(body, protocol, target, *rest)

    fetch = scraper._fetch

    async def fetch_or_fake(target: Target) -> tuple[bytes, str]:
        return (b"up_like 1\n", "text/plain") if target is stuck else await fetch(target)

    monkeypatch.setattr(scrape_module, "parse_scrape", slow_for_stuck)
    monkeypatch.setattr(scraper, "_fetch", fetch_or_fake)
    try:
        first = await scraper.scrape_once(stuck)
        assert first.outcome == "timeout"
        for _ in range(scrape_module.PARSE_THREADS + 2):  # more than the pool has threads
            again = await scraper.scrape_once(stuck)
            assert again.outcome == "timeout"
            assert "still being parsed" in (again.reason or "")
            assert (await scraper.scrape_once(healthy)).up
        assert parses.count(stuck.url) == 1
    finally:
        release.set()
    await eventually(lambda: _done(scraper, stuck), what="the stuck parse to end")
    assert (await scraper.scrape_once(stuck)).up
    assert parses.count(stuck.url) == 2


async def test_more_targets_stuck_parsing_than_threads_leave_the_others_scraped(
    client_app, make_scraper, monkeypatch
):
    # Each target holds at most one parse thread, and the pool has one per target: with more targets stuck
    # than PARSE_THREADS, their scrapes still end (up 0) and a healthy target is still parsed.
    address, _ = client_app
    stuck_count = scrape_module.PARSE_THREADS + 1
    stuck_jobs = [
        {
            "job_name": f"stuck{i}",
            **static(f"127.0.0.1:{i + 1}", scrape_interval="1s", scrape_timeout="200ms"),
        }
        for i in range(stuck_count)
    ]
    scraper = make_scraper(*stuck_jobs, {"job_name": "other", **static(address)})
    *stuck, healthy = scraper.targets
    release = threading.Event()
    parse = scrape_module.parse_scrape

    def slow_for_stuck(body: bytes, protocol: str, target: Target, *rest: Any) -> Any:
        if target is not healthy:
            release.wait(30)
        return parse(body, protocol, target, *rest)

    fetch = scraper._fetch

    async def fetch_or_fake(target: Target) -> tuple[bytes, str]:
        return (b"up_like 1\n", "text/plain") if target is not healthy else await fetch(target)

    monkeypatch.setattr(scrape_module, "parse_scrape", slow_for_stuck)
    monkeypatch.setattr(scraper, "_fetch", fetch_or_fake)
    try:
        for target in stuck:
            result = await asyncio.wait_for(scraper.scrape_once(target), timeout=10)
            assert result.outcome == "timeout"
        assert (await asyncio.wait_for(scraper.scrape_once(healthy), timeout=10)).up
    finally:
        release.set()
    await eventually(lambda: _all_done(scraper), what="the stuck parses to end")


async def _all_done(scraper: Scraper) -> bool:
    return not scraper._parsing


async def _done(scraper: Scraper, target: Target) -> bool:
    return target.identity not in scraper._parsing  # a parse is forgotten as it ends


async def test_garbage_is_down_with_the_reason_logged_once_per_interval(
    exporter, make_scraper, redis, keys, clock, caplog
):
    exporter.body = b"<html><body>Welcome to nginx!</body></html>\n"
    scraper = make_scraper(static(exporter.address))
    caplog.set_level(logging.WARNING, logger=SCRAPE_LOGGER)

    def failures() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == SCRAPE_LOGGER and "failed" in r.getMessage()]

    result = await scraper.scrape_once(scraper.targets[0])
    assert result.outcome == "parse_error"
    assert "invalid metric name" in (result.reason or "")
    (record,) = failures()
    assert "parse_error" in record.getMessage()
    assert "invalid metric name" in record.getMessage()
    assert record.reason == result.reason  # type: ignore[attr-defined]
    # The same failure again soon after is not logged again...
    await scraper.scrape_once(scraper.targets[0])
    assert len(failures()) == 1
    # ...but after LOG_EVERY it is, saying how many were left unlogged.
    clock.set(NOW + LOG_EVERY)
    await scraper.scrape_once(scraper.targets[0])
    assert len(failures()) == 2
    assert failures()[1].suppressed == 1  # type: ignore[attr-defined]
    assert [value_of(items, "up") for items in await batches(redis, keys)] == [0.0, 0.0, 0.0]
    assert metric(scraper, "tripwire_scrapes_total", job="app", outcome="parse_error") == 3


async def test_not_utf8_is_a_parse_error(exporter, make_scraper):
    exporter.body = b"metric 1\n\xff\xfe\n"
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.outcome == "parse_error"
    assert "UTF-8" in (result.reason or "")


async def test_an_error_status_is_down(exporter, make_scraper, redis, keys):
    exporter.status = 503
    exporter.body = b"up 1\n"
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.outcome == "http_status"
    assert result.reason == "server returned HTTP status 503 Service Unavailable"
    (items,) = await batches(redis, keys)
    assert value_of(items, "up") == 0.0


async def test_a_refused_connection_is_down(make_scraper, redis, keys):
    from services.local_redis import free_port

    scraper = make_scraper(static(f"127.0.0.1:{free_port()}"))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.outcome == "connection_error"
    (items,) = await batches(redis, keys)
    assert value_of(items, "up") == 0.0
    assert value_of(items, "scrape_samples_scraped") == 0.0


@pytest.mark.parametrize(
    ("line", "accepted"),
    [
        ("jobs_total 3 1 2", False),  # prometheus-client took the last field as a timestamp of 2 ms
        ("jobs_total 3 1.5", False),  # Prometheus reads a timestamp as integer milliseconds
        ("jobs_total 3 1e30", False),
        ('jobs_total{path="/a}b"} 3 7', True),  # a `}` inside a label value is not the end of the labels
        ('{__name__="jobs_total"} 3', True),
        ("jobs_total\t3  \t", True),
    ],
)
async def test_text_sample_lines_prometheus_refuses_fail_the_scrape(
    exporter, make_scraper, redis, keys, line: str, accepted: bool
):
    # helper-43's review: these lines were parsed quietly (the sample then dropped as invalid, the target up);
    # Prometheus fails the whole scrape on them.
    exporter.body = f"# TYPE jobs_total counter\n{line}\n".encode()
    scraper = make_scraper(static(exporter.address, honor_timestamps=False))
    result = await scraper.scrape_once(scraper.targets[0])
    if accepted:
        assert result.up, result.reason
        assert value_of((await batches(redis, keys))[-1], "jobs_total") == 3.0
    else:
        assert result.outcome == "parse_error"
        assert "line 2: expected a value and an optional integer timestamp" in (result.reason or "")


async def test_unknown_content_type_fails_unless_a_fallback_protocol_is_set(
    exporter, make_scraper, redis, keys
):
    exporter.content_type = "application/json"
    exporter.body = b"jobs_total 3\n"
    strict = make_scraper(static(exporter.address))
    result = await strict.scrape_once(strict.targets[0])
    assert result.outcome == "content_type"
    assert "fallback_scrape_protocol" in (result.reason or "")

    lenient = make_scraper(static(exporter.address, fallback_scrape_protocol="PrometheusText0.0.4"))
    result = await lenient.scrape_once(lenient.targets[0])
    assert result.up, result.reason
    assert value_of((await batches(redis, keys))[-1], "jobs_total") == 3.0


@pytest.mark.parametrize("content_type", ["application/openmetrics-text; version=1.0.0", "application/json"])
async def test_an_empty_body_is_a_scrape_of_no_samples(exporter, make_scraper, redis, keys, content_type):
    # Prometheus returns early on an empty body, before the Content-Type or the parser can fail it (an
    # OpenMetrics parser would want `# EOF`): the target is up with nothing in it.
    exporter.content_type = content_type
    exporter.body = b""
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason
    batch = (await batches(redis, keys))[-1]
    assert (value_of(batch, "up"), value_of(batch, "scrape_samples_scraped")) == (1.0, 0.0)


async def test_a_missing_content_type_fails_like_prometheus_3(make_scraper):
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\njobs_total 3")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        scraper = make_scraper(static(f"127.0.0.1:{port}"))
        result = await scraper.scrape_once(scraper.targets[0])
    finally:
        server.close()
        await server.wait_closed()
    assert result.outcome == "content_type"
    assert "no Content-Type" in (result.reason or "")


def test_protocol_for_content_types():
    assert protocol_for("application/openmetrics-text; version=1.0.0; charset=utf-8", None) == "openmetrics"
    assert protocol_for("text/plain; version=0.0.4", None) == "text"
    assert protocol_for("", "OpenMetricsText1.0.0") == "openmetrics"
    assert protocol_for("text/html", "PrometheusText0.0.4") == "text"
    with pytest.raises(ScrapeFailed, match="no Content-Type"):
        protocol_for("", None)


async def test_body_size_limit(exporter, make_scraper):
    exporter.body = b"# a long comment\n" * 200 + b"jobs_total 3\n"
    scraper = make_scraper(static(exporter.address, body_size_limit="1KB"))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.outcome == "body_size_limit"


async def test_targets_whose_parses_all_hang_still_report_up_0(make_scraper, monkeypatch, redis, keys):
    # Every parse thread held by a parse stuck past its timeout: validation queued behind them never ran,
    # so no scrape ever reported `up 0` (found by review).

    jobs = [
        {"job_name": f"j{i}", **static(f"127.0.0.1:{i + 1}", scrape_timeout="200ms")}
        for i in range(scrape_module.PARSE_THREADS)
    ]
    scraper = make_scraper(*jobs)
    release = threading.Event()
    parse = scrape_module.parse_scrape

    def stuck(*args: Any) -> Any:
        release.wait(30)
        return parse(*args)

    async def fetch(target: Any) -> tuple[bytes, str]:
        return b"m 1\n", "text/plain"

    monkeypatch.setattr(scrape_module, "parse_scrape", stuck)
    monkeypatch.setattr(scraper, "_fetch", fetch)
    try:
        for target in [*scraper.targets, scraper.targets[0]]:  # the last: its earlier parse still runs
            result = await asyncio.wait_for(scraper.scrape_once(target), timeout=10)
            assert result.outcome == "timeout"
            assert result.entry_id is not None
        assert [value_of(items, "up") for items in await batches(redis, keys)] == [0.0] * 5
    finally:
        release.set()


@pytest.mark.parametrize(
    ("job", "reason"),
    [
        ({"labels": {"runbook": "x" * 5000}}, "longer than 4096"),
        ({"labels": {"x_1dc": "eu"}, "relabel_configs": [{"action": "labelmap", "regex": "x_(.*)"}]}, "1dc"),
    ],
)
async def test_a_target_whose_labels_the_stream_refuses_is_skipped_loudly(make_scraper, caplog, job, reason):
    # Its every batch, `up` included, was refused: it never reported anything, yet counted as up.
    labels = job.pop("labels")
    with caplog.at_level(logging.WARNING, logger="services.collector.scrape"):
        scraper = make_scraper({"static_configs": [{"targets": ["127.0.0.1:1"], "labels": labels}], **job})
    assert scraper.targets == []
    [message] = [r.getMessage() for r in caplog.records if "scrape target skipped" in r.getMessage()]
    assert "its labels are refused" in message
    assert reason in message


# Labels and relabeling -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("honor_labels", "expected"),
    [
        (
            False,
            {
                "job": "app",
                "instance": "TARGET",
                "exported_job": "pushed",
                "exported_instance": "worker-7",
                "path": "/",
            },
        ),
        (True, {"job": "pushed", "instance": "worker-7", "path": "/"}),
    ],
)
async def test_honor_labels(
    exporter, make_scraper, redis, keys, honor_labels: bool, expected: dict[str, str]
):
    exporter.body = b'batch_runs_total{job="pushed",instance="worker-7",path="/"} 4\n'
    scraper = make_scraper(static(exporter.address, honor_labels=honor_labels))
    await scraper.scrape_once(scraper.targets[0])
    (items,) = await batches(redis, keys)
    expected = {k: exporter.address if v == "TARGET" else v for k, v in expected.items()}
    assert named(items, "batch_runs_total")[0]["labels"] == expected
    # The report series always carry the target's own labels.
    assert named(items, "up")[0]["labels"] == {"job": "app", "instance": exporter.address}


async def test_honor_labels_with_the_pushgateways_empty_instance_attaches_none(
    exporter, make_scraper, redis, keys
):
    exporter.body = b'batch_last_success{instance="",job="nightly"} 1.7e9\n'
    scraper = make_scraper(static(exporter.address, honor_labels=True))
    await scraper.scrape_once(scraper.targets[0])
    (items,) = await batches(redis, keys)
    assert named(items, "batch_last_success")[0]["labels"] == {"job": "nightly"}


async def test_target_relabeling_selects_targets_and_sets_the_url(exporter, make_scraper, redis, keys):
    exporter.body = b"jobs_total 1\n"
    scraper = make_scraper(
        {
            "static_configs": [
                {"targets": [exporter.address], "labels": {"env": "prod", "__param_format": "text"}},
                {"targets": ["127.0.0.1:1"], "labels": {"env": "dev"}},
            ],
            "params": {"collect[]": ["cpu"]},
            "relabel_configs": [
                {"source_labels": ["env"], "regex": "prod", "action": "keep"},
                {"target_label": "__metrics_path__", "replacement": "/custom/metrics"},
                {"source_labels": ["__address__"], "regex": "(.*):.*", "target_label": "host"},
                {"target_label": "instance", "replacement": "checkout-1"},
            ],
        }
    )
    assert [target.labels for target in scraper.targets] == [
        {"job": "app", "env": "prod", "host": "127.0.0.1", "instance": "checkout-1"}
    ]
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason
    assert exporter.requests[0]["path"] == "/custom/metrics?collect%5B%5D=cpu&format=text"
    (items,) = await batches(redis, keys)
    assert named(items, "jobs_total")[0]["labels"] == {
        "job": "app",
        "env": "prod",
        "host": "127.0.0.1",
        "instance": "checkout-1",
    }


async def test_metric_relabeling_drops_and_rewrites_samples(exporter, make_scraper, redis, keys):
    exporter.body = b"""go_gc_duration_seconds{quantile="0.5"} 0.001
go_goroutines 12
http_requests_total{code="200",pod="web-1",le_noise="x"} 5
http_requests_total{code="500",pod="web-1",le_noise="x"} 1
"""
    scraper = make_scraper(
        static(
            exporter.address,
            metric_relabel_configs=[
                {"source_labels": ["__name__"], "regex": "go_.*", "action": "drop"},
                {
                    "source_labels": ["code"],
                    "regex": "(\\d)\\d\\d",
                    "target_label": "class",
                    "replacement": "${1}xx",
                },
                {"regex": "le_noise", "action": "labeldrop"},
                {
                    "source_labels": ["__name__"],
                    "regex": "http_(.*)",
                    "target_label": "__name__",
                    "replacement": "web_$1",
                },
            ],
        )
    )
    result = await scraper.scrape_once(scraper.targets[0])
    assert (result.samples_scraped, result.samples_post_relabel) == (4, 2)
    (items,) = await batches(redis, keys)
    assert not [item for item in items if item["name"].startswith("go_")]
    assert [item["labels"] for item in named(items, "web_requests_total")] == [
        {"code": "200", "pod": "web-1", "class": "2xx", "job": "app", "instance": exporter.address},
        {"code": "500", "pod": "web-1", "class": "5xx", "job": "app", "instance": exporter.address},
    ]
    assert value_of(items, "scrape_samples_scraped") == 4
    assert value_of(items, "scrape_samples_post_metric_relabeling") == 2
    assert value_of(items, "up") == 1.0  # metric relabeling does not touch the report series


async def test_a_sample_left_without_a_name_by_metric_relabeling_fails_the_scrape(
    exporter, make_scraper, redis, keys
):
    # Prometheus fails the scrape (errNameLabelMandatory); dropping only that sample hid the config error.
    exporter.body = b"a 1\nb 2\n"
    scraper = make_scraper(
        static(
            exporter.address,
            metric_relabel_configs=[
                {"source_labels": ["__name__"], "regex": "b", "target_label": "__name__", "replacement": ""}
            ],
        )
    )
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.outcome == "relabel_error"
    assert "left the sample 'b' with no __name__" in (result.reason or "")
    (items,) = await batches(redis, keys)
    assert "a" not in {item["name"] for item in items}  # nothing of a failed scrape is kept
    assert value_of(items, "up") == 0.0


async def test_a_sample_left_with_no_labels_at_all_is_dropped_without_failing(
    exporter, make_scraper, redis, keys
):
    # An empty label set is Prometheus' signal to drop the sample (checked against Prometheus 2.42: up=1).
    exporter.body = b"a 1\nb 2\n"
    scraper = make_scraper(
        static(
            exporter.address,
            metric_relabel_configs=[
                {"source_labels": ["__name__"], "regex": "b", "action": "keep"},
                {"regex": ".+", "action": "labeldrop"},
            ],
        )
    )
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.outcome == "success", result.reason
    (items,) = await batches(redis, keys)
    assert value_of(items, "up") == 1.0
    assert value_of(items, "scrape_samples_post_metric_relabeling") == 0.0


# Limits and invalid samples ------------------------------------------------------------------------------
async def test_exceeding_sample_limit_fails_the_scrape(exporter, make_scraper, redis, keys):
    exporter.body = b"a 1\nb 2\nc 3\n"
    scraper = make_scraper(static(exporter.address, sample_limit=2))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.outcome == "sample_limit"
    assert "3 samples after metric relabeling, the limit is 2" in (result.reason or "")
    (items,) = await batches(redis, keys)
    assert {item["name"] for item in items} == {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    }
    assert value_of(items, "up") == 0.0
    assert value_of(items, "scrape_samples_scraped") == 3.0


async def test_sample_limit_counts_after_metric_relabeling(exporter, make_scraper):
    exporter.body = b"a 1\nb 2\nc 3\n"
    scraper = make_scraper(
        static(
            exporter.address,
            sample_limit=2,
            metric_relabel_configs=[{"source_labels": ["__name__"], "regex": "c", "action": "drop"}],
        )
    )
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason


async def test_samples_the_stream_cannot_carry_are_dropped_and_counted(exporter, make_scraper, redis, keys):
    limits = ScrapeLimits.from_config(Config.model_validate({"collector": {"max_label_value_length": 16}}))
    exporter.body = f"""good 1
not_a_number NaN
too_old 1 {int((NOW - 7200) * 1000)}
long_label{{v="{"x" * 40}"}} 1
twice 1
twice 2
""".encode()
    scraper = make_scraper(static(exporter.address), limits=limits)
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason
    assert result.dropped == {"non_finite": 1, "duplicate": 1, "invalid": 2}
    (items,) = await batches(redis, keys)
    assert {item["name"] for item in items} == {
        "good",
        "twice",
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    }
    assert value_of(items, "twice") == 1.0  # the first sample of a series and time wins
    assert value_of(items, "scrape_samples_scraped") == 6
    assert metric(scraper, "tripwire_scrape_samples_dropped_total", job="app", reason="invalid") == 2
    assert metric(scraper, "tripwire_scrape_samples_dropped_total", job="app", reason="non_finite") == 1


async def test_many_samples_out_of_the_time_window_are_dropped_in_one_more_pass(
    exporter, make_scraper, redis, keys, monkeypatch
):
    # An exporter with a skewed clock and honor_timestamps: every sample is out of the window. Finding the
    # bad ones 1,000 per pass took 10 passes for 10,000 (quadratic: 7.7 s for 50,000, in a thread that
    # every target's publish waits on); now one pass finds them all and one more checks the rest.
    passes = []
    real = scrape_module.validate_items

    def counted(*args: Any, **kwargs: Any) -> Any:
        passes.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(scrape_module, "validate_items", counted)
    stale = int((NOW - 7200) * 1000)
    exporter.body = "".join(f'old{{i="{i}"}} 1 {stale}\n' for i in range(10_000)).encode()
    scraper = make_scraper(static(exporter.address, sample_limit=20_000))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason
    assert result.dropped == {"invalid": 10_000}
    assert passes[-2:] == [10_005, 5]  # everything, then the five report series
    assert len(passes) == 3  # and the check of the target's own labels when it was set up
    (items,) = await batches(redis, keys)
    assert value_of(items, "scrape_samples_scraped") == 10_000


async def test_a_scrape_redis_refuses_for_good_is_a_publish_failure_not_a_crash(
    exporter, make_scraper, redis, keys
):
    exporter.body = b"jobs_total 1\n"
    await redis.set(keys.metrics, "not a stream")
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up and result.entry_id is None
    assert "retrying will not" in (result.publish_error or "")
    assert metric(scraper, "tripwire_scrape_publish_failures_total", job="app") == 1


# Credentials ---------------------------------------------------------------------------------------------
async def test_bearer_token_is_read_from_its_file_at_every_scrape(exporter, make_scraper, tmp_path: Path):
    exporter.body = b"jobs_total 1\n"
    token = tmp_path / "token"
    token.write_text("first\n")
    scraper = make_scraper(static(exporter.address, authorization={"credentials_file": str(token)}))
    await scraper.scrape_once(scraper.targets[0])
    token.write_text("second\n")
    await scraper.scrape_once(scraper.targets[0])
    assert [r["headers"]["Authorization"] for r in exporter.requests] == ["Bearer first", "Bearer second"]

    token.unlink()
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.outcome == "credentials"
    assert str(token) in (result.reason or "")
    assert len(exporter.requests) == 2  # nothing was sent without the credentials


async def test_a_tls_config_that_cannot_load_fails_the_scrape_with_the_reason(make_scraper, tmp_path: Path):
    missing = tmp_path / "ca.pem"
    scraper = make_scraper(static("127.0.0.1:1", scheme="https", tls_config={"ca_file": str(missing)}))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.outcome == "tls"
    assert "tls_config cannot be loaded" in (result.reason or "")
    # Files are read again when they change: a CA file that appears (or is rotated) is used from the next
    # scrape on, without a restart. Nothing listens on port 1: past TLS setup, the connection fails.
    shutil.copyfile(certifi.where(), missing)
    assert (await scraper.scrape_once(scraper.targets[0])).outcome == "connection_error"
    missing.write_text("not a certificate\n")
    assert (await scraper.scrape_once(scraper.targets[0])).outcome == "tls"


async def test_insecure_skip_verify_is_accepted(exporter, make_scraper):
    exporter.body = b"jobs_total 1\n"
    scraper = make_scraper(static(exporter.address, tls_config={"insecure_skip_verify": True}))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.up, result.reason  # plain http here: the setting only matters for https


# Timing ----------------------------------------------------------------------------------------------------
async def test_a_slow_scrape_never_overlaps_the_next_and_skipped_ticks_are_counted(
    exporter, make_scraper, clock, redis, keys
):
    exporter.body = b"jobs_total 1\n"
    exporter.hold()
    scraper = make_scraper(static(exporter.address, scrape_interval="10s", scrape_timeout="10s"))
    async with running(scraper):
        await eventually(lambda: _ready(clock.sleepers == 1), what="the target's loop to wait for its tick")
        await clock.advance(10)  # past the first tick, whatever its phase
        await eventually(lambda: _ready(exporter.in_flight == 1), what="the first scrape to reach the target")
        await clock.advance(35)  # three more ticks pass while the scrape hangs
        assert len(exporter.requests) == 1
        exporter.release()
        await eventually(
            lambda: _ready(metric(scraper, "tripwire_scrape_skipped_ticks_total", job="app") >= 3),
            what="skipped ticks to be counted",
        )
        await eventually(lambda: _ready(clock.sleepers == 1), what="the loop to wait for its next tick")
        await clock.advance(10)
        await eventually(lambda: _count(redis, keys, 2), what="the next scrape on the stream")
    assert len(exporter.requests) == 2
    assert exporter.max_in_flight == 1


async def test_targets_start_at_random_phases_spread_over_the_interval(
    exporter, make_scraper, clock, redis, keys
):
    exporter.body = b"jobs_total 1\n"
    shards = [{"targets": [exporter.address], "labels": {"shard": str(i)}} for i in range(20)]
    scraper = make_scraper({"static_configs": shards, "scrape_interval": "1m"}, rng=random.Random(7))
    assert len(scraper.targets) == 20
    async with running(scraper):
        await eventually(lambda: _ready(clock.sleepers == 20), what="every target's loop to wait")
        await clock.advance(60)
        await eventually(lambda: _count(redis, keys, 20), what="one scrape of every target")
    starts = sorted(named(items, "up")[0]["timestamp"] for items in await batches(redis, keys))
    assert len(set(starts)) == 20
    assert starts[0] >= NOW and starts[-1] < NOW + 60
    assert starts[-1] - starts[0] > 30  # spread over the interval, not bunched at its start


async def _ready(condition: bool) -> bool:
    return condition


async def _count(redis: Redis, keys: Keys, n: int) -> bool:
    return await redis.xlen(keys.metrics) >= n


# Redis down ----------------------------------------------------------------------------------------------
async def test_redis_down_is_counted_and_scraping_resumes_when_it_is_back(
    private_redis: LocalRedisServer, exporter, make_scraper, clock, keys
):
    exporter.body = b"jobs_total 1\n"
    client = Redis.from_url(private_redis.url, socket_timeout=2, socket_connect_timeout=2)
    scraper = make_scraper(
        static(exporter.address, scrape_interval="10s"), publisher=Publisher(client, 100_000, 1.0)
    )
    try:
        private_redis.stop()
        async with running(scraper) as task:
            await eventually(lambda: _ready(clock.sleepers == 1), what="the loop to wait")
            await clock.advance(10)
            await eventually(
                lambda: _ready(metric(scraper, "tripwire_scrape_publish_failures_total", job="app") == 1),
                what="the failed publish to be counted",
            )
            await eventually(lambda: _ready(clock.sleepers == 1), what="the loop to carry on")
            assert not task.done()
            private_redis.start()

            async def stored() -> bool:
                if clock.sleepers == 1:
                    await clock.advance(10)
                return await client.xlen(keys.metrics) >= 1

            await eventually(stored, timeout=20, what="a scrape stored once redis is back")
            assert not task.done()
        first_stored = (await client.xrange(keys.metrics))[0]
        items = decode_entry(first_stored[1]).items
        assert value_of(items, "up") == 1.0
        assert value_of(items, "jobs_total") == 1.0
    finally:
        await client.aclose()


# Wiring ----------------------------------------------------------------------------------------------------
async def test_start_scraping_runs_in_the_service_and_closes_on_stop(
    make_config, exporter, redis, keys, tmp_path
):
    exporter.body = b"jobs_total 1\n"
    (tmp_path / "token").write_text("s3cret\n")
    config = make_config(
        base_dir=tmp_path,
        scrape_configs=[
            {
                "job_name": "app",
                "scrape_interval": "200ms",
                "bearer_token_file": "token",  # relative to the config file's directory
                "static_configs": [{"targets": [exporter.address]}],
            }
        ],
    )
    service = Service("collector", config, SystemClock())
    publisher = Publisher(service.redis, config.streams.maxlen, config.collector.retry_after)
    scraper = start_scraping(service, publisher)
    assert scraper is not None
    await service.start()
    try:
        await eventually(lambda: _count(redis, keys, 2), what="scrapes on the stream")
        assert exporter.requests[0]["headers"]["Authorization"] == "Bearer s3cret"
        assert scraper.status() == {"scrape_targets": 1, "scrape_targets_up": 1}
        assert await service.problems() == []
    finally:
        await service.stop()
    assert scraper._session is None or scraper._session.closed
    (items, *_) = await batches(redis, keys)
    assert value_of(items, "up") == 1.0


def test_start_scraping_without_scrape_configs_does_nothing(make_config):
    service = Service("collector", make_config(), SystemClock())
    assert start_scraping(service, Publisher(service.redis, 1000, 1.0)) is None


# Config validation ---------------------------------------------------------------------------------------
def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "tripwire.yml"
    path.write_text(text)
    return load_config(path, environ={})


def _errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        _load(tmp_path, text)
    return [str(error) for error in caught.value.errors]


def test_job_defaults_come_from_global(tmp_path):
    config = _load(
        tmp_path,
        """
global:
  scrape_interval: 5s
scrape_configs:
  - job_name: inherits
  - job_name: own
    scrape_interval: 1m
""",
    )
    inherits, own = config.scrape_configs
    # The global default timeout, 10s, is cut to a shorter global interval, and then inherited as such
    # (Prometheus' GlobalConfig.UnmarshalYAML), also by a job with a longer interval of its own.
    assert (inherits.scrape_interval, inherits.scrape_timeout) == (5.0, 5.0)
    assert (own.scrape_interval, own.scrape_timeout) == (60.0, 5.0)
    assert "scrape_timeout" not in config.global_.model_fields_set
    assert (own.metrics_path, own.scheme, own.honor_labels) == ("/metrics", "http", False)
    assert _load(tmp_path, "scrape_configs: [{job_name: x}]").scrape_configs[0].scrape_interval == 15.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "scrape_configs:\n  - job_name: a\n  - job_name: b\n  - job_name: a\n",
            ":4:5: scrape_configs.2.job_name: found multiple scrape configs with job name 'a'",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n    scrape_timeout: 6s\n",
            ":4:5: scrape_configs.0.scrape_timeout: scrape_timeout 6s is greater than scrape_interval 5s "
            "for job 'a'",
        ),
        (
            "global:\n  scrape_interval: 5s\n  scrape_timeout: 30s\n",
            ":3:3: global.scrape_timeout: global scrape_timeout 30s is greater than global "
            "scrape_interval 5s",
        ),
        (
            "global: {scrape_interval: 5s}\nscrape_configs:\n  - job_name: a\n    scrape_timeout: 6s\n",
            ":4:5: scrape_configs.0.scrape_timeout: scrape_timeout 6s is greater than scrape_interval 5s",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets:\n"
            "          - ok:9100\n          - http://host:9100/metrics\n",
            ":6:13: scrape_configs.0.static_configs.0.targets.1: target 'http://host:9100/metrics' must be "
            "host:port",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    bearer_token: abc\n",
            ":3:5: scrape_configs.0.bearer_token: bearer_token must not be written in a config file: "
            "secrets are read only from files",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    authorization:\n      credentials: abc\n",
            ":4:7: scrape_configs.0.authorization.credentials: authorization.credentials must not be written",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - source_labels: [x]\n"
            "        regex: '(unclosed'\n",
            ":5:9: scrape_configs.0.relabel_configs.0.regex: invalid regex '(unclosed'",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    metric_relabel_configs:\n      - source_labels: [x]\n",
            ":4:9: scrape_configs.0.metric_relabel_configs.0: relabel configuration for replace action "
            "requires 'target_label' value",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    scheme: ftp\n",
            ":3:5: scrape_configs.0.scheme: Input should be 'http' or 'https'",
        ),
        (
            "scrape_configs:\n  - static_configs: []\n",
            ":2:5: scrape_configs.0.job_name: required field is missing",
        ),
    ],
)
def test_invalid_scrape_configs_say_where_and_why(tmp_path, text: str, expected: str):
    errors = _errors(tmp_path, text)
    assert any(expected in error for error in errors), errors


def test_scrape_configs_from_the_environment(monkeypatch):
    config = load_config(
        None,
        environ={"TRIPWIRE_SCRAPE_CONFIGS": '[{"job_name": "x", "static_configs": [{"targets": ["h:1"]}]}]'},
    )
    assert config.scrape_configs[0].static_configs[0].targets == ["h:1"]


async def test_an_exporters_own_up_is_dropped_not_published_beside_ours(exporter, make_scraper, redis, keys):
    exporter.body = b"# TYPE up gauge\nup 5\njobs_total 1\n"
    scraper = make_scraper(static(exporter.address))
    result = await scraper.scrape_once(scraper.targets[0])
    (items,) = await batches(redis, keys)
    assert [i["value"] for i in named(items, "up")] == [1.0]
    assert result.dropped.get("reserved_name") == 1


async def test_any_other_failure_still_publishes_up_0_with_the_reason(exporter, make_scraper, redis, keys):
    """An address relabelled into something the HTTP client cannot use: no crash, no missing `up`."""
    exporter.body = b"jobs_total 1\n"
    relabel = [{"target_label": "__address__", "replacement": "localhost:99999"}]
    scraper = make_scraper(static(exporter.address, relabel_configs=relabel))
    result = await scraper.scrape_once(scraper.targets[0])
    assert not result.up and result.reason
    (items,) = await batches(redis, keys)
    assert value_of(items, "up") == 0.0


async def test_a_secret_file_of_several_lines_is_refused_with_a_reason(
    exporter, make_scraper, tmp_path: Path
):
    token = tmp_path / "token"
    token.write_text("line one\nline two\n")
    scraper = make_scraper(static(exporter.address, authorization={"credentials_file": str(token)}))
    result = await scraper.scrape_once(scraper.targets[0])
    assert result.outcome == "credentials" and "more than one line" in (result.reason or "")
    assert exporter.requests == []


def test_le_and_quantile_values_are_normalized_as_prometheus_3_does(make_scraper):
    # Prometheus 3 rewrites them when it parses a scrape (normalizeFloatsInLabelValues): Go exporters write
    # le="1", Python ones le="1.0"; both are stored as "1.0", and rules written for Prometheus say so.
    scraper = make_scraper(static("127.0.0.1:1"))
    body = b"""# TYPE latency histogram
latency_bucket{le="0.005"} 1
latency_bucket{le="1"} 2
latency_bucket{le="10"} 3
latency_bucket{le="1000000"} 4
latency_bucket{le="+Inf"} 5
latency_sum 9
latency_count 5
# TYPE rpc summary
rpc{quantile="0"} 1
rpc{quantile="0.99"} 2
rpc{quantile="1"} 3
rpc_sum 6
rpc_count 3
# TYPE temperature gauge
temperature{le="1"} 20
"""
    parsed = scrape_module.parse_scrape(body, "prometheus", scraper.targets[0], NOW, 1000)
    values = [
        (item["name"], item["labels"].get("le") or item["labels"].get("quantile")) for item in parsed.items
    ]
    assert values == [
        ("latency_bucket", "0.005"),
        ("latency_bucket", "1.0"),
        ("latency_bucket", "10.0"),
        ("latency_bucket", "1e+06"),
        ("latency_bucket", "+Inf"),
        ("latency_sum", None),
        ("latency_count", None),
        ("rpc", "0.0"),
        ("rpc", "0.99"),
        ("rpc", "1.0"),
        ("rpc_sum", None),
        ("rpc_count", None),
        ("temperature", "1"),  # not a histogram: as exposed
    ]


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("1", "1.0"),
        ("0", "0.0"),
        ("-0", "0.0"),
        ("-1", "-1.0"),
        ("0.25", "0.25"),
        ("100000", "100000.0"),
        ("123456.5", "123456.5"),
        ("1e6", "1e+06"),
        ("2.5e-7", "2.5e-07"),
        ("0.0001", "0.0001"),
        ("0.00001", "1e-05"),
        ("+Inf", "+Inf"),
        ("inf", "+Inf"),
        ("NaN", "NaN"),
        ("abc", "abc"),
        ("1_0", "10.0"),
    ],
)
def test_openmetrics_float_is_go_g_format_with_a_point(text: str, written: str):
    assert scrape_module.openmetrics_float(text) == written


def test_a_relabeling_job_takes_targets_that_are_not_addresses(tmp_path):
    # The blackbox exporter's documented setup: the target is a URL, moved to `__param_target`, and the
    # exporter's own address becomes `__address__`. Prometheus checks the address after relabeling.
    config = _load(
        tmp_path,
        """
scrape_configs:
  - job_name: blackbox
    metrics_path: /probe
    params:
      module: [http_2xx]
    static_configs:
      - targets: [https://example.com, "http://checkout.internal:8080/healthz"]
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: 127.0.0.1:9115
""",
    )
    targets, problems = targets_of(config.scrape_configs[0])
    assert problems == []
    assert [(t.url, t.instance) for t in targets] == [
        (
            "http://127.0.0.1:9115/probe?module=http_2xx&target=https%3A%2F%2Fexample.com",
            "https://example.com",
        ),
        (
            "http://127.0.0.1:9115/probe?module=http_2xx&target=http%3A%2F%2Fcheckout.internal%3A8080%2Fhealthz",
            "http://checkout.internal:8080/healthz",
        ),
    ]


@pytest.mark.parametrize(
    ("due", "step", "now", "expected"),
    [
        (100.0, 10.0, 101.0, (110.0, 0)),  # on time
        (100.0, 10.0, 125.0, (130.0, 2)),  # ran past two ticks: skipped, the phase kept
        (100.0, 40.0, 101.0, (140.0, 0)),  # backing off
        (100.0, 10.0, 80.0, (90.0, 0)),  # the wall clock stepped back 20 s: one step from now, not 30 s
    ],
)
def test_next_due(due: float, step: float, now: float, expected: tuple[float, int]):
    assert scrape_module.next_due(due, step, 10.0, now) == expected
