"""What was on its way when an actor moved: the ``pending`` counts of an exact scenario.

An exact replay fails when, before a move (a connect, a write, a close), an actor
holds something that no step before took (tpsharness.exact). In the recording, a
move can come while the TPS is still sending something it was asked for before:
the reply to a request pipelined earlier, the relay of what another actor sent, the
rest of a message it has begun. A faster server may send that before the move, so
the move's ``pending`` says how many such things each actor may already hold.

The writer tells an InFlight what happened, event by event. Each thing an actor
receives (a message, or bytes that are not one) has the event that completed it,
the event that brought its first byte, and a cause:

- a relay: the latest write before it that held the same private data;
- anything else: the write it answers, the latest one of its connection not yet
  answered in full (a write is answered once per request it held, at least once);
  one answer too many goes to the latest write;
- a cause more than MAX_LATENCY before it is none (the TPS sent it of itself).

It was on its way at each move between its cause (or first byte) and its
completion; a message the TPS began and never finished, from its first byte on.
(A close needs no count: the player lets a close come early when a later step
expects it.) At the end, ``pending_at_end`` counts what was on its way when the
scenario stops: at a cut, what the session received after it, closes included;
when the recording stopped, the answers and relays still owed for writes made less
than a window before (twice the slowest answer seen, at least the replay's settle),
which the recording ended too soon to see.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable

from ..exact import SETTLE
from ..protocol import Message, PrivateData
from ..scenario import Step
from .conversation import messages

MAX_LATENCY = 10.0      # seconds: what comes later than this after a write does not answer it


class InFlight:
    """Follows one scenario's events; ``annotate`` then writes each move's ``pending``."""

    def __init__(self) -> None:
        self._moves: list[tuple[int, Step]] = []        # (event index, the move's step), in order
        self._things: list[tuple[int, int, float]] = []     # (conn, on its way from, completed at)
        self._unanswered: dict[int, list[list[float]]] = {}    # conn -> [[index, time, answers owed]]
        self._last_write: dict[int, tuple[int, float]] = {}   # conn -> (index, time)
        self._sent: dict[tuple[str, str, bytes], list[tuple[int, float]]] = {}    # not yet relayed
        self._begun: dict[int, int] = {}        # conn -> the event that began its unfinished message
        self._closed_at: dict[int, int] = {}    # conn -> the event at which its actor closed it
        self._server_closed: list[tuple[int, int]] = []     # (conn, event index)
        self._slowest = 0.0                     # seconds from a cause to what it caused, at most

    def move(self, index: int, step: Step) -> None:
        """Event ``index`` became the move ``step``."""
        self._moves.append((index, step))

    def wrote(self, index: int, time: float, conn: int, data: bytes) -> None:
        found = messages(data)[0]
        self._unanswered.setdefault(conn, []).append([index, time, max(1, len(found))])
        self._last_write[conn] = (index, time)
        for message in found:
            if isinstance(message, PrivateData):
                self._sent.setdefault(_key(message), []).append((index, time))

    def received(self, index: int, time: float, conn: int, things: list[Message | None],
                 unfinished: bool) -> None:
        """Event ``index`` completed ``things`` on ``conn`` (a message, or None for bytes
        that are not one); ``unfinished``: bytes of the next one are held."""
        begun = self._begun.pop(conn, index)
        for number, thing in enumerate(things):
            first = begun if number == 0 else index
            if isinstance(thing, PrivateData):
                cause = self._relayed(thing)
            else:
                cause = self._answered(conn)
            self._add(conn, first, index, time, cause)
        if unfinished:
            self._begun[conn] = begun if not things else index

    def server_closed(self, index: int, conn: int) -> None:
        self._server_closed.append((conn, index))
        self._begun.pop(conn, None)

    def actor_closed(self, index: int, conn: int) -> None:
        """What the TPS sends ``conn`` from now on is never seen; a message it has begun
        and never finishes was there at the close."""
        self._closed_at[conn] = index

    def _add(self, conn: int, first: int, index: int, time: float,
             cause: tuple[int, float] | None) -> None:
        if cause is not None and time - cause[1] <= MAX_LATENCY:
            first = min(first, cause[0])
            self._slowest = max(self._slowest, time - cause[1])
        self._things.append((conn, first, index))

    def _relayed(self, message: PrivateData) -> tuple[int, float] | None:
        sent = self._sent.get(_key(message))
        return sent.pop() if sent else None

    def _answered(self, conn: int) -> tuple[int, float] | None:
        owed = self._unanswered.get(conn)
        if not owed:
            return self._last_write.get(conn)
        write = owed[-1]
        write[2] -= 1
        if write[2] <= 0:
            owed.pop()
        return int(write[0]), write[1]

    def annotate(self, names: dict[int, str], *, end: int, end_time: float, open_conns: Iterable[int],
                 holders: dict[str, int]) -> dict[str, int]:
        """Write each move's ``pending`` (``names``: conn -> actor) and return what may
        arrive after the scenario's last step, by actor: on its way at event ``end``
        (the first one the scenario leaves out), or owed when the recording stopped
        at ``end_time`` (``holders``: uuid -> the open conn a relay to it reaches)."""
        indexes = [index for index, _ in self._moves]
        at_end: dict[int, int] = {}
        unfinished = [(conn, begun, self._closed_at[conn] + 0.5 if conn in self._closed_at else math.inf)
                      for conn, begun in self._begun.items()]
        for conn, first, done in self._things + unfinished:
            name = names.get(conn)
            if name is None:
                continue
            for position in range(bisect_right(indexes, first), len(indexes)):
                if indexes[position] >= done:
                    break
                pending = self._moves[position][1].setdefault("pending", {})
                pending[name] = pending.get(name, 0) + 1
            if first < end <= done:
                at_end[conn] = at_end.get(conn, 0) + 1
        for conn, index in self._server_closed:
            if index >= end:                # after a cut
                at_end[conn] = at_end.get(conn, 0) + 1
        since = end_time - max(SETTLE, 2 * self._slowest)     # what was owed since is late, not lost
        for conn, owed in self._unanswered.items():
            at_end[conn] = at_end.get(conn, 0) + sum(int(left) for index, time, left in owed
                                                     if index < end and time >= since)
        for (_, dest, _), sent in self._sent.items():
            holder = holders.get(dest)
            if holder is not None:
                at_end[holder] = at_end.get(holder, 0) + sum(1 for index, time in sent
                                                             if index < end and time >= since)
        kept = set(open_conns)
        return {names[conn]: count for conn, count in sorted(at_end.items())
                if count and conn in kept and conn in names}


def _key(message: PrivateData) -> tuple[str, str, bytes]:
    return message.src, message.dest, message.body
