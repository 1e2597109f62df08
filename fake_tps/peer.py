"""One connection of the fake: its socket, reader, the uuids it holds, its timers,
and its bounded output queue."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from time import monotonic

from tpsharness import net
from tpsharness.protocol import Reader, StrictReader
from tpsharness.syscalls import WriteWait, spawn

__all__ = ["Peer"]


class Peer:
    """A connection the fake serves. ``send`` never blocks the server: what the socket
    does not take is queued and flushed by a task of its own; past ``max_output``
    queued bytes ``on_overflow(peer)`` decides, on a socket error ``on_error(peer,
    error)`` (the server drops the peer)."""

    __slots__ = ("sock", "reader", "uuids", "serial", "idle_timeout", "last_received",
                 "request_started", "outq", "queued", "flushing", "silenced", "relayed",
                 "delayed", "max_output", "on_overflow", "on_error")

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
        self.outq: deque[bytes] | None = None       # made when a send would block
        self.queued = 0
        self.flushing = False
        self.max_output = max_output
        self.on_overflow = on_overflow
        self.on_error = on_error
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

    def send(self, data: bytes) -> None:
        """Queue ``data``; a peer that stops reading is lost, not buffered."""
        if self.closed:
            return
        if not self.outq:
            try:
                sent = self.sock.send_nowait(data)
            except OSError as error:
                self.on_error(self, error)
                return
            if sent == len(data):
                return
            data = data[sent:]
        if self.outq is None:
            self.outq = deque()
        self.outq.append(data)
        self.queued += len(data)
        if self.queued > self.max_output:
            self.on_overflow(self)
        elif not self.flushing:
            self.flushing = True
            spawn(self._flush(), daemon=True)

    async def _flush(self) -> None:
        try:
            while self.outq and not self.closed:
                await WriteWait(self.sock.fd)
                while self.outq:     # None once the peer is closed
                    data = self.outq[0]
                    sent = self.sock.send_nowait(data)
                    if sent == 0:
                        break
                    self.queued -= sent
                    if sent == len(data):
                        self.outq.popleft()
                    else:
                        self.outq[0] = data[sent:]
                        break
        except OSError as error:
            if not self.closed:
                self.on_error(self, error)
        finally:
            self.flushing = False

    def pending(self) -> bool:
        """True while bytes wait to be sent."""
        return bool(self.outq)

    def close(self) -> None:
        """Close the socket (FIN, no bytes) and drop what was queued."""
        self.outq = None
        self.sock.close()           # forget_fd takes it out of any ReadGroup
