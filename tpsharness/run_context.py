"""The scheduler running in this thread: the kernel's one link to the code that
runs inside its tasks.

``kernel.Scheduler`` sets it while its loop runs; ``ReadGroup`` and the immediate
operations of ``syscalls`` (spawn, kill, forget_fd) read it. Both import this
module, so neither imports the other back (as trio's ``_core/_run_context.py``).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

__all__ = ["Running", "current_scheduler", "switch_to"]


class Running(Protocol):
    """What code in a task may ask of the running scheduler, at once."""

    def new(self, coro: Any, daemon: bool = False) -> int: ...

    def kill(self, tid: int) -> bool: ...

    def forget_fd(self, fd: int) -> None: ...

    def group_add(self, group: Any, fd: int) -> None: ...

    def group_discard(self, group: Any, fd: int) -> None: ...


_local = threading.local()     # .scheduler: the Scheduler running in this thread


def current_scheduler() -> Running | None:
    """The Scheduler whose loop runs in this thread, or None."""
    return getattr(_local, "scheduler", None)


def switch_to(scheduler: Running | None) -> Running | None:
    """Make ``scheduler`` the running one; the one it replaces (to switch back to)."""
    previous = getattr(_local, "scheduler", None)
    _local.scheduler = scheduler
    return previous
