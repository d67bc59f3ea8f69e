"""Stream names and other Redis keys, all under one configurable prefix.

Every key carries a Redis Cluster hash tag (`{metrics}`, `{alerts}`, ...) so that a transaction touching a
stream, its dead-letter queue and the state written with it stays in one slot when scale-out moves to a
cluster. The contract's logical stream `tripwire:metrics` is therefore the Redis key `tripwire:{metrics}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from redis.asyncio import Redis

from shared.codec import encode_batch

EVALUATOR_GROUP = "evaluator"
NOTIFIER_GROUP = "notifier"


@dataclass(frozen=True, slots=True)
class Keys:
    """All Redis keys tripwire uses, for one prefix (tests use a prefix each for isolation)."""

    prefix: str = "tripwire"

    def _tagged(self, tag: str) -> str:
        return f"{self.prefix}:{{{tag}}}"

    @property
    def metrics(self) -> str:
        return self._tagged("metrics")

    @property
    def logs(self) -> str:
        return self._tagged("logs")

    @property
    def alerts(self) -> str:
        return self._tagged("alerts")

    @property
    def audit(self) -> str:
        return self._tagged("audit")

    @staticmethod
    def dlq(stream: str) -> str:
        """The dead-letter stream of `stream` (same hash tag, so move-and-ack is one transaction)."""
        return f"{stream}:dlq"

    @property
    def flags(self) -> str:
        """The built-in flag store: flag key -> JSON state (enabled, who, when, why, version)."""
        return f"{self._tagged('flags')}:state"

    @property
    def flag_changes(self) -> str:
        """Pub/sub channel announcing every flag change (the flag key and its new state), for app caches."""
        return f"{self._tagged('flags')}:changes"

    @property
    def flag_history(self) -> str:
        """Every change of a built-in flag, as a stream (who, when, why, from and to)."""
        return f"{self._tagged('flags')}:history"

    @property
    def notifications_dlq(self) -> str:
        """Notifications that could not be delivered (the contract's `tripwire:dlq:notifications`), with the
        reason and the payload; in the alerts slot like the notification log."""
        return f"{self._tagged('alerts')}:dlq:notifications"

    def rule_state(self, group_key: str) -> str:
        """Evaluator alert state of one rule group; tagged like the alerts stream so state and the alerts it
        produced are written in one MULTI."""
        return f"{self._tagged('alerts')}:rule-state:{group_key}"

    @property
    def evaluator_lease(self) -> str:
        """Which evaluator replica is active (`<id>:<token>`, with a TTL); tagged like the state it fences."""
        return f"{self._tagged('alerts')}:evaluator-lease"

    @property
    def evaluator_lease_token(self) -> str:
        """A counter that gives every lease acquisition a larger fencing token."""
        return f"{self._tagged('alerts')}:evaluator-lease-token"

    def notification_log(self, receiver: str) -> str:
        """What the notifier last sent per group, for one receiver and integration. Kept in the alerts
        stream's slot so a later change can record and ack in one transaction; today they are two writes,
        recorded first, so a crash between them re-reads the entry and dedup finds it already sent."""
        return f"{self._tagged('alerts')}:nflog:{receiver}"

    @property
    def current_alerts(self) -> str:
        """The notifier's view of every alert it has received (fingerprint -> newest version), for its API."""
        return f"{self._tagged('alerts')}:current"

    @property
    def silences(self) -> str:
        """Every silence (id -> JSON), shared by the notifier replicas."""
        return f"{self._tagged('alerts')}:silences"


def entry_order(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id (`<ms>-<seq>`) as a pair that sorts as Redis orders entries."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


async def append_batch(
    redis: Redis,
    stream: str,
    kind: str,
    items_json: bytes,
    correlation_id: str,
    maxlen: int,
    more: Sequence[bytes] = (),
) -> str:
    """XADD one batch entry (one round trip), capping the stream with `MAXLEN ~`; returns the entry id.
    With `more` batches of the same request, they follow it in one MULTI (all or none, adjacent, each
    marked as part `i/n` of the request), and the last entry's id is returned."""
    if not more:
        fields = await encode_batch(kind, items_json, correlation_id)
        entry_id = await redis.xadd(stream, fields, maxlen=maxlen, approximate=True)
    else:
        async with redis.pipeline(transaction=True) as pipe:
            for batch in await _parts(kind, [items_json, *more], correlation_id):
                pipe.xadd(stream, batch, maxlen=maxlen, approximate=True)
            entry_id = (await pipe.execute())[-1]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


# Append unless this idempotency key was used: the key lives beside the stream (same hash tag, same slot)
# and remembers the entry id and the answer given, so a retry of a request whose answer was lost gets the
# same entry and the same answer back. Stored as `<entry id>\n<answer>`; a bare entry id is a record from
# before answers were kept.
# Batches after the first (ARGV[6..]) are the rest of one request, appended after it in the same call.
_APPEND_ONCE = """
local existing = redis.call('GET', KEYS[2])
if existing then
  return {0, existing}
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', ARGV[2], ARGV[3])
for i = 6, #ARGV do
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', ARGV[2], ARGV[i])
end
redis.call('SET', KEYS[2], id .. '\\n' .. ARGV[5], 'PX', ARGV[4])
return {1, id}
"""


async def _parts(kind: str, batches: list[bytes], correlation_id: str) -> list[dict[bytes, bytes]]:
    """The entries of one request: one whole entry, or `i/n` parts when it is stored as several."""
    if len(batches) == 1:
        return [await encode_batch(kind, batches[0], correlation_id)]
    count = len(batches)
    return [await encode_batch(kind, b, correlation_id, (i, count)) for i, b in enumerate(batches, start=1)]


class StoredBatch(NamedTuple):
    """What an idempotent append stored, or found stored under its key."""

    entry_id: str
    appended: bool  # False: found, stored by an earlier request with this key
    answer: bytes  # what the appender asked to remember with it (b"" for records without one)


def _request_key(stream: str, idempotency_key: str) -> str:
    return f"{stream}:request:{idempotency_key}"


def _stored(appended: bool, record: bytes | str) -> StoredBatch:
    raw = record.encode() if isinstance(record, str) else record
    entry_id, _, answer = raw.partition(b"\n")
    return StoredBatch(entry_id.decode(), appended, answer)


async def append_batch_once(
    redis: Redis,
    stream: str,
    kind: str,
    items_json: bytes,
    correlation_id: str,
    idempotency_key: str,
    maxlen: int,
    remember_for: float = 3600.0,
    answer: bytes = b"",
    more: Sequence[bytes] = (),
) -> StoredBatch:
    """Like append_batch, but at most once per `idempotency_key` within `remember_for` seconds (one round
    trip, atomic, `more` batches included). `answer` is kept with the (last) entry id, so that a replay is
    answered as the original was."""
    first, *others = await _parts(kind, [items_json, *more], correlation_id)
    [(field, value)] = first.items()
    rest = [fields[field] for fields in others]
    appended, record = await redis.eval(
        _APPEND_ONCE,
        2,
        stream,
        _request_key(stream, idempotency_key),
        maxlen,
        field,
        value,
        max(1, round(remember_for * 1000)),
        answer,
        *rest,
    )
    if appended:
        return StoredBatch(record.decode() if isinstance(record, bytes) else str(record), True, answer)
    return _stored(False, record)


async def recall_batch(redis: Redis, stream: str, idempotency_key: str) -> StoredBatch | None:
    """What append_batch_once stored under `idempotency_key`, if it is still remembered (no append)."""
    record = await redis.get(_request_key(stream, idempotency_key))
    return None if record is None else _stored(False, record)
