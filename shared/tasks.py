"""Stopping background tasks for certain.

`task.cancel()` followed by `await task` is not enough: redis-py 8.1 swallows a cancel that lands inside a
pipeline (measured: ~40-80% of cancels delivered mid-`MULTI`/`EXEC` were lost), after which the loop simply
goes round again and `await task` waits forever. That hung the CI run of 2026-11-23 for 90 minutes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)

RECANCEL_EVERY = 0.05


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], *, give_up_after: float = 10.0) -> bool:
    """Cancel `tasks` and wait until all have ended, cancelling again while one is still running.

    Returns False (and logs the stragglers) if some task outlived `give_up_after` seconds. A cancel of the
    caller itself is not swallowed: `asyncio.wait` lets it through.
    """
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    deadline = time.monotonic() + give_up_after
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log.error("background tasks did not stop", extra={"tasks": sorted(t.get_name() for t in pending)})
            return False
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_EVERY, remaining))
    for task in tasks:
        # Fetch each outcome so an error is not reported later as "exception was never retrieved".
        if not task.cancelled() and task.exception() is not None:
            log.debug("background task had failed", extra={"task": task.get_name()})
    return True
