"""tripwire's own flag store (shared/flag_store.py) as a kill-switch provider: the flag is a key in Redis,
served to applications by the OpenFeature provider in shared/openfeature_provider.py, which hears every change
over pub/sub. `environment` and `project` are not used: the key alone names the flag."""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from services.notifier.flag_providers import FlagState, FlagTarget, ProviderError
from shared.flag_store import FlagRecord, FlagStore


def _summary(record: FlagRecord) -> dict[str, Any]:
    return {"enabled": record.enabled, "version": record.version, "updated_by": record.updated_by}


class BuiltinProvider:
    name = "builtin"

    def __init__(self, store: FlagStore | None) -> None:
        self._store = store  # None where there is no Redis (`tripwire receivers test`)

    @property
    def store(self) -> FlagStore:
        if self._store is None:
            raise ProviderError("the built-in flag store needs the notifier's Redis", retryable=False)
        return self._store

    async def read(self, target: FlagTarget) -> FlagState:
        try:
            record = await self.store.get(target.flag)
        except ValueError as exc:
            raise ProviderError(str(exc), retryable=False) from None
        except RedisError as exc:
            raise ProviderError(f"flag store unreachable: {exc}", retryable=True) from None
        # A flag never set is on by the app's default as far as we know: None, so turning it off proceeds.
        return FlagState(
            None if record is None else record.enabled, {} if record is None else _summary(record)
        )

    async def _set(self, target: FlagTarget, enabled: bool, comment: str, actor: str) -> dict[str, Any]:
        try:
            record = await self.store.set(target.flag, enabled, actor=actor, reason=comment[:500])
        except ValueError as exc:
            raise ProviderError(str(exc), retryable=False) from None
        except RedisError as exc:
            raise ProviderError(f"flag store unreachable: {exc}", retryable=True) from None
        return _summary(record)

    async def turn_off(self, target: FlagTarget, *, comment: str, actor: str) -> dict[str, Any]:
        return await self._set(target, False, comment, actor)

    async def turn_on(self, target: FlagTarget, *, comment: str, actor: str) -> dict[str, Any]:
        return await self._set(target, True, comment, actor)
