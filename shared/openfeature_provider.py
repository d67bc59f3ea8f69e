"""An OpenFeature provider serving tripwire's built-in flags to applications.

    from openfeature import api
    from shared.openfeature_provider import TripwireProvider

    api.set_provider(TripwireProvider("redis://redis:6379/0", prefix="tripwire"))
    if api.get_client().get_boolean_value("checkout.new-flow", True):
        ...

Resolution is a dict lookup in a local cache, never a Redis round trip, so evaluating a flag in a hot path
costs microseconds and keeps working while Redis is away. The cache is filled at `initialize` (which
OpenFeature calls on `set_provider`) and kept current by a listener subscribed to the flag changes channel:
a kill switch flipped by the notifier reaches the app within milliseconds.

The listener is a daemon thread with its own *synchronous* redis-py connection, not an asyncio task: most
applications that read flags are not asyncio programs (Django, Flask, workers), and OpenFeature's resolve
API is synchronous. A thread works the same in both worlds and never competes with an app's event loop.

Failure behaviour (an application must never fail because tripwire's Redis is down):

* Redis unreachable, flag seen before: the last known value, reason STALE.
* Redis unreachable, flag never seen: the caller's default, reason ERROR, error code GENERAL.
* Redis reachable, flag unknown: the caller's default, error code FLAG_NOT_FOUND.
* Any non-boolean evaluation: the caller's default, error code TYPE_MISMATCH (tripwire flags are booleans).

On every (re)connection the listener subscribes first and then reloads every flag, so no change published
while it was away (or while it was loading) is missed. Flags carry a version; a message older than the
cache is checked against Redis instead of applied. The listener pings its connection, so a silently dead
connection (no FIN) is noticed within `2 * ping_interval`. Provider events: CONFIGURATION_CHANGED with the
changed keys on every change, STALE (or ERROR, with nothing cached) when Redis is lost, READY when it is back.
The evaluation context is ignored: tripwire flags are global on/off switches with no targeting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import redis
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagMetadata, FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata, ProviderStatus
from pydantic import ValidationError
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.flag_store import FlagRecord, parse_record
from shared.streams import Keys

log = logging.getLogger(__name__)

T = TypeVar("T")
PROVIDER_NAME = "tripwire"


@dataclass(frozen=True, slots=True)
class _Cached:
    enabled: bool
    version: int
    metadata: FlagMetadata


def _cached(record: FlagRecord) -> _Cached:
    return _Cached(
        record.enabled, record.version, {"version": record.version, "updated_at": record.updated_at}
    )


def _state(flag: _Cached | None) -> bool | None:
    return None if flag is None else flag.enabled


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Session:
    """One pub/sub session. redis-py silently reconnects (and resubscribes) a pubsub connection when its
    retry policy allows; this hook notices that, because messages published in between are lost and the
    cache must be reloaded. redis-py keeps connect callbacks as weak methods, so it dies with the session."""

    def __init__(self) -> None:
        self.reconnected = False

    def on_connect(self, _connection: object) -> None:
        self.reconnected = True


class TripwireProvider(AbstractProvider):
    """OpenFeature provider for tripwire's built-in boolean flags (see the module docstring)."""

    def __init__(
        self,
        redis_url_or_client: str | redis.Redis,
        prefix: str = "tripwire",
        *,
        init_timeout: float = 5.0,
        ping_interval: float = 5.0,
        retry_min: float = 0.05,
        retry_max: float = 1.0,
        poll_interval: float = 0.2,
    ) -> None:
        """`redis_url_or_client`: a redis URL (the provider owns and closes that client) or a sync redis-py
        client (borrowed; its pool lends the listener a connection). `prefix`: tripwire's key prefix.
        `init_timeout`: how long `initialize` waits for the first load before serving defaults (it never
        raises). `retry_min`/`retry_max`: reconnection backoff bounds. `poll_interval`: how often the
        listener checks for `shutdown` between messages (changes themselves wake it at once)."""
        super().__init__()
        if isinstance(redis_url_or_client, str):
            # No retries inside redis-py: a lost connection must surface at once so that the cache is
            # marked stale and fully reloaded on reconnection; the listener does its own backoff.
            self._client = redis.Redis.from_url(
                redis_url_or_client,
                socket_connect_timeout=2.0,
                socket_timeout=5.0,
                socket_keepalive=True,
                retry=Retry(NoBackoff(), 0),
                client_name="tripwire-openfeature",
            )
            self._owns_client = True
        else:
            self._client = redis_url_or_client
            self._owns_client = False
        self._keys = Keys(prefix=prefix)
        self._init_timeout = init_timeout
        self._ping_interval = ping_interval
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._poll_interval = poll_interval
        # The cache: read by any thread, written only by the listener thread. Replacing the dict reference
        # or one of its items is atomic, so readers need no lock.
        self._flags: dict[str, _Cached] = {}
        self._live = False
        self._last_error = "not loaded yet"
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._first_attempt = threading.Event()
        # The status the SDK believes: it marks READY itself when `initialize` returns.
        self._reported = ProviderStatus.READY
        self._lifecycle = threading.Lock()

    # Lifecycle -------------------------------------------------------------------------------------------
    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Start the listener and wait (up to `init_timeout`) for its first load. Never raises: if Redis is
        unreachable the provider serves defaults (reason ERROR) until the listener connects."""
        with self._lifecycle:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = threading.Event()
            self._first_attempt = threading.Event()
            self._reported = ProviderStatus.READY
            self._thread = threading.Thread(
                target=self._listen, args=(self._stop,), name="tripwire-flags-listener", daemon=True
            )
            self._thread.start()
        if not self._first_attempt.wait(self._init_timeout) or not self._live:
            log.warning("tripwire flags not loaded at startup (%s); serving defaults", self._last_error)

    def shutdown(self) -> None:
        """Stop the listener (within about `poll_interval`) and close the client if the provider made it.
        Idempotent; the cache is kept but reported stale."""
        with self._lifecycle:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None:
            thread.join(timeout=10)
            if thread.is_alive():
                log.warning("tripwire flags listener did not stop within 10s")
        self._live = False
        if self._owns_client:
            self._client.close()

    def get_metadata(self) -> Metadata:
        return Metadata(name=PROVIDER_NAME)

    @property
    def live(self) -> bool:
        """True while the cache is loaded and kept current by a connected listener."""
        return self._live

    # Resolution ------------------------------------------------------------------------------------------
    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        """The flag from the local cache: STATIC while live, STALE while Redis is unreachable."""
        flag = self._flags.get(flag_key)
        live = self._live
        if flag is not None:
            return FlagResolutionDetails(
                value=flag.enabled,
                reason=Reason.STATIC if live else Reason.STALE,
                variant="on" if flag.enabled else "off",
                flag_metadata=flag.metadata,
            )
        if live:
            return FlagResolutionDetails(
                value=default_value,
                reason=Reason.ERROR,
                error_code=ErrorCode.FLAG_NOT_FOUND,
                error_message=f"flag {flag_key!r} is not defined in tripwire",
            )
        return FlagResolutionDetails(
            value=default_value,
            reason=Reason.ERROR,
            error_code=ErrorCode.GENERAL,
            error_message=f"tripwire flags unavailable ({self._last_error}) and {flag_key!r} never seen",
        )

    def _mismatch(self, flag_key: str, default_value: T, kind: str) -> FlagResolutionDetails[T]:
        return FlagResolutionDetails(
            value=default_value,
            reason=Reason.ERROR,
            error_code=ErrorCode.TYPE_MISMATCH,
            error_message=f"tripwire flags are boolean; {flag_key!r} was requested as {kind}",
        )

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._mismatch(flag_key, default_value, "a string")

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._mismatch(flag_key, default_value, "an integer")

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        return self._mismatch(flag_key, default_value, "a float")

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._mismatch(flag_key, default_value, "an object")

    # The listener ----------------------------------------------------------------------------------------
    def _listen(self, stop: threading.Event) -> None:
        backoff = self._retry_min
        first = True
        while not stop.is_set():
            session = _Session()
            pubsub = self._client.pubsub()
            try:
                if not self._subscribe(pubsub, session, stop):
                    break  # stopped while subscribing
                self._reload(announce=not first)
                backoff = self._retry_min
                first = self._finish_first(first)
                self._pump(pubsub, session, stop)
            except Exception as exc:  # any failure: the loop must survive to reconnect
                self._lost(exc, announce=not first)
                first = self._finish_first(first)
            finally:
                if pubsub.connection is not None:
                    pubsub.connection.deregister_connect_callback(session.on_connect)
                try:
                    pubsub.close()
                except Exception:  # closing a broken connection may fail; nothing to do about it
                    log.debug("closing the flags pubsub failed", exc_info=True)
            stop.wait(backoff)
            backoff = min(backoff * 2, self._retry_max)
        self._live = False

    def _finish_first(self, first: bool) -> bool:
        if first:
            self._first_attempt.set()
        return False

    def _subscribe(self, pubsub: Any, session: _Session, stop: threading.Event) -> bool:
        """Subscribe and wait for Redis to confirm: only then is a load guaranteed to miss no change.
        False if stopped first."""
        pubsub.subscribe(self._keys.flag_changes)
        pubsub.connection.register_connect_callback(session.on_connect)
        deadline = time.monotonic() + max(self._init_timeout, 1.0)
        while not stop.is_set():
            message = pubsub.get_message(timeout=self._poll_interval)
            if message is not None and message["type"] == "subscribe":
                return True
            if time.monotonic() > deadline:
                raise TimeoutError("no subscription confirmation from Redis")
        return False

    def _pump(self, pubsub: Any, session: _Session, stop: threading.Event) -> None:
        """Apply change messages until stopped or the connection is lost (raises)."""
        last_heard = last_ping = time.monotonic()
        while not stop.is_set():
            message = pubsub.get_message(timeout=self._poll_interval)
            now = time.monotonic()
            if session.reconnected:
                raise ConnectionError(
                    "the pubsub connection was re-established; changes may have been missed"
                )
            if message is not None:
                last_heard = now
                if message["type"] == "message":
                    self._apply(message["data"])
            if now - last_heard > 2 * self._ping_interval:
                raise ConnectionError(f"no answer from Redis for {now - last_heard:.1f}s")
            if now - last_ping >= self._ping_interval:
                pubsub.ping()  # the pong arrives as a message and proves the connection alive
                last_ping = now

    def _reload(self, *, announce: bool) -> None:
        """Replace the cache with every flag in Redis and go live (announcing what changed, and READY)."""
        raw = self._client.hgetall(self._keys.flags)
        fresh: dict[str, _Cached] = {}
        for field, value in raw.items():
            key = _text(field)
            try:
                fresh[key] = _cached(parse_record(key, value))
            except (ValueError, ValidationError) as exc:
                log.warning("skipping unreadable tripwire flag %r: %s", key, exc)
        old, self._flags = self._flags, fresh
        self._live = True
        if not announce:
            return
        if self._reported != ProviderStatus.READY:
            log.info("tripwire flags reconnected; %d flags loaded", len(fresh))
            self._emit(ProviderEvent.PROVIDER_READY, ProviderEventDetails())
            self._reported = ProviderStatus.READY
        changed = sorted(
            key for key in old.keys() | fresh.keys() if _state(old.get(key)) != _state(fresh.get(key))
        )
        if changed:
            self._emit(
                ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, ProviderEventDetails(flags_changed=changed)
            )

    def _apply(self, data: bytes | str) -> None:
        """Apply one change message; one that is not newer than the cache is checked against Redis (it may
        be a late duplicate, or the store may have been wiped and restarted its versions)."""
        try:
            change = orjson.loads(data)
            key, enabled, version = change["key"], change["enabled"], int(change["version"])
            at = float(change["at"])
            if not isinstance(key, str) or not isinstance(enabled, bool):
                raise TypeError("key must be a string and enabled a bool")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable tripwire flag change %r: %s", data, exc)
            return
        cached = self._flags.get(key)
        if cached is None or version > cached.version:
            fresh: _Cached | None = _Cached(enabled, version, {"version": version, "updated_at": at})
        else:
            raw = self._client.hget(self._keys.flags, key)
            try:
                fresh = None if raw is None else _cached(parse_record(key, raw))
            except (ValueError, ValidationError) as exc:
                log.warning("ignoring unreadable tripwire flag %r: %s", key, exc)
                return
        if fresh is None:
            self._flags.pop(key, None)
        else:
            self._flags[key] = fresh
        if _state(cached) != _state(fresh):
            self._emit(
                ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, ProviderEventDetails(flags_changed=[key])
            )

    def _lost(self, exc: Exception, *, announce: bool) -> None:
        was_live, self._live = self._live, False
        self._last_error = f"{type(exc).__name__}: {exc}"
        if was_live:
            log.warning("tripwire flags: lost Redis (%s); serving cached values", self._last_error)
        # The first attempt runs inside `initialize`; the SDK marks the provider READY when it returns, so an
        # event now would be overwritten. The next failed attempt reports it.
        if not announce:
            return
        status = ProviderStatus.STALE if self._flags else ProviderStatus.ERROR
        if status != self._reported:
            if status == ProviderStatus.STALE:
                self._emit(ProviderEvent.PROVIDER_STALE, ProviderEventDetails(message=self._last_error))
            else:
                self._emit(
                    ProviderEvent.PROVIDER_ERROR,
                    ProviderEventDetails(message=self._last_error, error_code=ErrorCode.GENERAL),
                )
            self._reported = status

    def _changed(self, keys: list[str]) -> None:
        self._emit(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, ProviderEventDetails(flags_changed=keys))

    def _emit(self, event: ProviderEvent, details: ProviderEventDetails) -> None:
        try:
            self.emit(event, details)
        except Exception:  # an application's event handler must not kill the listener
            log.exception("an OpenFeature event handler failed on %s", event.value)
