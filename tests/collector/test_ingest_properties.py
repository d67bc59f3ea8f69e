"""Property-based tests of ingest.

1. The fast path agrees with the schema: for any batch, `validate_items` gives exactly the schema's errors
   (same index, field and message) and, for a valid batch, exactly the stream items the schema-built models
   give, whether the name caches are cold (schema path) or warm (fast path). The one-pass path for whole
   metrics bodies (`parse_body`) gives the same verdict and the same items as the item-by-item one, however
   the JSON is spelled (whitespace, escapes, repeated keys; each body in every spelling), and is seen to
   decide bodies in each spelling it reads (escapes that could spell a key send a body item by item).
2. Malformed requests against every ingest endpoint that exists (the JSON API, and OTLP/HTTP when its routes
   are registered): random bytes, random JSON, near-valid documents with one defect, gzip garbage. The JSON
   API always answers 4xx with a reason; no endpoint ever answers 5xx; and a 4xx never leaves anything in
   the streams.
3. Valid requests to the JSON API: a 202's `accepted` is the number of items the new stream entry holds.
"""

from __future__ import annotations

import collections
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from redis.asyncio import Redis

from services.collector import ingest as ingest_module
from services.collector.app import build
from services.collector.ingest import (
    LOGS,
    METRICS,
    IngestKind,
    IngestLimits,
    Rejected,
    parse_body,
    parse_items,
    validate_items,
)
from shared import events as events_module
from shared.clock import FakeClock
from shared.codec import decode_entry
from shared.streams import Keys

NOW = 1_763_800_000.0
MAX_AGE, MAX_SKEW = 3600.0, 600.0

# Few examples per endpoint and no example database: the suite stays fast and writes no .hypothesis folder.
FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DIFFERENTIAL = settings(max_examples=300, deadline=None, database=None)

# Values built once: hypothesis should not spend its budget growing long strings.
LONG_200, LONG_201, LONG_300 = "n" * 200, "n" * 201, "s" * 300
HUGE_VALUE, HUGE_MESSAGE = "v" * 4097, "m" * 65_537

# Strategies: item fields, valid and not -------------------------------------------------------------------

_metric_names = st.one_of(
    st.sampled_from(["up", "http_requests_total", "ns:sub_total", "_x", LONG_200]),
    st.sampled_from(["bad-name", "", "1x", "a b", "é", LONG_201]),
    st.text(max_size=4),
    st.integers(),
    st.none(),
    st.just(["up"]),
)
_label_names = st.one_of(
    st.sampled_from(["job", "instance", "le", "_x", "a" * 200]),
    st.sampled_from(["__name__", "bad-label", "", "1a", "é", "a" * 201, "service", "level"]),
    st.text(max_size=3),
)
_label_values = st.one_of(
    st.text(max_size=5), st.sampled_from(["", "x" * 4096, HUGE_VALUE]), st.integers(), st.none(), st.just([])
)
_labels = st.one_of(
    st.dictionaries(_label_names, _label_values, max_size=4),
    st.dictionaries(_label_names, st.text(max_size=3), min_size=3, max_size=6),
    st.sampled_from([[], "job=a", 1, None]),
)
_numbers = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 0, -0.0, 1e300]),
    st.floats(),
    st.booleans(),
    st.sampled_from(["1", None, [1], {"v": 1}]),
)
_timestamps = st.one_of(
    st.none(),
    st.floats(min_value=NOW - 2 * MAX_AGE, max_value=NOW + 2 * MAX_SKEW),
    st.integers(min_value=int(NOW - 2 * MAX_AGE), max_value=int(NOW + 2 * MAX_SKEW)),
    st.sampled_from(
        [NOW - MAX_AGE, NOW - MAX_AGE - 1e-6, NOW + MAX_SKEW, NOW + MAX_SKEW + 1e-6, -0.0, -1, 0, 1e300]
    ),
    st.sampled_from(["2025-11-22T08:26:40.25Z", "2025-11-22T08:26:40", "yesterday", True]),
    st.floats(),
)
_metric_items = st.one_of(
    st.fixed_dictionaries(
        {"name": _metric_names, "value": _numbers},
        optional={
            "labels": _labels,
            "kind": st.sampled_from(["sample", "increment", "gauge", 1, None, ["sample"]]),
            "timestamp": _timestamps,
            "extra": st.integers(),
        },
    ),
    st.sampled_from([1, "x", [], None]),
)
# Mostly valid samples, so that whole bodies often pass (the one-pass path's only business).
_valid_metric_items = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["up", "http_requests_total", "ns:sub_total", LONG_200]),
        "value": st.one_of(st.integers(-(2**64), 2**64), st.floats(allow_nan=False, allow_infinity=False)),
    },
    optional={
        "labels": st.dictionaries(
            st.sampled_from(["job", "instance", "le", "a", "b_c", "a" * 200]),
            st.one_of(st.text(max_size=4), st.sampled_from(["x" * 4096, HUGE_VALUE])),
            max_size=4,
        ),
        "kind": st.sampled_from(["sample", "increment"]),
        "timestamp": st.one_of(
            st.none(),
            st.floats(min_value=NOW - MAX_AGE, max_value=NOW + MAX_SKEW),
            st.sampled_from([NOW - MAX_AGE, NOW - MAX_AGE - 1e-6, NOW + MAX_SKEW, NOW + MAX_SKEW + 1e-6]),
            _timestamps,
        ),
    },
)
_short_text = st.one_of(st.text(max_size=6), st.sampled_from(["", "ERROR", "İNFO", "l" * 32, "l" * 33]))
_log_items = st.one_of(
    st.fixed_dictionaries(
        {"service": st.one_of(_short_text, st.sampled_from([LONG_300, "s" * 4097]), st.integers())},
        optional={
            "level": st.one_of(_short_text, st.none()),
            "message": st.one_of(st.text(max_size=8), st.just(HUGE_MESSAGE), st.integers()),
            "labels": _labels,
            "timestamp": _timestamps,
            "extra": st.integers(),
        },
    ),
    st.sampled_from([1, "x", [], None]),
)


def schema_verdict(spec: IngestKind, items: list[Any]) -> tuple[list[tuple[int, str, str]], bytes | None]:
    """What the schema alone says, as the collector said it before it had a fast path: the errors of a
    TypeAdapter over the whole list; for schema-valid items, the timestamp window; else the stream items."""
    errors: list[tuple[int, str, str]] = []
    try:
        spec.adapter.validate_python(items)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            field = ".".join(str(p) for p in err["loc"][1:] if p != "[key]")
            errors.append((int(err["loc"][0]), field, err["msg"]))
    schema_bad = {index for index, _, _ in errors}
    for_stream = []
    for index, item in enumerate(items):
        if index in schema_bad:
            continue
        model: Any = spec.item.model_validate(item)
        ts = model.timestamp
        if ts is not None and not NOW - MAX_AGE <= ts <= NOW + MAX_SKEW:
            errors.append((index, "timestamp", "outside the window"))
        for_stream.append(spec.to_item(model, NOW))
    errors.sort(key=lambda e: e[0])  # stable: each item's own errors keep their order
    return errors, None if errors else orjson.dumps(for_stream)


# Limits no generated item reaches, so that only the schema and the timestamp window decide.
LOOSE = {
    "max_labels": 1000,
    "max_label_name_length": 1000,
    "max_label_value_length": 10_000,
    "max_name_length": 5000,
}
TIGHT = {"max_labels": 2, "max_label_name_length": 3, "max_label_value_length": 3, "max_name_length": 4}


class NeverRemembers(IngestLimits):
    """Limits whose name caches stay empty: every item takes the schema path."""

    __slots__ = ()

    def remember(self, names: set[str], name: str) -> None:
        pass


def check_agreement(spec: IngestKind, items: list[Any]) -> None:
    expected_errors, expected_json = schema_verdict(spec, items)
    limits = IngestLimits(**LOOSE)
    for _ in range(2):  # cold caches (schema path), then warm (fast path for every name seen valid)
        try:
            accepted = validate_items(spec, items, NOW, 10_000, MAX_AGE, MAX_SKEW, limits=limits)
        except Rejected as exc:
            got = [(e.index, e.field, e.reason) for e in exc.errors]
            # The window reason's wording is pinned elsewhere; here only where it applies.
            got = [
                (i, f, "outside the window" if f == "timestamp" and "limit is" in r else r) for i, f, r in got
            ]
            assert got == expected_errors
            bad = len({e[0] for e in expected_errors})
            assert exc.message == (
                f"{bad} of {len(items)} {spec.noun} are invalid; nothing from this request was accepted"
            )
        else:
            assert expected_errors == []
            assert accepted.items_json == expected_json
            assert accepted.count == len(items)


@DIFFERENTIAL
@given(st.lists(_metric_items, max_size=6))
def test_sample_validation_agrees_with_the_schema(items: list[Any]):
    check_agreement(METRICS, items)


@DIFFERENTIAL
@given(st.lists(_log_items, max_size=6))
def test_log_validation_agrees_with_the_schema(items: list[Any]):
    check_agreement(LOGS, items)


def outcome(spec: IngestKind, items: list[Any], limits: IngestLimits) -> tuple[str, object]:
    try:
        return "accepted", validate_items(
            spec, items, NOW, 10_000, MAX_AGE, MAX_SKEW, limits=limits
        ).items_json
    except Rejected as exc:
        return "rejected", (exc.message, exc.errors)


@DIFFERENTIAL
@given(st.lists(st.one_of(_metric_items, _log_items), max_size=6), st.sampled_from([METRICS, LOGS]))
def test_the_fast_path_keeps_tight_limits(items: list[Any], spec: IngestKind):
    # Under tight limits the verdict with warm caches (fast path) is the schema path's, limits included.
    expected = outcome(spec, items, NeverRemembers(**TIGHT))
    warm = IngestLimits(**TIGHT)
    for _ in range(2):
        assert outcome(spec, items, warm) == expected


def spell(items: list[Any], style: str) -> bytes:
    """A metrics body for `items`, written as senders other than orjson write JSON: the one-pass path reads
    the raw bytes, so whitespace, escapes and repeated keys must not change its verdict or its items."""
    document = {"samples": items}
    try:
        canonical = orjson.dumps(document)
    except orjson.JSONEncodeError:  # ints beyond 64 bits: the stdlib writes them (and NaN as bare NaN)
        canonical = json.dumps(document).encode()
    if style == "spaced":  # Python's json: indented, non-ASCII as \uXXXX
        return json.dumps(document, indent=1, ensure_ascii=True).encode()
    if style == "escaped":  # keys and a name spelled with escapes
        return (
            canonical.replace(b'"name":', b'"\\u006eame":')
            .replace(b'"labels":', b'"lab\\u0065ls":')
            .replace(b'"up"', b'"\\u0075p"')
        )
    if style == "repeated":  # each sample says "value" twice; the last one counts, as in orjson
        return canonical.replace(b'{"name":', b'{"value":-7,"name":')
    return canonical


# Every body is compared in each spelling: drawn at random, the rarer ones reached the one-pass path a
# handful of times a run, or never.
SPELLINGS = ("orjson", "spaced", "escaped", "repeated")


def spelling_of(body: bytes) -> str:
    """Which of `spell`'s styles wrote `body`."""
    if b"\\u006eame" in body:
        return "escaped"
    if b'"value":-7,"name"' in body:
        return "repeated"
    return "spaced" if b"\n" in body else "orjson"


class FastPathDecisions:
    """Counts the bodies the one-pass path decided (accepted) while a property ran, by spelling: a
    differential test whose generator never reaches that path would pass with the path switched off."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.decided: collections.Counter[str] = collections.Counter()
        self.seen: collections.Counter[str] = collections.Counter()
        real = ingest_module._parse_common_samples

        def counting(body: bytes, *args: Any) -> Any:
            accepted = real(body, *args)
            self.seen[spelling_of(body)] += 1
            self.decided[spelling_of(body)] += accepted is not None
            return accepted

        monkeypatch.setattr(ingest_module, "_parse_common_samples", counting)

    def check(self) -> None:
        """Each spelling the one-pass path reads was decided by it often enough to be compared; `\\u`
        escapes (which could spell a key) send a body item by item by design, so none of those was."""
        for style in ("orjson", "spaced", "repeated"):
            assert self.decided[style] >= 15, f"the one-pass path decided {self.decided} ({style})"
        assert self.seen["escaped"] >= 5
        assert self.decided["escaped"] == 0


def body_outcome(body: bytes, limits: IngestLimits, one_pass: bool) -> tuple[str, object]:
    parse = parse_body if one_pass else parse_items
    try:
        accepted = parse(METRICS, body, NOW, 5, MAX_AGE, MAX_SKEW, limits=limits)
    except Rejected as exc:
        return "rejected", (exc.message, exc.status, exc.errors)
    # Key order aside, the same bytes (so -0.0 stays -0.0).
    items = orjson.dumps(orjson.loads(accepted.items_json), option=orjson.OPT_SORT_KEYS)
    return "accepted", (items, accepted.count)


@DIFFERENTIAL
@given(
    st.one_of(
        st.lists(_valid_metric_items, max_size=6),  # often valid as a whole: the one-pass path's business
        st.lists(st.one_of(_metric_items, _valid_metric_items, _valid_metric_items), max_size=7),
    ),
    st.sampled_from([LOOSE, TIGHT]),
    st.booleans(),
)
def _one_pass_agrees_with_item_by_item(items: list[Any], limits: dict, warm: bool) -> None:
    for style in SPELLINGS:
        body = spell(items, style)
        expected = body_outcome(body, NeverRemembers(**limits), one_pass=False)
        cache = IngestLimits(**limits)
        for _ in range(2 if warm else 1):  # cold caches, then warm ones
            assert body_outcome(body, cache, one_pass=True) == expected, style


def test_the_one_pass_body_path_agrees_with_item_by_item(monkeypatch: pytest.MonkeyPatch):
    fast = FastPathDecisions(monkeypatch)
    _one_pass_agrees_with_item_by_item()
    fast.check()


# Samples that are valid but for, now and then, one limit of TIGHT (count, name or value length) or the
# request's item count: what the one-pass path must never let through.
_tight_items = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["up", "ab_c", "abcde"]),
        "value": st.integers(-3, 3),
        "labels": st.dictionaries(
            st.sampled_from(["job", "le", "a", "b_c", "abcd"]),
            st.sampled_from(["", "x", "xyz", "wxyz"]),
            max_size=3,
        ),
    },
    optional={"timestamp": st.sampled_from([NOW - MAX_AGE, NOW, NOW + MAX_SKEW])},
)


@DIFFERENTIAL
@given(st.lists(_tight_items, min_size=1, max_size=6))
def _one_pass_keeps_every_limit(items: list[Any]) -> None:
    for style in SPELLINGS:
        body = spell(items, style)
        expected = body_outcome(body, NeverRemembers(**TIGHT), one_pass=False)
        cache = IngestLimits(**TIGHT)
        for _ in range(2):
            assert body_outcome(body, cache, one_pass=True) == expected, style


def test_the_one_pass_body_path_keeps_every_limit(monkeypatch: pytest.MonkeyPatch):
    fast = FastPathDecisions(monkeypatch)
    _one_pass_keeps_every_limit()
    fast.check()


@pytest.mark.parametrize(
    "labels",
    [
        b'{"job":"\xff"}',
        b'{"job":1e999}',
        b'{"job":"\\ud800"}',
        b"[" * 1200 + b"]" * 1200,
        b'{"job":"\xff"},"labels":{"job":"a"}',
        b'{"job":"a"},"labels":{"job":"\xff"}',
        b'{"job":"a"},"l\\u0061bels":{"job":"\xff"}',
    ],
    ids=[
        "bad-utf8",
        "out-of-range",
        "lone-surrogate",
        "deep",
        "bad-then-good",
        "good-then-bad",
        "escaped-key",
    ],
)
def test_raw_label_bytes_are_judged_as_an_item_by_item_parse_would(labels: bytes):
    body = b'{"samples":[{"name":"up","value":1},{"name":"up","labels":%s,"value":2}]}' % labels
    for limits in (LOOSE, TIGHT):
        expected = body_outcome(body, NeverRemembers(**limits), one_pass=False)
        assert expected[0] == "rejected"
        assert body_outcome(body, IngestLimits(**limits), one_pass=True) == expected


def test_the_one_pass_body_path_writes_labels_compactly_and_remembers_short_ones():
    limits = IngestLimits(**LOOSE)
    spaced = '{"job": "a",  "x": "é", "job": "b"}'.encode()
    padded = b'{"job":"a"' + b" " * 1000 + b"}"
    body = b'{"samples": [{"name": "up", "labels": %s, "value": 1}, {"name": "up", "value": 2},' % spaced
    body += b'{"name": "up", "labels": %s, "value": 3}]}' % padded
    accepted = parse_body(METRICS, body, NOW, 10, limits=limits)
    # Of duplicate keys the last counts, as with orjson; a long spelling is checked but not remembered.
    assert set(limits.label_sets) == {spaced, b"{}"}
    assert accepted.items_json.count(b'"labels":{"job":"b","x":"\xc3\xa9"}') == 1
    assert b" " not in accepted.items_json
    assert orjson.loads(accepted.items_json) == [
        {"name": "up", "labels": {"job": "b", "x": "é"}, "value": 1.0, "kind": "sample", "timestamp": NOW},
        {"name": "up", "labels": {}, "value": 2.0, "kind": "sample", "timestamp": NOW},
        {"name": "up", "labels": {"job": "a"}, "value": 3.0, "kind": "sample", "timestamp": NOW},
    ]


def test_the_one_pass_body_path_keeps_the_item_limit():
    body = orjson.dumps({"samples": [{"name": "up", "value": i} for i in range(6)]})
    with pytest.raises(Rejected) as refused:
        parse_body(METRICS, body, NOW, 5, limits=IngestLimits(**LOOSE))
    assert refused.value.status == 413
    assert parse_body(METRICS, body, NOW, 6, limits=IngestLimits(**LOOSE)).count == 6


def test_the_label_set_cache_starts_over_when_full(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ingest_module, "LABEL_SETS_LIMIT", 3)
    limits = IngestLimits(**LOOSE)
    for i in range(7):
        body = b'{"samples": [{"name": "up", "labels": {"i": "%d"}, "value": 1}]}' % i
        parse_body(METRICS, body, NOW, 10, limits=limits)
        assert len(limits.label_sets) <= 3
    assert b'{"i": "6"}' in limits.label_sets


def test_the_name_caches_start_over_when_full_and_keep_learning(monkeypatch: pytest.MonkeyPatch):
    # They stopped learning once full: after a flood of junk names, real ones took the slow path for good.
    monkeypatch.setattr(events_module, "KNOWN_NAMES_LIMIT", 3)
    limits = IngestLimits(**LOOSE)
    for i in range(7):
        items = [{"name": f"junk_{i}", "labels": {f"l{i}": "x"}, "value": 1}]
        validate_items(METRICS, items, NOW, 10, limits=limits)
        assert len(limits.metric_names) <= 3 and len(limits.label_names) <= 3
    assert "junk_6" in limits.metric_names and "l6" in limits.label_names


def test_the_fast_path_is_taken_for_the_common_shape():
    limits = IngestLimits(**LOOSE)
    item = {"name": "up", "labels": {"job": "a"}, "value": 1, "kind": "increment", "timestamp": NOW}
    validate_items(METRICS, [item], NOW, 10, limits=limits)
    assert limits.metric_names == {"up"} and limits.label_names == {"job"}
    # With the caches warm the schema is not consulted at all.
    spec = IngestKind(METRICS.kind, METRICS.body_key, _Exploding, METRICS.noun, METRICS.to_item)
    accepted = validate_items(spec, [item] * 3, NOW, 10, limits=limits)
    assert orjson.loads(accepted.items_json)[2] == {**item, "value": 1.0}


class _Exploding:
    @staticmethod
    def model_validate(item: Any) -> Any:
        raise AssertionError(f"schema path taken for {item!r}")


# Malformed requests over HTTP -----------------------------------------------------------------------------

JSON_API = {"/api/v1/metrics": "samples", "/api/v1/logs": "logs"}
OTLP = ("/v1/metrics", "/v1/logs")
ENDPOINTS = [*JSON_API, *OTLP]


@pytest.fixture
async def server(make_config) -> AsyncIterator[TestClient]:
    config = make_config(collector={"max_items": 50, "max_body_bytes": 64 * 1024})
    service = build(config, FakeClock(NOW))
    await service.start()
    client = TestClient(TestServer(service.web))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await service.stop()


def require_route(client: TestClient, path: str) -> None:
    routes = {(r.method, r.resource.canonical) for r in client.app.router.routes() if r.resource is not None}
    if ("POST", path) not in routes:
        pytest.skip(f"POST {path} is not registered (the OTLP routes are not on the collector yet)")


async def post_and_check(
    client: TestClient, redis: Redis, keys: Keys, path: str, body: bytes, headers: dict[str, str]
) -> None:
    """POST `body` and check the invariants every ingest endpoint keeps on malformed input."""
    before = (await redis.xlen(keys.metrics), await redis.xlen(keys.logs))
    response = await client.post(path, data=body, headers=headers)
    answer = await response.read()  # OTLP may answer in protobuf: bytes, not text
    after = (await redis.xlen(keys.metrics), await redis.xlen(keys.logs))
    assert response.status < 500, f"{path} answered {response.status}: {answer[:500]!r}"
    if path in JSON_API:
        # Nothing sent here is a valid request: the JSON API refuses it, with a reason.
        assert 400 <= response.status < 500, f"{path} accepted {body[:200]!r}: {answer[:200]!r}"
        reply = orjson.loads(answer)
        assert reply["status"] == "error" and reply["error"], reply
    if 400 <= response.status < 500:
        assert answer, f"{path} answered {response.status} without a reason"
        assert after == before, f"{path} answered {response.status} but wrote to a stream"


_content_types = st.sampled_from(["application/json", "application/x-protobuf", "text/plain"])


@pytest.mark.parametrize("path", ENDPOINTS)
@FUZZ
@given(body=st.binary(max_size=2048), content_type=_content_types)
async def test_random_bytes(
    server: TestClient, redis: Redis, keys: Keys, path: str, body: bytes, content_type: str
):
    require_route(server, path)
    await post_and_check(server, redis, keys, path, body, {"Content-Type": content_type})


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def _could_be_valid(value: Any) -> bool:
    """Only an object holding just the body key could be a valid JSON API request; random JSON is not."""
    return isinstance(value, dict) and bool(set(value) & set(JSON_API.values()))


@pytest.mark.parametrize("path", ENDPOINTS)
@FUZZ
@given(value=_json_values.filter(lambda v: not _could_be_valid(v)))
async def test_random_json(server: TestClient, redis: Redis, keys: Keys, path: str, value: Any):
    require_route(server, path)
    # The standard library spells ints of any size (orjson only 64-bit): the collector must cope.
    body = json.dumps(value).encode()
    await post_and_check(server, redis, keys, path, body, {"Content-Type": "application/json"})


# Near-valid documents: valid items around exactly one defective item (or a defective envelope). Raw tokens
# that JSON has no spelling for (NaN, Infinity) are spliced into the encoded bytes.
_RAW = {"__NaN__": b"NaN", "__Inf__": b"Infinity", "__-Inf__": b"-Infinity", "__1e999__": b"1e999"}
_raw_numbers = st.sampled_from(list(_RAW))
_SAMPLE = {"name": "http_requests_total", "labels": {"job": "api"}, "value": 1, "kind": "increment"}
_LOG = {"service": "checkout", "level": "error", "message": "boom", "labels": {"agent": "planner"}}
_many_labels = st.integers(min_value=65, max_value=80).map(lambda n: {f"l{i}": "v" for i in range(n)})
_bad_time = st.one_of(
    st.floats(min_value=NOW - 10 * MAX_AGE, max_value=NOW - MAX_AGE - 1),
    st.floats(min_value=NOW + MAX_SKEW + 1, max_value=NOW + 10 * MAX_SKEW),
    st.sampled_from([-1, 1e300, "yesterday", "2025-11-22T08:26:40", "0001-01-01T00:00:00Z", True, [NOW]]),
    _raw_numbers,
)
_bad_labels = st.one_of(
    _many_labels,
    st.sampled_from([[], "job=a", 1, {"__name__": "x"}, {"bad-label": "x"}, {"": "x"}, {"1a": "x"}]),
    st.sampled_from([{"job": 1}, {"job": None}, {"job": HUGE_VALUE}, {"a" * 300: "x"}]),
)
_common_defects = {"labels": _bad_labels, "timestamp": _bad_time, "extra": st.integers(-(2**63), 2**63 - 1)}
_sample_defects = {
    **_common_defects,
    "name": st.sampled_from([1, None, ["up"], "bad-name", "", "1x", "a b", LONG_201, "n" * 300]),
    "value": st.one_of(st.sampled_from(["1", None, True, [1], {"v": 1}]), _raw_numbers),
    "kind": st.sampled_from(["gauge", 1, None, ["sample"]]),
}
_log_defects = {
    **_common_defects,
    "labels": st.one_of(_bad_labels, st.sampled_from([{"service": "x"}, {"level": "x"}])),
    "service": st.sampled_from(["", LONG_300, "s" * 5000, 1, None]),
    "level": st.sampled_from(["", "l" * 33, 1, None]),
    "message": st.sampled_from([HUGE_MESSAGE, 1, None]),
}


@st.composite
def near_valid(draw: st.DrawFn, body_key: str) -> bytes:
    base, defects = (_SAMPLE, _sample_defects) if body_key == "samples" else (_LOG, _log_defects)
    items: list[Any] = [dict(base) for _ in range(draw(st.integers(min_value=0, max_value=5)))]
    envelope = draw(st.sampled_from(["item", "item", "item", "not_an_object", "envelope", "too_many"]))
    if envelope == "too_many":
        items = [dict(base)] * 51  # max_items is 50 here: 413
    elif envelope == "envelope":
        document = draw(
            st.sampled_from(
                [
                    {body_key: items, "extra": 1},
                    {"wrong_key": items},
                    {body_key: {"0": base}},
                    {body_key: None},
                    [items],
                ]
            )
        )
        return orjson.dumps(document)
    elif envelope == "not_an_object":
        items.insert(draw(st.integers(0, len(items))), draw(st.sampled_from([1, "x", [], None, True])))
    else:
        field = draw(st.sampled_from(sorted(defects)))
        bad = {**base, field: draw(defects[field])}
        if field in ("name", "service", "value") and draw(st.booleans()):
            del bad[field]  # a required field left out
        items.insert(draw(st.integers(0, len(items))), bad)
    raw = orjson.dumps({body_key: items})
    for placeholder, token in _RAW.items():
        raw = raw.replace(orjson.dumps(placeholder), token)
    return raw


@pytest.mark.parametrize("path", ENDPOINTS)
@FUZZ
@given(data=st.data())
async def test_near_valid_documents(
    server: TestClient, redis: Redis, keys: Keys, path: str, data: st.DataObject
):
    require_route(server, path)
    body_key = JSON_API.get(path, "logs" if path.endswith("logs") else "samples")
    body = data.draw(near_valid(body_key))
    await post_and_check(server, redis, keys, path, body, {"Content-Type": "application/json"})


@st.composite
def gzip_garbage(draw: st.DrawFn, body_key: str) -> bytes:
    kind = draw(st.sampled_from(["random", "gzip_magic", "bomb", "near_valid", "double"]))
    if kind == "random":
        return draw(st.binary(max_size=512))
    if kind == "gzip_magic":  # a gzip header, then noise
        return b"\x1f\x8b\x08\x00" + draw(st.binary(max_size=512))
    if kind == "bomb":  # small compressed, over max_body_bytes (64 KiB) once inflated: 413
        return gzip.compress(b" " * draw(st.integers(min_value=65 * 1024, max_value=4 * 1024 * 1024)))
    inner = draw(near_valid(body_key))
    return gzip.compress(gzip.compress(inner) if kind == "double" else inner)


@pytest.mark.parametrize("path", ENDPOINTS)
@FUZZ
@given(data=st.data())
async def test_gzip_garbage(server: TestClient, redis: Redis, keys: Keys, path: str, data: st.DataObject):
    require_route(server, path)
    body_key = JSON_API.get(path, "samples")
    body = data.draw(gzip_garbage(body_key))
    content_type = "application/x-protobuf" if path in OTLP else "application/json"
    await post_and_check(
        server, redis, keys, path, body, {"Content-Encoding": "gzip", "Content-Type": content_type}
    )


def test_strategies_make_what_they_say():
    # The near-valid strategy must never produce a valid request (else the JSON API may rightly accept it).
    @settings(max_examples=100, deadline=None, database=None)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        for body_key, spec in (("samples", METRICS), ("logs", LOGS)):
            raw = data.draw(near_valid(body_key))
            try:
                document = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(document, dict) or set(document) != {body_key}:
                continue
            items = document[body_key]
            if isinstance(items, list) and len(items) <= 50:
                with pytest.raises(Rejected):
                    validate_items(spec, items, NOW, 50)

    check()


# Valid requests over HTTP: what a 202 says was accepted is what the stream holds ---------------------------

_good_labels = st.dictionaries(
    st.sampled_from(["job", "instance", "le", "a_b"]), st.text(max_size=6), max_size=4
)
_inside_the_window = st.floats(min_value=NOW - MAX_AGE + 1, max_value=NOW + MAX_SKEW - 1)
_good_samples = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["up", "http_requests_total", "ns:sub_total"]),
        "value": st.one_of(st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False)),
    },
    optional={
        "labels": _good_labels,
        "kind": st.sampled_from(["sample", "increment"]),
        "timestamp": _inside_the_window,
    },
)
_good_logs = st.fixed_dictionaries(
    {"service": st.sampled_from(["api", "checkout"]), "level": st.sampled_from(["info", "ERROR", "Warn"])},
    optional={
        "message": st.text(max_size=20),
        "labels": _good_labels,
        "timestamp": _inside_the_window,
    },
)


@pytest.mark.parametrize("path", list(JSON_API))
@FUZZ
@given(data=st.data())
async def test_a_202_accepts_exactly_what_the_stream_holds(
    server: TestClient, redis: Redis, keys: Keys, path: str, data: st.DataObject
):
    body_key = JSON_API[path]
    items = data.draw(st.lists(_good_samples if body_key == "samples" else _good_logs, max_size=50))
    stream = keys.metrics if body_key == "samples" else keys.logs
    before = await redis.xlen(stream)
    response = await server.post(
        path, data=orjson.dumps({body_key: items}), headers={"Content-Type": "application/json"}
    )
    reply = await response.json()
    assert response.status == 202, reply
    assert reply["accepted"] == len(items)
    if not items:
        assert await redis.xlen(stream) == before  # nothing to store, no empty entry
        return
    [(_, fields)] = await redis.xrevrange(stream, count=1)
    stored = decode_entry(fields).items
    assert len(stored) == reply["accepted"]
    assert [item.get("name", item.get("service")) for item in stored] == [
        item.get("name", item.get("service")) for item in items
    ]
