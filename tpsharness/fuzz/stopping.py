"""Stopping a fuzz run on SIGINT or SIGTERM cleanly: no traceback, in bounded time.

The CLI's signal handlers call ``SWITCH.request``: the run is asked to stop (the
fuzzer looks at ``requested`` before each program) and, the first time only,
``Interrupted`` is raised where the signal landed, so that a wait on a silent
server ends at once. It is not raised while the in-kernel model runs (``held``):
the model's server tasks would log it as a crash; it is raised when the model's
run is over instead (a short run: it waits on nothing outside the process).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import Interrupted


class StopSwitch:
    """What a signal asked of the run: ``requested`` is the signal's name, or None."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self.armed = False          # the CLI's run is under way (in-process runs are never stopped)
        self._held = 0
        self._owed = False          # a request came while held: raise when released

    def arm(self) -> None:
        self.requested, self.armed, self._owed = None, True, False

    def disarm(self) -> None:
        """The run is over: a signal from now on only asks (the cleaning up goes on)."""
        self.armed = False

    def request(self, name: str) -> None:
        first = self.requested is None
        self.requested = name
        if not (first and self.armed):
            return
        if self._held:
            self._owed = True
            return
        raise Interrupted(name)

    @contextmanager
    def held(self) -> Iterator[None]:
        """No Interrupted inside; one owed is raised on the way out."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if not self._held and self._owed and self.armed:
                self._owed = False
                raise Interrupted(self.requested or "a signal")


SWITCH = StopSwitch()
