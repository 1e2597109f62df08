"""One connection of the fake: its socket, reader, the uuids it holds, its timers,
and its bounded output queue."""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic

from tpsharness import net
from tpsharness.outbox import Outbox
from tpsharness.protocol import Reader, StrictReader

__all__ = ["Peer"]


class Peer:
    """A connection the fake serves. ``send`` never blocks the server: what the socket
    does not take waits in its Outbox (the writer the load engine uses too); past
    ``max_output`` queued bytes ``on_overflow(peer)`` decides, on a socket error
    ``on_error(peer, error)`` (the server drops the peer)."""

    __slots__ = ("sock", "reader", "uuids", "serial", "idle_timeout", "last_received",
                 "request_started", "outbox", "silenced", "relayed", "delayed", "max_output",
                 "on_overflow")

    def __init__(self, sock: net.Socket, reader: Reader | StrictReader, idle_timeout: float,
                 max_output: int, on_overflow: Callable[[Peer], None],
                 on_error: Callable[[Peer, OSError], None]) -> None:
        self.sock = sock
        self.reader = reader
        self.uuids: dict[str, None] = {}    # table keys pointing at this connection, in order (a set)
        self.serial: str | None = None      # the serial this connection registered
        self.idle_timeout = idle_timeout
        self.last_received = monotonic()    # the idle sweep counts from here
        self.request_started: float | None = None   # first byte of a request not yet whole
        self.outbox = Outbox(sock, lambda error: on_error(self, error))
        self.max_output = max_output
        self.on_overflow = on_overflow
        self.silenced = False       # the half-reply fault stops answering
        self.relayed = 0            # private data relayed to this connection (drop-relays-after-3)
        self.delayed = 0            # bytes of its requests waiting out reply_delay

    @property
    def closed(self) -> bool:
        return self.sock.closed

    @property
    def address(self) -> str:
        """'host:port' of the other end."""
        return self.sock.peer

    @property
    def queued(self) -> int:
        """Bytes waiting to be sent."""
        return self.outbox.queued

    def send(self, data: bytes) -> None:
        """Queue ``data``; a peer that stops reading is lost, not buffered."""
        outbox = self.outbox
        outbox.write(data)
        if outbox.queued > self.max_output:
            self.on_overflow(self)

    def pending(self) -> bool:
        """True while bytes wait to be sent."""
        return self.outbox.queued > 0

    def close(self) -> None:
        """Close the socket (FIN, no bytes) and drop what was queued."""
        self.outbox.discard()
        self.sock.close()           # forget_fd takes it out of any ReadGroup
