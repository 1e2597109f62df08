"""What an exact replay checks: that before each of its moves, and at its end, no
actor holds anything the recorded TPS had not sent by then.

A recorded scenario (``"exact": true``) has every message each actor received, in
the order things happened: what arrived before a move (a connect, a write, a close,
by any actor) is expected by a step before that move. So before each move the
player reads every connection for what has already arrived, without waiting, and
anything that no step took is a difference: a second ack, a relay, bytes, a close
that the recorded TPS did not send (a close that a later step expects may come
early: idle timers and takeovers race with the moves). A step's ``pending``
(written by the recorder) allows what the recording shows arriving after the move
although it was caused before it (the reply to a request pipelined earlier, a
relay of what another actor had sent): a faster server may send it sooner. At the
end the player waits SETTLE
seconds for what is still on its way, then looks once more (``pending_at_end``
allows what the recording ended too soon to see).

What an exact replay cannot see: what arrives after the move it should have come
before (a slower server): the next expectation on that connection takes it, and
the difference shows later, as a mismatch or at the end; and what arrives after the
end's SETTLE, or after the actor closed.
"""

from __future__ import annotations

import selectors
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

from .endpoint import Endpoint

SETTLE = 0.1        # seconds an exact replay waits at its end for what is still on its way
MOVES = ("connect", "register", "heartbeat", "send", "send_raw", "close")   # checked before


@dataclass(frozen=True)
class Leftover:
    """What one actor holds that no step took: ``pieces`` in words (each message
    quoted), ``allowed`` of them on their way as recorded, the first one ``since``."""

    actor: str
    pieces: list[str]
    allowed: int
    since: str


class Watch:
    """The connections of one exact replay and what each holds that no step took.

    The player tells it when an actor connects (``connected``), closes
    (``closing``) and after each expectation (``took``); ``check`` then finds
    the first actor that holds more than it may. One selector sees which
    connections have something to read: a check reads only those, however many
    actors the scenario has."""

    def __init__(self, actors: dict[str, Endpoint], steps: list[dict[str, Any]], labels: list[str]) -> None:
        self.actors = actors
        self.labels = labels                    # "step 3 (cam: register)", by step number - 1
        # actor -> the numbers of its expect_close and connect steps, and which each is
        self._marks: dict[str, tuple[list[int], list[bool]]] = {}
        for number, step in enumerate(steps, 1):
            if step["do"] in ("expect_close", "connect"):
                numbers, closes = self._marks.setdefault(step["actor"], ([], []))
                numbers.append(number)
                closes.append(step["do"] == "expect_close")
        self._selector = selectors.DefaultSelector()
        self._open: set[str] = set()            # actors whose connection is open on our side
        self._fds: dict[str, int] = {}          # actor -> the fd the selector watches for it
        self._holding: dict[str, str] = {}      # actor -> when the first thing it holds arrived
        self._read: dict[str, int] = {}         # actor -> the last step that read its connection
        self._close_taken: set[str] = set()     # actors whose close an expect_close took
        self._looked = 0                        # the step at whose check every connection was read

    def connected(self, name: str, number: int) -> None:
        """Step ``number`` opened ``name``'s connection: watch it."""
        self.closing(name)
        sock = self.actors[name].sock
        if sock is not None and not sock.closed:
            self._selector.register(sock.fd, selectors.EVENT_READ, name)
            self._fds[name] = sock.fd
            self._open.add(name)
            self._read[name] = number

    def closing(self, name: str) -> None:
        """``name`` closes its connection (or opens a new one): stop watching it."""
        self._unwatch(name)
        self._open.discard(name)
        self._holding.pop(name, None)
        self._close_taken.discard(name)

    def took(self, name: str, number: int, close: bool = False) -> None:
        """Step ``number``, an expectation, read ``name``'s connection (``close``:
        it took the TPS's close)."""
        self._read[name] = number
        if close:
            self._close_taken.add(name)
            self._unwatch(name)
        if name not in self._open:
            return
        if self._pieces(name):
            self._holding.setdefault(name, f"during {self.labels[number - 1]}")
        else:
            self._holding.pop(name, None)

    def waiting(self) -> bool:
        """Whether a connection is still open both ways (something may still arrive)."""
        return bool(self._selector.get_map())

    def check(self, number: int, allowed: dict[str, int]) -> Leftover | None:
        """Before step ``number`` (or after the last): read what has arrived, and the
        first actor holding more than ``allowed`` (actor -> count), or None."""
        looked, self._looked = self._looked, min(number, len(self.labels))
        for key, _ in self._selector.select(0):
            name = key.data
            endpoint = self.actors[name]
            endpoint.read_arrived()
            if endpoint.peer_closed:
                self._unwatch(name)
            if name not in self._holding and self._pieces(name):
                after = max(looked, self._read.get(name, 0))
                self._holding[name] = f"after {self.labels[after - 1]}" if after else "before step 1"
        for name, since in list(self._holding.items()):
            pieces = self._pieces(name)
            if not pieces:
                del self._holding[name]
            elif len(pieces) > allowed.get(name, 0):
                return Leftover(name, pieces, allowed.get(name, 0), since)
        return None

    def _pieces(self, name: str) -> list[str]:
        endpoint = self.actors[name]
        pieces = endpoint.unasked()
        if endpoint.peer_closed and name not in self._close_taken and not self._close_ahead(name):
            pieces.append("the TPS closed the connection")
        return pieces

    def _close_ahead(self, name: str) -> bool:
        """Whether a step from the one being checked on expects the TPS to close this
        connection of ``name`` (a close may come early: timers and takeovers race)."""
        numbers, closes = self._marks.get(name, ([], []))
        position = bisect_left(numbers, self._looked)
        return position < len(numbers) and closes[position]

    def _unwatch(self, name: str) -> None:
        fd = self._fds.pop(name, None)
        if fd is not None:
            self._selector.unregister(fd)

    def close(self) -> None:
        """Forget every connection (before the player closes them)."""
        self._selector.close()
