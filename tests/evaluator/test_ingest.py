"""The evaluator's ingest core with plain calls: each entry applied once, whatever order it comes in."""

from __future__ import annotations

import orjson
import pytest
from prometheus_client import CollectorRegistry

from services.evaluator.ingest import IngestMetrics, Ingestor
from services.evaluator.series import SeriesStore
from shared.codec import PoisonEntry, decode_entry, encode_batch
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
    assert ingestor.apply_entry("s", "metrics", await _entry("2000-0", 5)) == []
    assert _total(ingestor) == 7


async def test_an_entry_delivered_again_before_its_ack_is_skipped():
    ingestor = _ingestor()
    ingestor.apply_entry("s", "metrics", await _entry("1000-0", 1))
    assert ingestor.apply_entry("s", "metrics", await _entry("1000-0", 1)) is None
    assert _total(ingestor) == 1


async def test_acked_and_aged_ids_are_forgotten():
    ingestor = _ingestor()
    ingestor.apply_entry("s", "metrics", await _entry("1000-0", 1))
    ingestor.apply_entry("s", "metrics", await _entry("900000-0", 1))
    ingestor.acked("s", [b"900000-0"])
    assert ingestor.applied["s"] == {b"1000-0"}
    ingestor.forget_older_than("s", 500_000)
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
