"""One log line a minute, with a count, for something that can happen thousands of times a second.

A failed accept() or a refused connection under a flood would otherwise write a line (or a traceback) each;
the count says how bad it was, and `flush()` at stop reports what came after the last line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class CountedLog:
    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        count_field: str,
        every: float = 60.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.message = message
        self.count_field = count_field
        self.every = every
        self.now = now
        self.count = 0
        self._logged_at = float("-inf")
        self._extra: dict[str, object] = {}

    def note(self, **extra: object) -> None:
        """Count one; log (at error, with the count since the last line) if `every` has passed since it."""
        self.count += 1
        self._extra = extra
        if self.now() - self._logged_at >= self.every:
            self._emit()

    def flush(self) -> None:
        """Log what was counted since the last line, if anything."""
        if self.count:
            self._emit()

    def _emit(self) -> None:
        self._logged_at = self.now()
        self.logger.error(self.message, extra={**self._extra, self.count_field: self.count})
        self.count = 0
