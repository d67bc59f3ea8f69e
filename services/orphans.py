"""Processes that `tripwire up` starts stop when it dies, even killed outright (SIGKILL, the OOM killer),
instead of living on as orphans that hold their ports and, for Redis, its AOF directory (which the next
`up` would open a second time).

Linux's PR_SET_PDEATHSIG does it: the kernel sends the child SIGTERM (a clean stop) when its parent
exits. Elsewhere these are no-ops, and only `up`'s own orderly stop (Ctrl-C, SIGTERM, SIGHUP) applies.
"""

from __future__ import annotations

import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> bool:
    """Ask for SIGTERM when the parent process dies. False if that cannot be arranged here (not Linux, a
    seccomp profile that refuses prctl) or if `parent` is already gone (then the caller should exit)."""
    if not sys.platform.startswith("linux"):
        return True  # nothing to arrange, nothing wrong
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return True  # refused: the parent's own orderly stop still applies
    return os.getppid() == parent  # it may have died before the request took effect


def preexec_die_with(parent: int) -> None:
    """A subprocess `preexec_fn` (the parent must have no other threads yet): the child exits at once if
    `parent` is already gone, else gets SIGTERM when it goes."""
    if not die_with_parent(parent):
        os._exit(1)
