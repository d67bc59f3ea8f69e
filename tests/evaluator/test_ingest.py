"""The evaluator's ingest core with plain calls: each entry applied once, whatever order it comes in."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from faststream.redis.parser.binary import BinaryMessageFormatV1
from prometheus_client import CollectorRegistry

from services.evaluator.ingest import PRUNE_EVERY_MS, Applied, IngestMetrics, Ingestor
from services.evaluator.series import SeriesStore
from shared.codec import (
    DATA_FIELD,
    KIND_HEADER,
    PART_HEADER,
    PoisonEntry,
    decode_entry,
    encode_batch,
    entry_part,
)
from shared.consumers import EntriesFailed, Entry

NOW = 1_800_000_000.0


async def _entry(entry_id: str, *deltas: float) -> Entry:
    items = [
        {"name": "errors_total", "labels": {}, "value": d, "kind": "increment", "timestamp": NOW}
        for d in deltas
    ]
    return Entry(entry_id.encode(), await encode_batch("metrics", orjson.dumps(items), "t"))


def _ingestor() -> Ingestor:
    return Ingestor(SeriesStore(retention=300), lambda: NOW, IngestMetrics(CollectorRegistry()))


def _total(ingestor: Ingestor) -> float:
    (series,) = list(ingestor.store)
    return series.latest(NOW, 300)[1]


async def test_an_older_entry_retried_after_newer_ones_is_still_applied():
    ingestor = _ingestor()
    ingestor.apply_entry("s", "metrics", await _entry("1000-0", 1))
    ingestor.apply_entry("s", "metrics", await _entry("3000-0", 1))
    # 2000-0 failed the first time and comes back through re-claim after 3000-0 was applied.
    late = await _entry("2000-0", 5)
    assert ingestor.apply_entry("s", "metrics", late) == [Applied(late, [])]
    assert _total(ingestor) == 7


async def test_an_entry_delivered_again_before_its_ack_is_skipped():
    ingestor = _ingestor()
    ingestor.apply_entry("s", "metrics", await _entry("1000-0", 1))
    assert ingestor.apply_entry("s", "metrics", await _entry("1000-0", 1)) is None
    assert _total(ingestor) == 1
    assert ingestor.metrics.duplicates.labels("s")._value.get() == 1


async def test_acked_and_aged_ids_are_forgotten():
    ingestor = _ingestor()
    ingestor.apply_entry("s", "metrics", await _entry("1000-0", 1))
    ingestor.apply_entry("s", "metrics", await _entry("900000-0", 1))
    ingestor.acked("s", [b"900000-0"])
    assert ingestor.applied["s"] == {b"1000-0"}
    ingestor.forget_older_than("s", 500_000)
    assert ingestor.applied["s"] == set()


async def test_aged_ids_are_swept_at_most_once_per_prune_interval():
    # The set can hold a whole replay, so a sweep per entry would cost O(n) each time.
    ingestor = _ingestor()
    ingestor.apply_entry("s", "metrics", await _entry("1000-0", 1))
    ingestor.forget_older_than("s", 500_000)
    ingestor.apply_entry("s", "metrics", await _entry("501000-0", 1))
    ingestor.forget_older_than("s", 500_000 + PRUNE_EVERY_MS - 1)
    assert ingestor.applied["s"] == {b"501000-0"}  # older than the cutoff, but swept too recently
    ingestor.forget_older_than("s", 500_000 + PRUNE_EVERY_MS)
    assert ingestor.applied["s"] == set()


class FlakyAcker:
    """Dead-lettering fails (Redis blip) for one entry; acks are recorded."""

    def __init__(self) -> None:
        self.acked: list[bytes] = []

    async def ack(self, *ids: bytes) -> None:
        self.acked.extend(ids)

    async def dead_letter(self, entry: Entry, reason: str) -> None:
        raise ConnectionError("redis went away")

    async def dead_letter_items(self, entry, bad, items) -> None:
        return None


async def test_one_failing_entry_does_not_hold_back_the_rest_of_the_batch():
    ingestor = _ingestor()
    poison = Entry(b"2000-0", {b"nonsense": b"1"})
    acker = FlakyAcker()
    handle = ingestor.handler("s", "metrics")
    with pytest.raises(EntriesFailed) as failed:
        await handle([await _entry("1000-0", 1), poison, await _entry("3000-0", 2)], acker)
    assert set(failed.value.failures) == {b"2000-0"}
    assert acker.acked == [b"1000-0", b"3000-0"]
    assert _total(ingestor) == 3


@pytest.mark.parametrize(
    "raw",
    [
        b'{"data": "x", "headers": 5}',
        b'{"data": "x", "headers": ["a"]}',
        b"\x89BIN\x00garbage",
        b"",
    ],
)
def test_odd_envelopes_are_poison_not_crashes(raw: bytes):
    with pytest.raises(PoisonEntry):
        decode_entry({b"__data__": raw})


async def _part(entry_id: str, part: tuple[int, int] | None, *deltas: float, bad: int = 0) -> Entry:
    """An entry of `deltas` as part `part` of a request (None: a whole request), with `bad` invalid items."""
    items: list[object] = [
        {"name": "errors_total", "labels": {}, "value": d, "kind": "increment", "timestamp": NOW}
        for d in deltas
    ]
    items += [{"name": "0bad", "value": 1}] * bad
    return Entry(entry_id.encode(), await encode_batch("metrics", orjson.dumps(items), "r", part))


def _applied(result: list[Applied] | None) -> list[bytes]:
    assert result is not None
    return [a.entry.id for a in result]


async def test_the_parts_of_a_request_are_applied_together_when_its_last_part_comes():
    ingestor = _ingestor()
    assert _applied(ingestor.apply_entry("s", "metrics", await _part("1-0", (1, 3), 1))) == []
    assert _applied(ingestor.apply_entry("s", "metrics", await _part("1-1", (2, 3), 2))) == []
    assert list(ingestor.store) == []  # an evaluation now sees none of the request, not a third of it
    assert ingestor.progress["s"] == (1, 1)  # held parts count as handled: catching up does not wait on them
    last = ingestor.apply_entry("s", "metrics", await _part("1-2", (3, 3), 4))
    assert _applied(last) == [b"1-0", b"1-1", b"1-2"]
    assert _total(ingestor) == 7
    assert ingestor.applied["s"] == {b"1-0", b"1-1", b"1-2"}


async def test_a_request_whose_last_part_never_came_is_applied_when_the_next_entry_comes():
    ingestor = _ingestor()
    ingestor.apply_entry("s", "metrics", await _part("1-0", (1, 3), 1))
    ingestor.apply_entry("s", "metrics", await _part("1-1", (2, 3), 2))
    # Part 3 was trimmed before it was read: the next request's first part ends the wait.
    assert _applied(ingestor.apply_entry("s", "metrics", await _part("2-0", (1, 2), 10))) == [b"1-0", b"1-1"]
    assert _total(ingestor) == 3
    assert _applied(ingestor.apply_entry("s", "metrics", await _part("2-1", (2, 2), 20))) == [b"2-0", b"2-1"]
    ingestor.apply_entry("s", "metrics", await _part("3-0", (1, 2), 100))
    # A whole entry ends the wait too, and comes after what was held.
    assert _applied(ingestor.apply_entry("s", "metrics", await _part("4-0", None, 1000))) == [b"3-0", b"4-0"]
    assert _total(ingestor) == 1133


@pytest.mark.parametrize(
    "parts",
    [
        [(2, 3)],  # a later part alone (its request's first parts were applied before a restart)
        [(1, 3), (3, 3)],  # a part missing in the middle
        [(1, 3), (2, 4)],  # parts of two requests
    ],
)
async def test_parts_out_of_sequence_are_applied_rather_than_held(parts: list[tuple[int, int]]):
    ingestor = _ingestor()
    applied = []
    for i, part in enumerate(parts):
        applied += _applied(ingestor.apply_entry("s", "metrics", await _part(f"1-{i}", part, 1)))
    # Nothing is left waiting on a part that cannot come in sequence: all of it is in the store.
    assert applied == [f"1-{i}".encode() for i in range(len(parts))]
    assert _total(ingestor) == len(parts)


# Only ASCII headers here: FastStream's envelope writes a header's length in characters, not bytes, so a
# non-ASCII one arrives cut (the digit cases are test_a_part_header_with_other_digits_or_signs_is_not_one).
@pytest.mark.parametrize("header", ["0/2", "3/2", "x/2", "1/", "1-2", ""])
async def test_a_part_header_that_is_not_one_makes_a_whole_entry(header: str):
    # Held for parts that may never come, a bad header would delay data; taken as whole, it cannot.
    envelope = await BinaryMessageFormatV1.encode(
        message=b'[{"name": "errors_total", "value": 1, "kind": "increment"}]',
        reply_to=None,
        headers={KIND_HEADER: "metrics", PART_HEADER: header},
        correlation_id="r",
    )
    entry = Entry(b"1-0", {DATA_FIELD: envelope})
    assert entry_part(decode_entry(entry.fields).headers) is None
    ingestor = _ingestor()
    assert _applied(ingestor.apply_entry("s", "metrics", entry)) == [b"1-0"]
    assert _total(ingestor) == 1


class RecordingAcker(FlakyAcker):
    """Acks, dead letters and item dead letters are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.dead_items: list[tuple[bytes, list[int]]] = []
        self.dead: list[bytes] = []

    async def dead_letter(self, entry: Entry, reason: str) -> None:
        self.dead.append(entry.id)

    async def dead_letter_items(self, entry, bad, items) -> None:
        # The items recorded are the entry's own: the bad one is found at its index there.
        assert all(items[i] == decode_entry(entry.fields).items[i] for i, _ in bad)
        assert all(items[i]["name"] == "0bad" for i, _ in bad)
        self.dead_items.append((entry.id, [i for i, _ in bad]))


async def test_held_parts_are_acked_at_once_and_their_bad_items_dead_lettered_when_applied():
    ingestor = _ingestor()
    acker = RecordingAcker()
    handle = ingestor.handler("s", "metrics")
    # A read that ends inside a request: its parts are acked (the stream tail replays them after a restart,
    # as it does applied entries) but applied only with the part that ends it, in the next read.
    await handle([await _part("1-0", None, 1), await _part("2-0", (1, 2), 2, bad=1)], acker)
    assert (acker.acked, acker.dead_items, _total(ingestor)) == ([b"1-0", b"2-0"], [], 1)
    assert ingestor.apply_entry("s", "metrics", await _part("2-0", (1, 2), 2)) is None  # delivered again
    await handle([await _part("2-1", (2, 2), 4)], acker)
    assert (acker.acked[2:], acker.dead_items, _total(ingestor)) == ([b"2-1"], [(b"2-0", [1])], 7)


@pytest.mark.parametrize("once", [False, True], ids=["multi", "lua"])
async def test_a_request_the_collector_split_reaches_the_store_whole(redis, keys, once: bool):
    # The collector's writer and the evaluator's reader agree on the mark: read one entry at a time (a read
    # boundary in every gap), the store has none of the request until it has all of it.
    from services.collector.publish import Publisher

    publisher = Publisher(redis, 1000, retry_after=1.0)
    batches = [orjson.dumps([{"name": "errors_total", "value": v, "kind": "increment"}]) for v in (1, 2, 4)]
    await publisher.publish(
        keys.metrics, "metrics", batches[0], "r", idempotency_key="k" if once else None, more=batches[1:]
    )
    ingestor = _ingestor()
    seen = []
    for entry_id, fields in await redis.xrange(keys.metrics):
        ingestor.apply_entry(keys.metrics, "metrics", Entry(entry_id, fields))
        seen.append(sum(s.latest(NOW, 300)[1] for s in ingestor.store))
    assert seen == [0, 0, 7]


async def test_a_request_that_fails_to_apply_is_applied_whole_when_its_last_part_comes_back(monkeypatch):
    # helper-44: the held parts were acked, so an error applying the request (a bug, a MemoryError) must not
    # drop them: the last part comes back through re-claim and brings them with it.
    ingestor = _ingestor()
    ingestor.apply_entry("s", "metrics", await _part("1-0", (1, 2), 1))
    real, failed = ingestor._apply_wire, []

    def failing_once(stream: str, wire: Any) -> bool:
        if not failed:
            failed.append(True)
            raise RuntimeError("a bug in the store")
        return real(stream, wire)

    monkeypatch.setattr(ingestor, "_apply_wire", failing_once)
    last = await _part("1-1", (2, 2), 2)
    with pytest.raises(RuntimeError):
        ingestor.apply_entry("s", "metrics", last)
    assert _applied(ingestor.apply_entry("s", "metrics", last)) == [b"1-0", b"1-1"]
    assert _total(ingestor) == 3


async def test_a_poison_part_releases_what_is_held_and_sinks_only_itself():
    # Parts are adjacent: after an unreadable one nothing more of its request can come, so what is held is
    # applied at once (not when some later request arrives, which on a quiet stream may be never), and a good
    # part after it is applied on its own.
    ingestor = _ingestor()
    acker = RecordingAcker()
    handle = ingestor.handler("s", "metrics")
    poison = Entry(b"1-1", {b"nonsense": b"1"})
    await handle([await _part("1-0", (1, 3), 1, bad=1), poison], acker)
    assert (acker.dead, acker.dead_items, _total(ingestor)) == ([b"1-1"], [(b"1-0", [1])], 1)
    await handle([await _part("1-2", (3, 3), 4)], acker)
    assert (acker.acked, _total(ingestor)) == ([b"1-0", b"1-2"], 5)


@pytest.mark.parametrize("older", ["1-5", "2-0"])  # "2-0": written in the same millisecond as the request
async def test_an_older_entry_back_through_reclaim_does_not_end_a_hold(older: str):
    # The re-claim task runs the same handler beside the subscriber: an entry that failed earlier, coming
    # back between a request's reads, is applied alone and the request stays whole.
    ingestor = _ingestor()
    ingestor.apply_entry("s", "metrics", await _part("2-1", (1, 2), 10))
    assert _applied(ingestor.apply_entry("s", "metrics", await _part(older, None, 1))) == [older.encode()]
    assert _total(ingestor) == 1
    assert _applied(ingestor.apply_entry("s", "metrics", await _part("2-2", (2, 2), 20))) == [b"2-1", b"2-2"]
    assert _total(ingestor) == 31


@pytest.mark.parametrize("header", ["\u00b2/2", "1/\u0662", "+1/2", " 1/2"])
def test_a_part_header_with_other_digits_or_signs_is_not_one(header: str):
    # str.isdigit takes "²" and int() refuses it: the entry would fail every delivery, good samples and all.
    assert entry_part({PART_HEADER: header}) is None


def _failing(ingestor: Ingestor, monkeypatch, bad_value: float, times: int | None = 1) -> None:
    """Make applying a batch that holds `bad_value` raise, `times` times (None: always)."""
    real, failures = ingestor._apply_wire, []

    def apply_wire(stream: str, wire: Any) -> bool:
        if any(sample.value == bad_value for sample in wire) and (times is None or len(failures) < times):
            failures.append(True)
            raise RuntimeError("a bug on this data")
        return real(stream, wire)

    monkeypatch.setattr(ingestor, "_apply_wire", apply_wire)


async def test_a_part_that_always_fails_does_not_stop_the_stream(monkeypatch):
    # helper-46: parts held again after an error were applied before every later entry, which then failed
    # too: one bad request stopped ingest for the stream. They now go with the failing entry's retry only.
    ingestor = _ingestor()
    _failing(ingestor, monkeypatch, 666, times=None)
    ingestor.apply_entry("s", "metrics", await _part("1-0", (1, 2), 666))
    last = await _part("1-1", (2, 2), 1)
    for _delivery in range(3):  # the retries re-claim makes, until the entry is dead-lettered
        with pytest.raises(RuntimeError):
            ingestor.apply_entry("s", "metrics", last)
        assert _applied(ingestor.apply_entry("s", "metrics", await _part(f"{2 + _delivery}-0", None, 10)))
    assert _total(ingestor) == 30


@pytest.mark.parametrize("path", ["a new request ends the wait", "a poison entry ends the wait"])
async def test_held_parts_that_fail_when_a_wait_ends_come_back_with_the_entry_that_ended_it(
    monkeypatch, path: str
):
    ingestor = _ingestor()
    ingestor.apply_entry("s", "metrics", await _part("1-0", (1, 3), 1))
    ingestor.apply_entry("s", "metrics", await _part("1-1", (2, 3), 2))
    _failing(ingestor, monkeypatch, 2)  # the second part fails once, after the first was applied
    if path == "a new request ends the wait":
        ending = await _part("2-0", (1, 2), 10)
        with pytest.raises(RuntimeError):
            ingestor.apply_entry("s", "metrics", ending)
        assert _applied(ingestor.apply_entry("s", "metrics", ending)) == [b"1-1"]  # back through re-claim
        ingestor.apply_entry("s", "metrics", await _part("2-1", (2, 2), 20))
    else:
        with pytest.raises(RuntimeError):
            ingestor.release("s", "metrics", b"2-0")
        assert _applied(ingestor.release("s", "metrics", b"2-0")) == [b"1-1"]  # its retry, poison again
        ingestor.apply_entry("s", "metrics", await _part("2-1", None, 30))
    assert _total(ingestor) == 33  # the first part once, not again with the second


async def test_replay_goes_on_past_a_poison_entry_whose_release_fails(redis, keys, monkeypatch):
    # helper-46: the release ran inside `except PoisonEntry`, outside the guard that keeps one odd entry from
    # stopping the evaluator from starting: it would crash on every restart.
    from services.evaluator.replay import replay_tail

    await redis.xadd(keys.metrics, (await _part("0-0", (1, 2), 1)).fields)
    await redis.xadd(keys.metrics, {b"nonsense": b"1"})
    await redis.xadd(keys.metrics, (await _part("0-0", None, 5)).fields)
    await redis.xgroup_create(keys.metrics, "evaluator", id="$")
    ingestor = _ingestor()
    released = []

    def failing_release(stream: str, kind: str, entry_id: bytes) -> list[Applied]:
        released.append(entry_id)
        raise RuntimeError("a bug on this data")

    monkeypatch.setattr(ingestor, "release", failing_release)
    assert await replay_tail(redis, ingestor, keys.metrics, "metrics", "evaluator", 3600) == 2
    assert len(released) == 1


async def test_a_part_stashed_with_one_entry_and_delivered_again_alone_is_applied_once(monkeypatch):
    # helper-47: X is stashed under Z when applying [X, Z] fails; re-claim then delivers X (applied with what
    # failed with it) and Z, whose stash holds X again: its +10 was counted twice.
    ingestor = _ingestor()
    ingestor.apply_entry("s", "metrics", await _part("1-0", (1, 2), 1))
    _failing(ingestor, monkeypatch, 1)
    x = await _part("2-0", (1, 2), 10)
    with pytest.raises(RuntimeError):
        ingestor.apply_entry("s", "metrics", x)  # ends 1-0's wait, which fails: 1-0 stashed under X
    _failing(ingestor, monkeypatch, 10)
    z = await _part("3-0", None, 100)
    with pytest.raises(RuntimeError):
        ingestor.apply_entry("s", "metrics", z)  # ends X's wait, which fails: X stashed under Z
    assert _applied(ingestor.apply_entry("s", "metrics", x)) == [b"1-0", b"2-0"]
    assert _applied(ingestor.apply_entry("s", "metrics", z)) == [b"3-0"]
    assert _total(ingestor) == 111


async def test_an_older_poison_entry_back_through_reclaim_keeps_a_newer_hold():
    ingestor = _ingestor()
    ingestor.apply_entry("s", "metrics", await _part("2-0", (1, 2), 10))
    assert ingestor.release("s", "metrics", b"1-5") == []  # its dead-letter had failed; now it comes back
    assert list(ingestor.store) == []
    assert _applied(ingestor.apply_entry("s", "metrics", await _part("2-1", (2, 2), 20))) == [b"2-0", b"2-1"]


async def _items_part(kind: str, entry_id: str, part: tuple[int, int], items: int) -> Entry:
    """An entry of `items` valid items of stream kind `kind` as part `part` of a request."""
    item: dict[str, object] = (
        {"name": "errors_total", "labels": {}, "value": 1, "kind": "increment", "timestamp": NOW}
        if kind == "metrics"
        else {"service": "api", "level": "error", "timestamp": NOW}
    )
    return Entry(entry_id.encode(), await encode_batch(kind, orjson.dumps([item] * items), "r", part))


@pytest.mark.parametrize("kind", ["metrics", "logs"])
async def test_parts_stashed_with_an_entry_never_retried_are_counted_and_logged(
    monkeypatch, caplog, kind: str
):
    ingestor = _ingestor()
    ingestor.apply_entry("s", kind, await _items_part(kind, "1-0", (1, 2), 3))

    def failing(*args: Any) -> Any:
        raise RuntimeError("a bug in the store")

    monkeypatch.setattr(ingestor, "_apply_wire", failing)  # metrics
    monkeypatch.setattr(ingestor, "apply_items", failing)  # logs
    with pytest.raises(RuntimeError):
        ingestor.apply_entry("s", kind, await _items_part(kind, "1-1", (2, 2), 1))
    # The entry is dead-lettered after its deliveries, without the ingestor: the window passes its parts by.
    ingestor.forget_older_than("s", 900_000)
    lost = ingestor.metrics.dropped.labels("s", "failed_with_entry")._value.get()
    assert lost == 3  # the items of the part that was acked, not the failing entry's own (in the DLQ)
    (record,) = [r for r in caplog.records if "never retried" in r.getMessage()]
    assert (record.stream, record.entry_id, record.parts) == ("s", "1-1", ["1-0"])  # where to look
    assert not ingestor._stashed


async def test_a_part_stashed_with_an_entry_but_applied_and_acked_with_another_is_applied_once(monkeypatch):
    # The scenario of the test above through the handler, with X and Z re-claimed in separate reads: X's ack
    # makes the ingestor forget X, so Z's stash (which still held X) applied it a second time.
    ingestor = _ingestor()
    acker = RecordingAcker()
    handle = ingestor.handler("s", "metrics")
    await handle([await _part("1-0", (1, 2), 1)], acker)
    _failing(ingestor, monkeypatch, 1)
    x = await _part("2-0", (1, 2), 10)
    with pytest.raises(EntriesFailed):
        await handle([x], acker)  # ends 1-0's wait, which fails: 1-0 stashed under X
    _failing(ingestor, monkeypatch, 10)
    z = await _part("3-0", None, 100)
    with pytest.raises(EntriesFailed):
        await handle([z], acker)  # ends X's wait, which fails: X stashed under Z
    await handle([x], acker)  # re-claim: X, applied with 1-0, and acked
    assert not ingestor._stashed  # Z's stash owes nothing now (dead-lettered, it would count X as lost)
    await handle([z], acker)  # re-claim, a later round: Z
    assert (acker.acked, _total(ingestor)) == ([b"1-0", b"2-0", b"3-0"], 111)
    assert not ingestor._stashed


async def test_held_parts_that_fail_again_stay_with_the_held_entry_that_ended_their_wait(monkeypatch):
    # 2-0 ends 1-0's wait and is held itself: its deliveries again are duplicates that bring the stash along,
    # and a second failure must keep the stash under 2-0, for its next delivery.
    ingestor = _ingestor()
    ingestor.apply_entry("s", "metrics", await _part("1-0", (1, 2), 1))
    _failing(ingestor, monkeypatch, 1, times=2)
    ending = await _part("2-0", (1, 2), 10)
    for _delivery in range(2):
        with pytest.raises(RuntimeError):
            ingestor.apply_entry("s", "metrics", ending)
    assert _applied(ingestor.apply_entry("s", "metrics", ending)) == [b"1-0"]
    ingestor.apply_entry("s", "metrics", await _part("2-1", (2, 2), 20))
    assert _total(ingestor) == 31


async def test_parts_stashed_with_a_poison_entry_come_back_with_its_delivery_again(monkeypatch):
    # Its release failed: the held part is stashed under the poison entry, and re-claim delivers that entry
    # to the handler again, where decoding it fails before the release that applies what failed with it.
    ingestor = _ingestor()
    acker = RecordingAcker()
    handle = ingestor.handler("s", "metrics")
    await handle([await _part("1-0", (1, 2), 1)], acker)
    _failing(ingestor, monkeypatch, 1)
    poison = Entry(b"1-1", {b"nonsense": b"1"})
    with pytest.raises(EntriesFailed):
        await handle([poison], acker)
    await handle([poison], acker)
    assert (acker.dead, _total(ingestor)) == ([b"1-1"], 1)


async def test_a_poison_entry_in_a_read_is_released_under_its_own_id(monkeypatch):
    # The release fails: what it held is stashed under the poison entry (and comes back with its retry), not
    # under the read's first entry (acked: lost) nor its last (applied with it: half of a request seen).
    ingestor = _ingestor()
    acker = RecordingAcker()
    handle = ingestor.handler("s", "metrics")
    _failing(ingestor, monkeypatch, 1)
    poison = Entry(b"1-1", {b"nonsense": b"1"})
    with pytest.raises(EntriesFailed):
        await handle([await _part("1-0", (1, 2), 1), poison, await _part("2-0", (1, 2), 10)], acker)
    assert list(ingestor.store) == []
    await handle([poison], acker)  # re-claim
    assert (acker.dead, _total(ingestor)) == ([b"1-1"], 1)
    await handle([await _part("2-1", (2, 2), 20)], acker)
    assert _total(ingestor) == 31


async def test_replay_applies_what_is_held_when_a_poison_entry_ends_it(redis, keys):
    # After the tail the group may deliver nothing for a long time: the part must not wait for the next entry.
    from services.evaluator.replay import replay_tail

    await redis.xadd(keys.metrics, (await _part("0-0", (1, 2), 1)).fields)
    await redis.xadd(keys.metrics, {b"nonsense": b"1"})
    await redis.xgroup_create(keys.metrics, "evaluator", id="$")
    ingestor = _ingestor()
    assert await replay_tail(redis, ingestor, keys.metrics, "metrics", "evaluator", 3600) == 1
    assert _total(ingestor) == 1


async def test_parts_applied_before_a_failure_are_not_stashed_with_the_failing_entry(monkeypatch):
    # 1-0 is applied, then 1-1 fails; 1-0's ack makes the ingestor forget it, so stashed it would be applied
    # again with 1-1's retry.
    ingestor = _ingestor()
    acker = RecordingAcker()
    handle = ingestor.handler("s", "metrics")
    _failing(ingestor, monkeypatch, 2)
    last = await _part("1-1", (2, 2), 2)
    with pytest.raises(EntriesFailed):
        await handle([await _part("1-0", (1, 2), 1), last], acker)
    await handle([last], acker)  # re-claim
    assert (acker.acked, _total(ingestor)) == ([b"1-0", b"1-1"], 3)


@pytest.mark.parametrize("hold", [False, True], ids=["alone", "during a hold"])
async def test_an_entry_that_fails_on_its_own_leaves_nothing_stashed(monkeypatch, caplog, hold: bool):
    # Nothing acked failed with it: dead-lettered after its deliveries, nothing is counted or logged as lost.
    ingestor = _ingestor()
    if hold:
        ingestor.apply_entry("s", "metrics", await _part("2-0", (1, 2), 10))
    _failing(ingestor, monkeypatch, 1, times=None)
    with pytest.raises(RuntimeError):
        ingestor.apply_entry("s", "metrics", await _part("1-5", None, 1))
    assert not ingestor._stashed
    ingestor.forget_older_than("s", 900_000)
    assert "never retried" not in caplog.text


async def test_a_stash_is_pruned_once_its_entry_is_out_of_the_window_and_on_its_own_stream(monkeypatch):
    ingestor = _ingestor()
    _failing(ingestor, monkeypatch, 1, times=2)
    for stream in ("s", "t"):
        ingestor.apply_entry(stream, "metrics", await _part("900000-0", (1, 2), 1))
        with pytest.raises(RuntimeError):
            ingestor.apply_entry(stream, "metrics", await _part("900000-1", (2, 2), 2))
    ingestor.forget_older_than("s", 900_000)  # entries of 900000 ms are not older than that yet
    ingestor.forget_older_than("t", 900_001)
    assert list(ingestor._stashed) == [("s", b"900000-1")]
    dropped = ingestor.metrics.dropped
    lost = [dropped.labels(s, "failed_with_entry")._value.get() for s in ("s", "t")]
    assert lost == [0, 1]
    retried = ingestor.apply_entry("s", "metrics", await _part("900000-1", (2, 2), 2))
    assert _applied(retried) == [b"900000-0", b"900000-1"]


async def test_an_entry_applied_on_another_stream_leaves_a_stash_alone(monkeypatch):
    # Ids are per stream: an entry of another stream can have the id of a stashed part.
    ingestor = _ingestor()
    _failing(ingestor, monkeypatch, 1)
    ingestor.apply_entry("s", "metrics", await _part("1-0", (1, 2), 1))
    last = await _part("1-1", (2, 2), 2)
    with pytest.raises(RuntimeError):
        ingestor.apply_entry("s", "metrics", last)  # 1-0 stashed under 1-1
    ingestor.apply_entry("t", "metrics", await _part("1-0", None, 100))
    assert _applied(ingestor.apply_entry("s", "metrics", last)) == [b"1-0", b"1-1"]
