"""Ingest limits: per-item label and name limits (400 with a reason per item) and the per-client rate limit
(429 with Retry-After, before the body is read), driven by an injected clock so nothing sleeps."""

from __future__ import annotations

import asyncio
import math
import shutil
import uuid
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis

from services.collector.app import build
from services.collector.ingest import (
    DEFAULT_LIMITS,
    LOGS,
    METRICS,
    IngestLimits,
    ItemError,
    Rejected,
    limits_from,
    parse_body,
    validate_items,
)
from services.collector.rate_limit import RateLimiter
from shared.clock import FakeClock
from shared.codec import PART_HEADER, decode_entry
from shared.config import CollectorConfig, Config
from shared.streams import Keys
from shared.webapp import CLIENT

NOW = 1_763_800_000.0
TIGHT = IngestLimits(max_labels=3, max_label_name_length=10, max_label_value_length=10, max_name_length=10)


def rejection(spec: Any, items: list[Any], limits: IngestLimits = TIGHT) -> Rejected:
    with pytest.raises(Rejected) as caught:
        validate_items(spec, items, NOW, 100, limits=limits)
    return caught.value


# Per-item limits -----------------------------------------------------------------------------------------


def test_default_limits_are_the_config_defaults():
    defaults = CollectorConfig()
    declared = IngestLimits(
        max_labels=defaults.max_labels,
        max_label_name_length=defaults.max_label_name_length,
        max_label_value_length=defaults.max_label_value_length,
        max_name_length=defaults.max_name_length,
    )
    assert declared == DEFAULT_LIMITS
    assert (DEFAULT_LIMITS.max_labels, DEFAULT_LIMITS.max_label_value_length) == (64, 4096)
    config = Config.model_validate({"collector": {"max_labels": 7}})
    assert limits_from(config) == limits_from(config.collector)
    assert limits_from(config).max_labels == 7


@pytest.mark.parametrize(
    ("item", "error"),
    [
        (
            {"name": "up", "value": 1, "labels": {"a": "1", "b": "2", "c": "3", "d": "4"}},
            ItemError(0, "labels", "4 labels; the limit is 3 (collector.max_labels)"),
        ),
        (
            {"name": "up", "value": 1, "labels": {"a_long_name": "1"}},
            ItemError(
                0,
                "labels",
                "label name 'a_long_name' is longer than 10 characters (collector.max_label_name_length)",
            ),
        ),
        (
            {"name": "up", "value": 1, "labels": {"job": "12345678901"}},
            ItemError(
                0,
                "labels",
                "value of label 'job' is longer than 10 characters (collector.max_label_value_length)",
            ),
        ),
        (
            {"name": "a_long_name", "value": 1},
            ItemError(
                0,
                "name",
                "metric name 'a_long_name' is longer than 10 characters (collector.max_name_length)",
            ),
        ),
    ],
)
def test_each_sample_limit_has_its_own_reason(item: dict[str, Any], error: ItemError):
    rejected = rejection(METRICS, [item])
    assert rejected.status == 400
    assert rejected.message == "1 of 1 samples are invalid; nothing from this request was accepted"
    assert rejected.errors == [error]


def test_log_events_obey_the_same_limits():
    rejected = rejection(
        LOGS,
        [
            {"service": "checkout", "level": "info", "labels": {"a": "1", "b": "2", "c": "3", "d": "4"}},
            {"service": "a_long_service", "level": "info"},
            {"service": "ok", "level": "info", "labels": {"agent": "a_long_value"}},
        ],
    )
    assert rejected.errors == [
        ItemError(0, "labels", "4 labels; the limit is 3 (collector.max_labels)"),
        ItemError(
            1, "service", "service 'a_long_service' is longer than 10 characters (collector.max_name_length)"
        ),
        ItemError(
            2,
            "labels",
            "value of label 'agent' is longer than 10 characters (collector.max_label_value_length)",
        ),
    ]


def test_every_item_is_listed_with_every_problem_in_order():
    rejected = rejection(
        METRICS,
        [
            {"name": "ok", "value": 1},
            {"name": "bad-name", "value": 1},  # the schema's own rule and message
            {"name": "a_long_name", "value": 1, "labels": {"a": "1", "b": "2", "c": "3", "d": "4"}},
            {"name": "ok", "value": 1, "timestamp": NOW - 7200},  # outside the window
        ],
    )
    assert rejected.message == "3 of 4 samples are invalid; nothing from this request was accepted"
    assert [(e.index, e.field) for e in rejected.errors] == [
        (1, "name"),
        (2, "name"),
        (2, "labels"),
        (3, "timestamp"),
    ]
    assert rejected.errors[0].reason.startswith("invalid metric name 'bad-name'")
    assert (
        rejected.errors[3].reason == "timestamp is 7200s in the past; the limit is 3600s (collector.max_age)"
    )


def test_limits_only_tighten_the_schema():
    # The stream's schema allows label values up to 4096 characters and names up to 200; a looser config
    # cannot let more through (the evaluator validates every item against the same schema).
    loose = IngestLimits(
        max_labels=64, max_label_name_length=1000, max_label_value_length=10_000, max_name_length=1000
    )
    rejected = rejection(METRICS, [{"name": "up", "value": 1, "labels": {"job": "x" * 4097}}], loose)
    assert rejected.errors == [ItemError(0, "labels", "value of label 'job' is longer than 4096 characters")]
    rejected = rejection(METRICS, [{"name": "n" * 201, "value": 1}], loose)
    assert rejected.errors[0].field == "name"
    assert rejected.errors[0].reason.endswith("(at most 200 characters)")


def test_names_known_valid_under_loose_limits_are_rechecked_under_tight_ones():
    # The fast path trusts names it has seen valid, per IngestLimits: a name cached under the defaults
    # must not slip past a tighter configuration.
    item = {"name": "eleven_char", "value": 1, "labels": {"label_elevn": "v"}}
    assert validate_items(METRICS, [item], NOW, 10).count == 1
    assert validate_items(METRICS, [item], NOW, 10).count == 1  # now from the defaults' cache
    rejected = rejection(METRICS, [item])
    assert [e.field for e in rejected.errors] == ["name", "labels"]


def test_limits_at_their_bound_are_accepted():
    item = {"name": "ten_chars_", "value": 1, "labels": {"a": "x" * 10, "b": "", "ten_chars_": "v"}}
    for _ in range(2):  # once through the schema, once through the fast path
        accepted = validate_items(METRICS, [item], NOW, 10, limits=TIGHT)
        assert orjson.loads(accepted.items_json)[0]["labels"] == item["labels"]


def test_parse_body_takes_limits():
    raw = orjson.dumps({"samples": [{"name": "up", "value": 1, "labels": {"a": "1", "b": "2"}}]})
    one_label = IngestLimits(
        max_labels=1, max_label_name_length=10, max_label_value_length=10, max_name_length=10
    )
    with pytest.raises(Rejected):
        parse_body(METRICS, raw, NOW, 10, limits=one_label)
    assert parse_body(METRICS, raw, NOW, 10).count == 1


# Through the HTTP API ------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


async def _serve(config: Config, clock: FakeClock) -> AsyncIterator[TestClient]:
    service = build(config, clock)
    await service.start()
    client = TestClient(TestServer(service.web))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await service.stop()


async def test_limit_violations_answer_400_per_item_and_store_nothing(
    make_config, clock: FakeClock, redis: Redis, keys: Keys
):
    config = make_config(collector={"max_labels": 2, "max_label_value_length": 5, "max_name_length": 8})
    async for client in _serve(config, clock):
        response = await client.post(
            "/api/v1/metrics",
            json={
                "samples": [
                    {"name": "up", "value": 1, "labels": {"a": "1"}},
                    {"name": "up", "value": 1, "labels": {"a": "1", "b": "2", "c": "3"}},
                    {"name": "up", "value": 1, "labels": {"job": "toolong"}},
                    {"name": "way_too_long", "value": 1},
                ]
            },
        )
        assert response.status == 400
        reply = await response.json()
        assert reply["status"] == "error" and reply["errorType"] == "bad_data"
        assert reply["error"] == "3 of 4 samples are invalid; nothing from this request was accepted"
        assert reply["errors"] == [
            {"index": 1, "field": "labels", "reason": "3 labels; the limit is 2 (collector.max_labels)"},
            {
                "index": 2,
                "field": "labels",
                "reason": "value of label 'job' is longer than 5 characters "
                "(collector.max_label_value_length)",
            },
            {
                "index": 3,
                "field": "name",
                "reason": "metric name 'way_too_long' is longer than 8 characters "
                "(collector.max_name_length)",
            },
        ]
        response = await client.post(
            "/api/v1/logs", json={"logs": [{"service": "a_long_service", "level": "info"}]}
        )
        assert response.status == 400
        assert (await response.json())["errors"][0]["field"] == "service"
    assert await redis.exists(keys.metrics, keys.logs) == 0


async def test_rate_limit_answers_429_with_retry_after_then_recovers(
    make_config, clock: FakeClock, redis: Redis, keys: Keys
):
    config = make_config(collector={"rate_limit": 0.5, "rate_limit_burst": 2})
    body = {"samples": [{"name": "x", "value": 1}]}
    async for client in _serve(config, clock):
        assert (await client.post("/api/v1/metrics", json=body)).status == 202
        assert (await client.post("/api/v1/logs", json={"logs": []})).status == 202  # one budget for both
        refused = await client.post("/api/v1/metrics", json=body)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "2"  # one token at 0.5/s
        reply = await refused.json()
        assert reply["status"] == "error" and reply["errorType"] == "rate_limited"
        assert "0.5 requests/s per client address with bursts of 2" in reply["error"]
        clock.set(NOW + 1)
        assert (await client.post("/api/v1/metrics", json=body)).headers["Retry-After"] == "1"
        clock.set(NOW + 2)
        assert (await client.post("/api/v1/metrics", json=body)).status == 202
        text = await (await client.get("/metrics")).text()
        assert 'tripwire_ingest_rate_limited_total{endpoint="/api/v1/metrics"} 2.0' in text
        assert 'tripwire_ingest_requests_total{code="429",endpoint="/api/v1/metrics"} 2.0' in text
    assert await redis.xlen(keys.metrics) == 2


async def test_rate_limit_refuses_before_reading_the_body(
    make_config, clock: FakeClock, redis: Redis, keys: Keys
):
    config = make_config(collector={"rate_limit": 1, "rate_limit_burst": 1, "max_body_bytes": 2048})
    async for client in _serve(config, clock):
        assert (await client.post("/api/v1/metrics", json={"samples": []})).status == 202
        # Over the size limit (413 if the body were looked at) and not even JSON: the budget speaks first.
        response = await client.post("/api/v1/metrics", data=b"x" * 10_000)
        assert response.status == 429
        assert response.headers["Retry-After"] == "1"
    assert await redis.exists(keys.metrics) == 0


async def test_with_a_token_the_budget_is_the_tokens_and_refused_auth_spends_none(
    make_config, clock: FakeClock, redis: Redis, keys: Keys
):
    config = make_config(collector={"rate_limit": 1, "rate_limit_burst": 1})
    config.ingest_token = SecretStr("s3cret")
    body = {"samples": [{"name": "x", "value": 1}]}
    right = {"Authorization": "Bearer s3cret"}
    async for client in _serve(config, clock):
        for _ in range(3):
            assert (await client.post("/api/v1/metrics", json=body)).status == 401
        assert (await client.post("/api/v1/metrics", json=body, headers=right)).status == 202
        refused = await client.post("/api/v1/metrics", json=body, headers=right)
        assert refused.status == 429
        assert "per ingest token" in (await refused.json())["error"]
    assert await redis.xlen(keys.metrics) == 1


async def test_rate_limit_off_by_default(make_config, clock: FakeClock):
    async for client in _serve(make_config(), clock):
        for _ in range(150):  # past the default burst of 100
            assert (await client.post("/api/v1/logs", json={"logs": []})).status == 202


# The limiter on its own ----------------------------------------------------------------------------------


def request(address: str = "10.0.0.1", token: str | None = None) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: (
        (address, 40000) if key == "peername" else default
    )
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    made = make_mocked_request("POST", "/api/v1/metrics", headers=headers, transport=transport)
    if token:
        made[CLIENT] = token  # what the token check sets: the client's name
    return made


def test_each_token_has_its_own_bucket():
    limiter = RateLimiter(1.0, 2, FakeClock(NOW), by_token=True)
    assert limiter.check(request(token="a")) is None
    assert limiter.check(request(token="a")) is None
    refused = limiter.check(request(token="a"))
    assert refused is not None and refused.status == 429
    # Token b, even from the same address, is untouched by a's spending.
    assert limiter.check(request(token="b")) is None
    assert limiter.check(request(token="b")) is None
    assert limiter.check(request(token="b")) is not None
    assert len(limiter) == 2


def test_without_tokens_each_address_has_its_own_bucket():
    limiter = RateLimiter(1.0, 1, FakeClock(NOW), by_token=False)
    assert limiter.check(request("10.0.0.1", token="a")) is None
    # A token the collector does not use changes nothing: same address, same budget.
    assert limiter.check(request("10.0.0.1", token="b")) is not None
    assert limiter.check(request("10.0.0.2")) is None


def test_retry_after_is_whole_seconds_and_at_least_one():
    clock = FakeClock(NOW)
    limiter = RateLimiter(4.0, 1, clock, by_token=False)
    assert limiter.check(request()) is None
    refused = limiter.check(request())
    assert refused is not None and refused.headers["Retry-After"] == "1"  # 0.25s rounds up to 1
    slow = RateLimiter(0.1, 1, clock, by_token=False)
    assert slow.check(request()) is None
    clock.set(NOW + 0.5)
    refused = slow.check(request())
    assert refused is not None and refused.headers["Retry-After"] == "10"  # 9.5s rounds up
    assert orjson.loads(refused.body)["errorType"] == "rate_limited"  # type: ignore[arg-type]


def test_tokens_refill_at_the_rate_up_to_the_burst():
    clock = FakeClock(NOW)
    limiter = RateLimiter(2.0, 3, clock, by_token=False)
    assert [limiter.acquire("c") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("c") == pytest.approx(0.5)
    clock.set(NOW + 0.5)
    assert limiter.acquire("c") == 0.0
    clock.set(NOW + 100)  # long idle: back to a full burst, not more
    assert [limiter.acquire("c") for _ in range(4)][-1] > 0


def test_a_clock_stepping_back_neither_refills_nor_locks_out():
    clock = FakeClock(NOW)
    limiter = RateLimiter(1.0, 1, clock, by_token=False)
    assert limiter.acquire("c") == 0.0
    clock.set(NOW - 3600)
    assert limiter.acquire("c") == pytest.approx(1.0)  # no refill from going backwards
    clock.set(NOW - 3599)
    assert limiter.acquire("c") == 0.0  # one second later (on the new clock), a token is back


def test_memory_is_bounded_by_idle_eviction_and_a_cap():
    clock = FakeClock(NOW)
    limiter = RateLimiter(1.0, 5, clock, by_token=False, max_clients=3)
    for client in ("a", "b", "c", "d", "e"):
        limiter.acquire(client)
    assert len(limiter) == 3  # the least recently seen were dropped
    clock.set(NOW + 5)  # burst / rate: every bucket is full again, so forgetting them changes nothing
    limiter.acquire("f")
    assert len(limiter) == 1


def test_disabled_limiter_passes_everything_and_tracks_nothing():
    limiter = RateLimiter(0.0, 1, FakeClock(NOW), by_token=False)
    assert all(limiter.check(request(f"10.0.0.{i}")) is None for i in range(50))
    assert len(limiter) == 0 and not limiter.enabled


async def test_otlp_shares_the_json_apis_rate_limit_and_answers_429_with_retry_after(make_config):
    """One budget per client across every ingest route; OTLP's refusal is a 429 with Retry-After too."""
    from aiohttp.test_utils import TestClient, TestServer
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    from services.collector.app import build

    config = make_config(collector={"rate_limit": 1, "rate_limit_burst": 1})
    service = build(config)
    async with TestClient(TestServer(service.web)) as client:
        first = await client.post("/api/v1/metrics", json={"samples": []})
        assert first.status == 202
        body = ExportMetricsServiceRequest().SerializeToString()
        second = await client.post(
            "/v1/metrics", data=body, headers={"Content-Type": "application/x-protobuf"}
        )
        assert second.status == 429 and int(second.headers["Retry-After"]) >= 1
    await service.redis.aclose()


async def test_a_level_longer_once_lower_cased_is_refused(make_config, redis, keys):
    from aiohttp.test_utils import TestClient, TestServer

    from services.collector.app import build

    service = build(make_config())
    async with TestClient(TestServer(service.web)) as client:
        event = {"service": "checkout", "level": "İ" * 20, "message": "x"}  # 20 chars, 40 once lowered
        response = await client.post("/api/v1/logs", json={"logs": [event]})
        assert response.status == 400
        assert "once lower-cased" in await response.text()
    assert await redis.xlen(keys.logs) == 0
    await service.redis.aclose()


async def test_each_client_of_ingest_tokens_file_has_its_own_budget(make_config, tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from services.collector.app import build
    from shared.config import read_token_file

    tokens = tmp_path / "tokens"
    tokens.write_text("# client token\nbilling s3cret-billing\ncheckout s3cret-checkout\n")
    config = make_config(collector={"rate_limit": 1, "rate_limit_burst": 1})
    config.ingest_tokens = read_token_file(tokens)
    service = build(config)
    async with TestClient(TestServer(service.web)) as client:

        async def post(token: str) -> int:
            headers = {"Authorization": f"Bearer {token}"}
            async with client.post("/api/v1/metrics", json={"samples": []}, headers=headers) as response:
                return response.status

        assert await post("s3cret-billing") == 202
        assert await post("s3cret-billing") == 429  # billing spent its burst
        assert await post("s3cret-checkout") == 202  # checkout has its own
        assert await post("not-a-token") == 401
    await service.redis.aclose()


def test_ingest_tokens_file_errors_name_the_line_never_the_token(tmp_path):
    from shared.config import read_token_file
    from shared.yamlfile import ConfigError

    tokens = tmp_path / "tokens"
    tokens.write_text("billing s3cret-one\nbilling s3cret-two\n")
    with pytest.raises(ConfigError) as caught:
        read_token_file(tokens)
    assert f"{tokens}:2" in str(caught.value) and "s3cret" not in str(caught.value)


def test_ingest_tokens_come_from_their_file_never_from_the_config(tmp_path):
    from shared.config import load_config
    from shared.yamlfile import ConfigErrors

    (tmp_path / "tokens").write_text("billing s3cret\n")
    (tmp_path / "tripwire.yml").write_text("ingest_tokens_file: tokens\n")
    config = load_config(tmp_path / "tripwire.yml", environ={})
    assert config.ingest_tokens["billing"].get_secret_value() == "s3cret"
    (tmp_path / "bad.yml").write_text("ingest_tokens:\n  billing: s3cret\n")
    with pytest.raises(ConfigErrors) as caught:
        load_config(tmp_path / "bad.yml", environ={})
    assert "ingest_tokens must not be written in a config file" in str(caught.value)


async def test_a_retried_request_with_the_same_request_id_is_stored_once(make_config, redis, keys):
    """A client that lost the answer (a timeout after Redis wrote the batch) retries with the same
    X-Request-Id: the same entry comes back, increments are not counted twice. Scoped per client."""
    from aiohttp.test_utils import TestClient, TestServer

    from services.collector.app import build

    service = build(make_config())
    body = {"samples": [{"name": "jobs_total", "labels": {}, "value": 1, "kind": "increment"}]}
    async with TestClient(TestServer(service.web)) as client:

        async def post(request_id: str | None, sent: dict[str, Any] = body) -> str:
            headers = {"X-Request-Id": request_id} if request_id else {}
            async with client.post("/api/v1/metrics", json=sent, headers=headers) as response:
                assert response.status == 202
                return (await response.json())["entry"]

        first = await post("batch-0001")
        assert await post("batch-0001") == first
        assert await redis.xlen(keys.metrics) == 1
        await post(None)
        await post(None)  # no request id: no promise, two entries
        assert await redis.xlen(keys.metrics) == 3
        # The same id for other data (a sender that numbers from 1 again after a restart) is a new request:
        # answering with the first entry would acknowledge data that was never stored.
        other = {"samples": [{"name": "jobs_total", "labels": {}, "value": 5, "kind": "increment"}]}
        assert await post("batch-0001", other) != first
        assert await redis.xlen(keys.metrics) == 4
        # The replay stored nothing, so it counts as a replay, not as items taken in.
        text = await (await client.get("/metrics")).text()
        assert 'tripwire_ingest_items_total{endpoint="/api/v1/metrics"} 4.0' in text
        assert 'tripwire_publish_replays_total{kind="metrics"} 1.0' in text
    await service.redis.aclose()


async def test_a_retry_whose_timestamps_aged_out_is_a_replay_not_a_400(
    make_config, clock: FakeClock, redis: Redis, keys: Keys
):
    # The retry was validated before the id was looked up: a sender whose first answer was lost, retrying
    # after max_age, was told nothing was accepted although the batch was stored.
    body = {"samples": [{"name": "jobs_total", "value": 1, "timestamp": NOW, "kind": "increment"}] * 3}
    async for client in _serve(make_config(collector={"max_age": "10m"}), clock):

        async def post(request_id: str, client: TestClient = client) -> tuple[int, dict[str, Any]]:
            response = await client.post("/api/v1/metrics", json=body, headers={"X-Request-Id": request_id})
            return response.status, await response.json()

        status, first = await post("late-1")
        assert (status, first["accepted"]) == (202, 3)
        clock.set(NOW + 3600)
        assert await post("late-1") == (202, first)
        assert await redis.xlen(keys.metrics) == 1
        # Another id for the same body was never stored: its refusal stands, and stores nothing.
        status, refused = await post("late-2")
        assert status == 400
        assert "in the past" in refused["errors"][0]["reason"]
        assert await redis.xlen(keys.metrics) == 1
        text = await (await client.get("/metrics")).text()
        assert 'tripwire_publish_replays_total{kind="metrics"} 1.0' in text
        assert 'tripwire_ingest_items_total{endpoint="/api/v1/metrics"} 3.0' in text


async def test_a_refused_request_is_looked_up_only_when_time_alone_refused_it(
    make_config, clock: FakeClock, recall_lookups: list[str]
):
    # Every 400 with an X-Request-Id cost a Redis lookup, for garbage too: only a timestamp that aged out
    # can refuse a retry of a request that was stored, so only that one is looked up.

    def sample(**fields: Any) -> dict[str, Any]:
        return {"samples": [{"name": "jobs_total", "value": 1, "timestamp": NOW, **fields}]}

    async for client in _serve(make_config(collector={"max_age": "10m", "max_skew": "1m"}), clock):
        for body in (
            sample(labels={"__bad": "x"}),  # invalid at any time
            sample(timestamp=NOW + 3600),  # too new: time passing does not do that
            sample(timestamp=NOW - 3600, labels={"__bad": "x"}),  # too old, and invalid anyway
        ):
            response = await client.post("/api/v1/metrics", json=body, headers={"X-Request-Id": "r-1"})
            assert response.status == 400
        assert recall_lookups == []
        response = await client.post(
            "/api/v1/metrics", json=sample(timestamp=NOW - 3600), headers={"X-Request-Id": "r-1"}
        )
        assert response.status == 400
        assert len(recall_lookups) == 1


async def test_a_split_request_is_adjacent_entries_and_its_record_names_the_last(redis: Redis, keys: Keys):
    from services.collector.publish import Publisher

    publisher = Publisher(redis, 1000, retry_after=1.0)
    await publisher.publish(keys.metrics, "metrics", b"[1]", "other")
    first = await publisher.publish(
        keys.metrics, "metrics", b"[2]", "r-1", idempotency_key="k", more=[b"[3]", b"[4]"]
    )
    again = await publisher.publish(
        keys.metrics, "metrics", b"[2]", "r-1", idempotency_key="k", more=[b"[3]", b"[4]"]
    )
    plain = await publisher.publish(keys.metrics, "metrics", b"[5]", "r-2", more=[b"[6]"])
    entries = await redis.xrange(keys.metrics)
    assert [decode_entry(fields).items for _, fields in entries] == [[1], [2], [3], [4], [5], [6]]
    # Each part is marked, so the evaluator applies a request's parts together (whole entries carry no mark).
    parts = [decode_entry(fields).headers.get(PART_HEADER) for _, fields in entries]
    assert parts == [None, "1/3", "2/3", "3/3", "1/2", "2/2"]
    ids = [entry_id.decode() for entry_id, _ in entries]
    assert (first.entry_id, again.entry_id, again.appended, plain.entry_id) == (ids[3], ids[3], False, ids[5])


@pytest.mark.parametrize("once", [False, True], ids=["multi", "lua"])
async def test_a_split_request_is_stored_whole_or_not_at_all(once: bool):
    # A request past max_items items is several entries: Redis refusing one of them (out of memory here)
    # must leave none, or the sender's retry stores the first ones twice.
    from services.collector.publish import Publisher, Unavailable
    from tests.redis_server import LocalRedisServer

    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server for a private server whose maxmemory this test may set")
    server = LocalRedisServer()
    server.start()
    client = Redis.from_url(server.url)
    try:
        used = (await client.info("memory"))["used_memory"]
        await client.config_set("maxmemory", used + 4 * 1024 * 1024)
        batch = orjson.dumps([{"name": "x", "labels": {}, "value": 1.0} for _ in range(22_000)])
        assert len(batch) > 800_000  # eight of them are twice the room left
        publisher = Publisher(client, 1000, retry_after=1.0)
        with pytest.raises(Unavailable):
            await publisher.publish(
                "s", "metrics", batch, "r", idempotency_key="k" if once else None, more=[batch] * 7
            )
        assert await client.xlen("s") == 0
    finally:
        await client.aclose()
        server.close()


async def test_a_request_record_from_before_answers_were_kept_is_still_a_replay(redis: Redis, keys: Keys):
    # Records written before this version hold a bare entry id: a retry is still a replay (no second entry),
    # answered with its own counts; one about to be refused keeps its refusal (its counts are unknown).
    from services.collector.publish import Publisher

    publisher = Publisher(redis, 1000, retry_after=1.0)
    first = await publisher.publish(keys.metrics, "metrics", b"[]", "r-1", idempotency_key="k")
    await redis.set(f"{keys.metrics}:request:k", first.entry_id)
    again = await publisher.publish(keys.metrics, "metrics", b"[]", "r-1", idempotency_key="k", answer=b"{}")
    assert (again.entry_id, again.appended, again.answer) == (first.entry_id, False, b"")
    assert await publisher.recall(keys.metrics, "metrics", "k") is None
    assert await redis.xlen(keys.metrics) == 1


async def test_a_refused_retry_stays_refused_when_redis_cannot_say(make_config, clock: FakeClock):
    # Looking the id up is only for a request about to be refused: with Redis down, the refusal stands
    # (a 400 is safe: had the first attempt been stored, it stays stored).
    from services.local_redis import free_port

    config = make_config(collector={"max_age": "10m"})
    config.redis.url = f"redis://127.0.0.1:{free_port()}/0"
    body = {"samples": [{"name": "jobs_total", "value": 1, "timestamp": NOW - 3600}]}
    service = build(config, clock)  # not started: start() waits for Redis
    async with (
        TestClient(TestServer(service.web)) as client,
        client.post("/api/v1/metrics", json=body, headers={"X-Request-Id": "x-1"}) as response,
    ):
        assert response.status == 400
        assert "in the past" in (await response.json())["errors"][0]["reason"]
    await service.redis.aclose()


async def test_request_ids_as_proxies_write_them_are_honoured_and_others_refused(make_config, redis, keys):
    # A malformed id used to be replaced by a fresh one without a word: its retry was stored twice.
    from aiohttp.test_utils import TestClient, TestServer

    from services.collector.app import build

    service = build(make_config())
    body = {"samples": [{"name": "jobs_total", "labels": {}, "value": 1, "kind": "increment"}]}
    async with TestClient(TestServer(service.web)) as client:
        for request_id in (
            "order 42/retry",
            "{0f8fad5b-d9cb-469f-a165-70867728950e}",
            "f81d4fae#1",
            "h" * 256,
        ):
            entries = set()
            for _ in range(2):
                async with client.post(
                    "/api/v1/metrics", json=body, headers={"X-Request-Id": request_id}
                ) as response:
                    assert response.status == 202, await response.text()
                    entries.add((await response.json())["entry"])
            assert len(entries) == 1, request_id
        assert await redis.xlen(keys.metrics) == 4
        async with client.post("/api/v1/metrics", json=body, headers={"X-Request-Id": "h" * 257}) as response:
            assert response.status == 400
            assert "X-Request-Id must be 1-256 printable ASCII" in (await response.json())["error"]
        assert await redis.xlen(keys.metrics) == 4
    await service.redis.aclose()


async def test_a_retry_from_another_address_is_still_a_replay(make_config, redis, keys):
    # Behind a proxy with two replicas, or a NAT pool, a retry comes from another address: scoping request ids
    # by address (tried, and refuted by review) stored it twice. Ids are scoped to the token only.
    import aiohttp
    from aiohttp.test_utils import TestServer

    from services.collector.app import build

    service = build(make_config())
    body = {"samples": [{"name": "jobs_total", "labels": {}, "value": 1, "kind": "increment"}]}
    entries = []
    async with TestServer(service.web, host="127.0.0.1") as server:
        url = server.make_url("/api/v1/metrics")
        for source in ("127.0.0.1", "127.0.0.3"):
            connector = aiohttp.TCPConnector(local_addr=(source, 0))
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                session.post(url, json=body, headers={"X-Request-Id": "1"}) as r,
            ):
                assert r.status == 202, await r.text()
                entries.append((await r.json())["entry"])
    assert entries[0] == entries[1]
    assert await redis.xlen(keys.metrics) == 1
    await service.redis.aclose()


async def test_request_ids_are_remembered_for_request_id_ttl(make_config, redis, keys, tmp_path):
    # One Redis key per id: the lever that bounds what a sender with fresh ids for every request costs.
    from aiohttp.test_utils import TestClient, TestServer

    from services.collector.app import build
    from shared.config import load_config
    from shared.yamlfile import ConfigErrors

    service = build(make_config(collector={"request_id_ttl": "2m"}))
    body = {"samples": [{"name": "jobs_total", "labels": {}, "value": 1, "kind": "increment"}]}
    async with (
        TestClient(TestServer(service.web)) as client,
        client.post("/api/v1/metrics", json=body, headers={"X-Request-Id": "a-1"}) as response,
    ):
        assert response.status == 202
    [key] = [key async for key in redis.scan_iter(match=f"{keys.metrics}:request:*")]
    assert 110_000 < await redis.pttl(key) <= 120_000
    await service.redis.aclose()

    (tmp_path / "tripwire.yml").write_text("collector:\n  request_id_ttl: 500ms\n")
    with pytest.raises(ConfigErrors) as caught:
        load_config(tmp_path / "tripwire.yml", environ={})
    assert "request_id_ttl" in str(caught.value)


def test_ipv6_clients_share_a_budget_per_64_and_mapped_ipv4_is_its_ipv4():
    from services.collector.rate_limit import client_network

    assert client_network("2001:db8:1:2::1") == client_network("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_network("2001:db8:1:3::1") != client_network("2001:db8:1:2::1")
    assert client_network("::ffff:10.0.0.1") == client_network("10.0.0.1") == "10.0.0.1"
    assert client_network("not-an-address") == "not-an-address"


def test_a_503s_retry_after_rounds_up_and_the_setting_must_be_finite(tmp_path):
    from services.collector.publish import Unavailable
    from shared.config import load_config
    from shared.yamlfile import ConfigErrors

    # round() made 2.5s "2": a client told to come back before the time given.
    assert [Unavailable("x", s).retry_after_header for s in (0.2, 2.5, 3.0)] == ["1", "3", "3"]
    # YAML's .inf loaded, and every 503 then became a 500 (round(inf) raises). A file's duration needs a
    # unit now, but in code too a non-finite one is refused.
    (tmp_path / "tripwire.yml").write_text("collector:\n  retry_after: .inf\n")
    with pytest.raises(ConfigErrors, match="retry_after: a duration needs a unit: inf"):
        load_config(tmp_path / "tripwire.yml", environ={})
    with pytest.raises(ValidationError, match="duration must be finite"):
        CollectorConfig(retry_after=math.inf)


async def test_a_body_and_id_stored_by_otlp_and_sent_to_the_json_api_is_refused_not_a_500(
    make_config, clock: FakeClock, redis: Redis, keys: Keys
):
    # Both endpoints write one stream under one request key: the JSON API read an OTLP record's answer as its
    # own and failed with KeyError 'accepted' (a 500). The body is not JSON API input: it is refused.
    point = {"asInt": "1", "timeUnixNano": str(int(NOW * 1e9))}
    metric = {"name": "jobs", "gauge": {"dataPoints": [point]}}
    otlp = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}
    async for client in _serve(make_config(), clock):
        headers = {"X-Request-Id": "same-1"}
        first = await client.post("/v1/metrics", json=otlp, headers=headers)
        assert first.status == 200
        again = await client.post("/api/v1/metrics", json=otlp, headers=headers)
        assert again.status == 400, await again.text()
        assert await redis.xlen(keys.metrics) == 1


async def test_the_replay_lookup_of_a_refused_request_waits_for_a_slot_no_longer_than_appends_do(
    redis: Redis, keys: Keys
):
    # The lookup took no max_in_flight slot: with Redis stalled, refused requests piled up past the limit,
    # each waiting out the socket timeout. Now it queues as appends do, gives up as they do, frees its slot.
    from services.collector.publish import Publisher

    publisher = Publisher(redis, 1000, retry_after=1.0, max_in_flight=1, queue_wait=0.05)
    await publisher.publish(keys.metrics, "metrics", b"[]", "r-1", idempotency_key="k", answer=b"{}")
    await publisher._slots.acquire()  # every slot busy
    assert await asyncio.wait_for(publisher.recall(keys.metrics, "metrics", "k"), 5) is None
    publisher._slots.release()
    stored = await publisher.recall(keys.metrics, "metrics", "k")
    assert stored is not None and stored.answer == b"{}"
    assert await asyncio.wait_for(publisher.recall(keys.metrics, "metrics", "k"), 5) is not None  # released


async def test_redis_refusing_for_good_is_told_from_an_outage_on_every_write_path(
    redis: Redis, keys: Keys, redis_server
):
    # helper-46: inside MULTI redis-py words WRONGTYPE as "... of pipeline caused error: WRONGTYPE", and an
    # ACL refusing XADD inside the Lua script as "... can't run this command ..."; both stayed 503 for ever.
    from services.collector.publish import Publisher, StoreRefused

    publisher = Publisher(redis, 1000, retry_after=1.0)
    await redis.set(keys.metrics, "not a stream")
    for once, more in ((None, ()), (None, [b"[2]"]), ("k", ()), ("k", [b"[2]"])):
        with pytest.raises(StoreRefused):
            await publisher.publish(keys.metrics, "metrics", b"[1]", "r", idempotency_key=once, more=more)
    # A user whose ACL lacks XADD, on this test's keys only.
    user, password = f"{keys.prefix}-user", uuid.uuid4().hex
    await redis.execute_command(
        "ACL", "SETUSER", user, "on", f">{password}", f"~{keys.prefix}:*", "+@all", "-xadd"
    )
    limited = Redis.from_url(redis_server.url, username=user, password=password)
    try:
        publisher = Publisher(limited, 1000, retry_after=1.0)
        for once, more in ((None, ()), (None, [b"[2]"]), ("k2", ()), ("k3", [b"[2]"])):
            with pytest.raises(StoreRefused):
                await publisher.publish(keys.logs, "logs", b"[1]", "r", idempotency_key=once, more=more)
    finally:
        await limited.aclose()
        await redis.execute_command("ACL", "DELUSER", user)
    assert await redis.exists(keys.logs) == 0
