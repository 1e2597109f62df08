"""What a run lets us see of a server, per actor and per observation point.

An observation point comes after each write (two for a split write). For each
actor it holds the messages that arrived since the last point, summarised so that
what may differ between two correct servers (UtcTime, header forms) does not:
replies as their status (and ErrorNum for register replies), relayed private data
as its exact bytes. It also tells whether the connection was closed, and the bytes
of a message not yet complete (a field server's cut relay).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import ProtocolError
from ..protocol import Message, PrivateData, Reader, RegisterReply, quote
from ..protocol import Reply as WireReply


_UTC_TIME = re.compile(rb'("UtcTime"\s*:\s*)"\d*"')     # the time of day: differs between any two replies


@dataclass(frozen=True)
class Reply:
    """A reply: its status, and ErrorNum when it is the register reply. ``form`` is
    its bytes (UtcTime's digits masked), compared only between two servers."""

    status: int
    error_num: str | None = None
    form: bytes = field(default=b"", compare=False, repr=False)

    def __str__(self) -> str:
        register = f" (register reply, ErrorNum {self.error_num})" if self.error_num is not None else ""
        return f"reply {self.status}{register}"


@dataclass(frozen=True)
class Relay:
    """Relayed private data: the request exactly as it arrived, and its parts."""

    raw: bytes
    src: str = ""
    body: bytes = b""

    def __str__(self) -> str:
        return f"relay of {quote(self.body, 40)} from {self.src}"


@dataclass(frozen=True)
class Garbage:
    """Bytes that are not a TPS message: from there on the connection cannot be read.

    Two are equal whatever their bytes: a cut register reply carries the time of day
    (UtcTime), so comparing the bytes would make timing alone a finding. ``data`` is
    kept to show what arrived.
    """

    data: bytes = field(compare=False)

    def __str__(self) -> str:
        return f"bytes that are not a TPS message: {quote(self.data, 40)}"


Summary = Reply | Relay | Garbage


def summarise(message: Message) -> Summary:
    if isinstance(message, PrivateData):
        return Relay(message.raw, message.src, message.body)
    if isinstance(message, RegisterReply):
        return Reply(message.status, message.error_num, _UTC_TIME.sub(rb'\1"?"', message.raw))
    if isinstance(message, WireReply):
        return Reply(message.status, form=message.raw)
    return Garbage(message.raw[:200])   # a register or unknown request: no server sends one


@dataclass
class Seen:
    """What one actor saw at one observation point."""

    messages: list[Summary] = field(default_factory=list)
    closed: bool = False        # the server closed (FIN or RST) during this point
    tail: bytes = b""           # an incomplete message buffered at the end

    def __str__(self) -> str:
        parts = [str(m) for m in self.messages]
        if self.tail:
            parts.append(f"{len(self.tail)} bytes of an incomplete message")
        if self.closed:
            parts.append("a close")
        return ", ".join(parts) or "nothing"



Point = dict[str, Seen]            # actor -> what it saw at one observation point


class Inbox:
    """Frames one connection's bytes into summaries; remembers the point's share."""

    __slots__ = ("reader", "broken", "seen", "pending")

    def __init__(self) -> None:
        self.reader = Reader()
        self.broken = False
        self.seen = Seen()
        self.pending = b""          # what the reader holds: always a suffix of what it was fed

    def feed(self, data: bytes) -> None:
        if self.broken:
            return
        self.reader.feed(data)
        try:
            for message in self.reader:
                self.seen.messages.append(summarise(message))
        except ProtocolError as error:
            self.broken = True
            self.pending = b""
            self.seen.messages.append(Garbage(error.data[:200]))
            return
        held = self.reader.buffered
        self.pending = (self.pending + data)[-held:] if held else b""

    def satisfies(self, expected: Seen, exact_tails: bool = True) -> bool:
        """True once this point holds at least what ``expected`` holds (counting only):
        as many messages, the close, and an unfinished message at least as long (any,
        without ``exact_tails``: a field server cuts where TCP's reads fall)."""
        seen = self.seen
        if len(seen.messages) < len(expected.messages) or (expected.closed and not seen.closed):
            return False
        if not expected.tail:
            return True
        tail = self.tail()
        return len(tail) >= len(expected.tail) if exact_tails else bool(tail)

    def apart(self, expected: Seen) -> bool:
        """True once this point differs from ``expected`` for good: a message other
        than the one expected at its place, more messages, or a close not expected
        (after a close nothing more arrives)."""
        seen = self.seen
        if len(seen.messages) > len(expected.messages) or (seen.closed and not expected.closed):
            return True
        return any(want != have for want, have in zip(expected.messages, seen.messages))

    def take(self) -> Seen:
        """This point's Seen; the next point starts empty."""
        seen, self.seen = self.seen, Seen()
        seen.tail = self.tail()
        return seen

    def tail(self) -> bytes:
        """The incomplete message held, without the stray CR, LF and NUL a reader skips."""
        return self.pending.lstrip(b"\r\n\x00")
