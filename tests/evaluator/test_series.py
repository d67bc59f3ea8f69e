"""The series store: windows, counters from increments, trimming."""

from __future__ import annotations

from services.evaluator.series import Series, SeriesStore
from shared.matchers import Matcher


def test_latest_uses_a_left_open_lookback_window():
    s = Series({"__name__": "x"})
    s.add(100.0, 1.0)
    s.add(200.0, 2.0)
    assert s.latest(200.0, 300.0) == (200.0, 2.0)
    assert s.latest(199.9, 300.0) == (100.0, 1.0)
    # (t - 5m, t]: a sample exactly 5 minutes old is out, a hair newer is in.
    assert s.latest(400.0, 300.0) == (200.0, 2.0)
    assert s.latest(500.0, 300.0) is None
    assert s.latest(99.0, 300.0) is None


def test_later_write_at_same_timestamp_wins_and_out_of_order_is_sorted():
    s = Series({})
    s.add(10.0, 1.0)
    s.add(30.0, 3.0)
    s.add(20.0, 2.0)
    s.add(20.0, 2.5)
    assert list(s.timestamps) == [10.0, 20.0, 30.0]
    assert list(s.values) == [1.0, 2.5, 3.0]


def test_increments_accumulate_even_out_of_order():
    s = Series({})
    s.increment(10.0, 1.0)
    s.increment(30.0, 1.0)
    s.increment(30.0, 2.0)  # same timestamp: adds to the same point
    s.increment(20.0, 5.0)  # late arrival raises every later point
    assert list(s.timestamps) == [10.0, 20.0, 30.0]
    assert list(s.values) == [1.0, 6.0, 9.0]
    s.increment(5.0, 1.0)
    assert list(s.values) == [1.0, 2.0, 7.0, 10.0]


def test_trim_keeps_the_newest_sample_so_a_counter_keeps_its_total():
    store = SeriesStore(retention=100.0)
    for t in range(10):
        store.increment("c", {"a": "1"}, float(t * 10), 1.0)
    store.trim(now=150.0)  # horizon 50: samples at 0..50 go
    (series,) = list(store)
    assert list(series.timestamps) == [60.0, 70.0, 80.0, 90.0]
    assert series.values[-1] == 10.0
    store.increment("c", {"a": "1"}, 155.0, 1.0)
    assert series.values[-1] == 11.0


def test_trim_drops_series_with_nothing_recent():
    store = SeriesStore(retention=100.0)
    store.add("old", {}, 10.0, 1.0)
    store.add("new", {}, 120.0, 1.0)
    assert store.trim(now=150.0) == 1
    assert [s.labels["__name__"] for s in store] == ["new"]
    assert list(store.select([Matcher.create("__name__", "=", "old")])) == []


def test_select_by_name_and_matchers():
    store = SeriesStore(retention=300.0)
    store.add("http_requests_total", {"status": "500", "svc": "a"}, 1.0, 1.0)
    store.add("http_requests_total", {"status": "200", "svc": "a"}, 1.0, 1.0)
    store.add("http_requests_total", {"status": "503"}, 1.0, 1.0)
    store.add("other", {"status": "500"}, 1.0, 1.0)
    found = store.select(
        [
            Matcher.create("__name__", "=", "http_requests_total"),
            Matcher.create("status", "=~", "5.."),
            Matcher.create("svc", "!=", "b"),
        ]
    )
    assert sorted(s.labels["status"] for s in found) == ["500", "503"]
    # A regex must match the whole value; an absent label is the empty string.
    empty = store.select([Matcher.create("svc", "=", "")])
    assert sorted(s.labels["__name__"] for s in empty) == ["http_requests_total", "other"]
