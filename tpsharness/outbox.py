"""A non-blocking socket's outgoing bytes, for code that must never wait to write.

``Outbox.write(data)`` sends at once what the socket takes (one ``send``, the hot
path) and queues the rest, which a task of its own flushes when the socket is
writable. The queue is the caller's to bound: ``queued`` says how much waits, and
what to do past a bound is the caller's choice (the fake drops the peer, the load
engine refuses the message). So is a socket error, or a socket that takes nothing
for ``timeout`` seconds: ``on_error(error)`` is called once, the queue is emptied
and nothing more is sent. ``on_drained()``, if given, is called when a flush has
emptied the queue (a caller that stopped reading the sender resumes then).
"""

from __future__ import annotations

from collections.abc import Callable

from .net import Socket
from .syscalls import WriteWait, spawn

__all__ = ["Outbox"]


class Outbox:
    """What waits to be written to one socket."""

    __slots__ = ("sock", "on_error", "on_drained", "timeout", "_queue", "_send", "_failed")

    def __init__(self, sock: Socket, on_error: Callable[[OSError], None],
                 timeout: float | None = None, on_drained: Callable[[], None] | None = None) -> None:
        self.sock = sock
        self.on_error = on_error        # a send failed, or a flush waited past ``timeout``
        self.on_drained = on_drained    # a flush emptied the queue
        self.timeout = timeout
        self._queue = bytearray()       # deleting from its front is cheap in CPython
        self._send = sock.sock.send     # the raw socket's: one call less per message
        self._failed = False

    @property
    def queued(self) -> int:
        """Bytes written but not yet taken by the socket."""
        return len(self._queue)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` now, or after what is queued; never waits."""
        queue = self._queue
        if queue or self._failed:
            if not self._failed:
                queue += data
            return
        try:
            sent = self._send(data)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            self._fail(error)
            return
        if sent < len(data):
            queue += memoryview(data)[sent:]
            spawn(self._flush(), daemon=True)

    async def _flush(self) -> None:
        queue = self._queue
        sock = self.sock
        try:
            while queue and not self._failed:
                await WriteWait(sock.fd, self.timeout)
                if self._failed:        # closed while we waited
                    return
                try:
                    sent = self._send(queue)
                except BlockingIOError:
                    continue
                del queue[:sent]
        except OSError as error:         # TimeoutError (past ``timeout``) is one too
            self._fail(error)
            return
        if not self._failed and self.on_drained is not None:
            self.on_drained()

    def _fail(self, error: OSError) -> None:
        if self._failed:
            return
        self.discard()
        self.on_error(error)

    def discard(self) -> None:
        """Drop what is queued and send nothing more (the socket is being closed)."""
        self._failed = True
        self._queue.clear()
