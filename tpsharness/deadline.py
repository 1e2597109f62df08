"""One absolute deadline, passed down from a check to the kernel's timer heap.

In the manner of curio's ``timeout_after`` and trio's ``CancelScope.deadline``: the
caller fixes WHEN the work must end, once, and every layer below waits until that
instant instead of turning a number of seconds into a new deadline of its own (which
lets the slack of each layer add up). The kernel takes a Deadline wherever a system
call takes a timeout.
"""

from __future__ import annotations

import math
from time import monotonic
from typing import TypeAlias

from .errors import InvalidArgument

__all__ = ["Deadline", "Timeout", "GRACE", "MAX_TIMEOUT", "validate_timeout"]

# How long past its timeout a check or a blocking Harness call may take at most,
# whatever the server does: the time to notice the deadline and close the sockets.
GRACE = 0.5

# The longest timeout a check accepts: an hour is beyond any monitoring interval,
# and a timeout without bound would let a silent server hang a check for ever.
MAX_TIMEOUT = 3600.0


def validate_timeout(seconds: object, what: str = "timeout") -> float:
    """``seconds`` as a float; InvalidArgument unless it is a finite number above 0 and at
    most MAX_TIMEOUT."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise InvalidArgument(f"the {what} must be a number of seconds, not {seconds!r}")
    value = float(seconds)
    if not math.isfinite(value):
        raise InvalidArgument(f"the {what} must be finite (at most {MAX_TIMEOUT:g} s), not {seconds!r}")
    if not value > 0:
        raise InvalidArgument(f"the {what} must be above 0 s, not {seconds!r}")
    if value > MAX_TIMEOUT:
        raise InvalidArgument(f"the {what} must be at most {MAX_TIMEOUT:g} s, not {seconds!r}")
    return value


class Deadline:
    """The instant (``time.monotonic()`` clock) by which some work must end.

    ``Deadline(seconds)`` from now, ``Deadline.at(when)`` for an instant; ``remaining()``,
    ``expired`` and ``elapsed`` (since it was made) read the clock.
    """

    __slots__ = ("start", "when")

    def __init__(self, seconds: float) -> None:
        if not seconds >= 0:        # also refuses NaN, which would corrupt a timer heap
            raise InvalidArgument(f"a deadline needs seconds >= 0, not {seconds!r}")
        self.start = monotonic()
        self.when = self.start + seconds

    @classmethod
    def at(cls, when: float, start: float | None = None) -> Deadline:
        """The deadline at the instant ``when``; ``start`` (default now) for ``elapsed``."""
        deadline = cls.__new__(cls)
        deadline.start = monotonic() if start is None else start
        deadline.when = when
        return deadline

    @property
    def seconds(self) -> float:
        """The time it allowed when it was made."""
        return self.when - self.start

    def remaining(self) -> float:
        """Seconds left, 0.0 once it passed."""
        left = self.when - monotonic()
        return left if left > 0.0 else 0.0

    @property
    def expired(self) -> bool:
        return monotonic() >= self.when

    @property
    def elapsed(self) -> float:
        """Seconds since it was made."""
        return monotonic() - self.start

    def sooner(self, seconds: float | None) -> Deadline:
        """This deadline or one ``seconds`` from now, whichever comes first."""
        now = monotonic()
        if seconds is None or now + seconds >= self.when:
            return self
        return Deadline.at(now + seconds, now)

    def later(self, seconds: float) -> Deadline:
        """The deadline ``seconds`` after this one (the grace of a guard)."""
        return Deadline.at(self.when + seconds, self.start)

    def __repr__(self) -> str:
        return f"Deadline({self.seconds:g} s, {self.remaining():.3f} s left)"


Timeout: TypeAlias = float | Deadline | None
"""What a wait takes as its timeout: seconds from now, an instant, or None (for ever)."""
