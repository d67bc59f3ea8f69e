"""The collector's pure core: validation of whole requests."""

from __future__ import annotations

import orjson
import pytest

from services.collector.ingest import LOGS, METRICS, Rejected, parse_body

NOW = 1_763_800_000.0


def body(**doc: object) -> bytes:
    return orjson.dumps(doc)


def test_valid_samples_get_defaults_and_receive_time():
    accepted = parse_body(
        METRICS,
        body(
            samples=[
                {
                    "name": "http_requests_total",
                    "labels": {"status": "500"},
                    "value": 1,
                    "kind": "increment",
                    "timestamp": "2025-11-22T08:26:40.25Z",
                },
                {"name": "queue_depth", "value": 3.5},
            ]
        ),
        NOW,
        max_items=10,
    )
    items = orjson.loads(accepted.items_json)
    assert accepted.count == 2
    assert items[0] == {
        "name": "http_requests_total",
        "labels": {"status": "500"},
        "value": 1.0,
        "kind": "increment",
        "timestamp": 1763800000.25,
    }
    assert items[1] == {"name": "queue_depth", "labels": {}, "value": 3.5, "kind": "sample", "timestamp": NOW}


def test_every_bad_item_is_listed_by_index_and_reason():
    with pytest.raises(Rejected) as caught:
        parse_body(
            METRICS,
            body(
                samples=[
                    {"name": "ok", "value": 1},
                    {"name": "bad-name", "value": 1},
                    {"name": "ok", "value": "1"},
                    {"name": "ok", "value": 1, "labels": {"__name__": "x"}},
                    {"name": "ok", "value": 1, "timestamp": "yesterday"},
                    {"name": "ok", "value": 1, "kind": "gauge"},
                ]
            ),
            NOW,
            max_items=10,
        )
    rejected = caught.value
    assert rejected.status == 400
    assert rejected.message == "5 of 6 samples are invalid; nothing from this request was accepted"
    by_index = {e.index: e for e in rejected.errors}
    assert sorted(by_index) == [1, 2, 3, 4, 5]
    assert "invalid metric name 'bad-name'" in by_index[1].reason and by_index[1].field == "name"
    assert by_index[2].field == "value"
    assert "reserved" in by_index[3].reason
    assert "not RFC 3339" in by_index[4].reason
    assert by_index[5].field == "kind"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"samples": 1}', "a list of samples"),
        (b'{"sample": []}', "unknown field(s) in request body: sample"),
        (b'{"samples": [{"name": "x", "value": NaN}]}', "not valid JSON"),
    ],
)
def test_malformed_bodies_are_rejected_with_a_reason(raw: bytes, message: str):
    with pytest.raises(Rejected, match=None) as caught:
        parse_body(METRICS, raw, NOW, max_items=10)
    assert message in caught.value.message


def test_infinite_values_are_refused():
    # JSON has no Infinity, but 1e999 parses to inf in some decoders.
    with pytest.raises(Rejected):
        parse_body(METRICS, b'{"samples": [{"name": "x", "value": 1e999}]}', NOW, max_items=10)


def test_too_many_items_is_413():
    with pytest.raises(Rejected) as caught:
        parse_body(METRICS, body(samples=[{"name": "x", "value": 1}] * 3), NOW, max_items=2)
    assert caught.value.status == 413


def test_log_events_are_normalised():
    accepted = parse_body(
        LOGS,
        body(
            logs=[
                {
                    "service": "agent",
                    "level": "ERROR",
                    "message": "Budget exceeded",
                    "labels": {"agent_type": "planner"},
                    "timestamp": 1763800000.25,
                }
            ]
        ),
        NOW,
        max_items=10,
    )
    (item,) = orjson.loads(accepted.items_json)
    assert item == {
        "service": "agent",
        "level": "error",
        "message": "Budget exceeded",
        "labels": {"agent_type": "planner"},
        "timestamp": 1763800000.25,
    }


def test_log_labels_may_not_shadow_service_or_level():
    with pytest.raises(Rejected) as caught:
        parse_body(LOGS, body(logs=[{"service": "a", "level": "info", "labels": {"level": "x"}}]), NOW, 10)
    (error,) = caught.value.errors
    assert (error.index, error.field) == (0, "labels")  # was "": the check ran on the model, not the field
    assert error.reason == "labels must not repeat the event's own fields: level"


@pytest.mark.parametrize(
    ("ts", "reason"),
    [
        (1e300, "timestamp is 1e+300s in the future"),
        ("0001-01-01T00:00:00Z", "in the past"),
        (NOW - 3601, "in the past; the limit is 3600s"),
        (NOW + 601, "in the future; the limit is 600s"),
        # Just past the limit: rounding said "3600s in the past; the limit is 3600s".
        (NOW - 3600.4, "timestamp is 3600.400s in the past; the limit is 3600s"),
        (NOW + 600.0004, "timestamp is 600.000"),  # a float's own digits, whatever they are, past 600
        (int(NOW * 1e3) - 5, "(collector.max_skew); it looks like Unix milliseconds: send seconds"),
        (int(NOW * 1e6), "(collector.max_skew); it looks like Unix microseconds: send seconds"),
        (int(NOW * 1e9), "(collector.max_skew); it looks like Unix nanoseconds: send seconds"),
    ],
)
def test_timestamps_outside_the_window_are_rejected_per_item(ts: object, reason: str):
    good = {"name": "x", "value": 1, "timestamp": NOW - 10}
    with pytest.raises(Rejected) as caught:
        parse_body(METRICS, body(samples=[good, {"name": "x", "value": 1, "timestamp": ts}]), NOW, 10)
    (error,) = caught.value.errors
    assert error.index == 1 and error.field == "timestamp" and reason in error.reason


@pytest.mark.parametrize("ts", [1e300, NOW + 601, (NOW - 3601) * 1e3, (NOW + 601) * 1e3, NOW * 1e12])
def test_only_a_timestamp_that_would_fit_in_a_finer_unit_gets_the_unit_hint(ts: float):
    with pytest.raises(Rejected) as caught:
        parse_body(METRICS, body(samples=[{"name": "x", "value": 1, "timestamp": ts}]), NOW, 10)
    assert "looks like" not in caught.value.errors[0].reason


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2025-11-22T08:26:40.25Z", NOW + 0.25),
        ("2025-11-22t08:26:40.25z", NOW + 0.25),  # RFC 3339 5.6: t and z may be lower case
        ("2025-11-22 09:26:40+01:00", NOW),  # and its note allows a space
        ("2025-11-22T08:26:40.250000001Z", NOW + 0.25),  # nanoseconds, as Go writes them
        ("20251122T082640Z", "is not RFC 3339"),  # ISO 8601 basic form, which fromisoformat took
        ("2025-11-22T08:26Z", "is not RFC 3339"),  # no seconds
        ("2025-13-22T08:26:40Z", "is not RFC 3339"),  # no such month
        ("2016-12-31T23:59:60Z", "is a leap second (:60), which is not taken"),  # RFC 3339 allows it; Go not
        ("2025-11-22T08:26:61Z", "is not RFC 3339"),
        ("2016-02-30T23:59:60Z", "is not RFC 3339"),  # not a leap second: there is no February 30th
        ("2016-12-31T24:59:60Z", "is not RFC 3339"),
        ("2025-11-22T08:26:40", "has no time zone"),
    ],
)
def test_string_timestamps_are_rfc_3339(ts: str, expected: float | str):
    sample = {"name": "x", "value": 1, "timestamp": ts}
    if isinstance(expected, float):
        [item] = orjson.loads(parse_body(METRICS, body(samples=[sample]), NOW, 10).items_json)
        assert item["timestamp"] == pytest.approx(expected)
        return
    with pytest.raises(Rejected) as caught:
        parse_body(METRICS, body(samples=[sample]), NOW, 10)
    assert expected in caught.value.errors[0].reason
