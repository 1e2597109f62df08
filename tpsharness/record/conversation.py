"""A recorded session: the connections seen and what passed on each, in order.

The proxy and the capture importer both make one; the writer turns it into
scenarios. Plain data, no sockets: an event is a tuple (time, connection, kind,
bytes), and the list's order is the order things happened in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ProtocolError
from ..protocol import Message, Reader

OPEN = "open"                       # the actor connected (and the TPS accepted)
SENT = "sent"                       # bytes from the actor to the TPS, one read as it came
RECEIVED = "received"               # bytes from the TPS to the actor
ACTOR_CLOSED = "actor closed"       # the actor closed (FIN) or reset its side
SERVER_CLOSED = "server closed"     # the TPS closed (FIN) or reset the connection

Event = tuple[float, int, str, bytes]
"""(seconds since the session began, connection number, kind, bytes)."""

EVENT_COST = 64         # bytes an event costs beyond its data, counted against a byte bound


@dataclass
class Conversation:
    """The events of a session; ``peers`` names each connection's actor side
    ("127.0.0.1:40312"); ``size`` is what the events cost, for ``--max-bytes``."""

    events: list[Event] = field(default_factory=list)
    peers: dict[int, str] = field(default_factory=dict)
    size: int = 0
    started_mid_stream: set[int] = field(default_factory=set)   # a capture caught these late
    ended: float | None = None      # when the recording stopped (None: at its last event)

    def open(self, time: float, conn: int, peer: str) -> None:
        self.peers[conn] = peer
        self.add(time, conn, OPEN)

    def add(self, time: float, conn: int, kind: str, data: bytes = b"") -> None:
        self.events.append((time, conn, kind, data))
        self.size += len(data) + EVENT_COST

    def without(self, conns: set[int]) -> Conversation:
        """The same session less the events of ``conns`` (streams that were skipped)."""
        kept = Conversation(peers={c: p for c, p in self.peers.items() if c not in conns},
                            started_mid_stream=self.started_mid_stream - conns, ended=self.ended)
        for event in self.events:
            if event[1] not in conns:
                kept.add(*event)
        return kept

    @property
    def duration(self) -> float:
        return self.events[-1][0] - self.events[0][0] if self.events else 0.0

    @property
    def end(self) -> float:
        """When the recording stopped: ``ended``, else the time of its last event."""
        if self.ended is not None:
            return self.ended
        return self.events[-1][0] if self.events else 0.0


def messages(data: bytes) -> tuple[list[Message], int]:
    """The messages ``data`` begins with, and where the bytes that are not one begin."""
    reader = Reader()
    reader.feed(data)
    found: list[Message] = []
    try:
        for message in reader:
            found.append(message)
    except ProtocolError:
        pass
    return found, len(data) - reader.buffered
