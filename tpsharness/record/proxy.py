"""The recording proxy: relays every connection to an upstream TPS, byte for byte,
and writes down what passed.

It runs on the kernel with the other roles: one task accepts, one task reads every
socket (a ReadGroup), a connection being opened upstream has a task until it is,
and a side that cannot take what it is sent has a flushing task until it can. Each
read is forwarded at once as one write (field servers take each read as one
message), so the proxy adds one pass through the kernel and nothing else. A side
that does not read gets at most MAX_QUEUED bytes queued; then the other side is no
longer read until it drains (as TCP itself would push back), so a client that
floods or hangs slows only its own connection, and memory stays bounded. A close
(FIN) is passed on as a half-close once what was queued before it is written, a
reset as a reset at once; a connection ends when both sides have closed and all
that was queued for each has been written.

What passed goes into a Conversation; the proxy stops at its deadline, when the
recording reaches ``max_bytes``, or when ``request_stop()`` is called (a signal
handler may call it). The connections still open then are closed, and those
closes, being the proxy's own, are not recorded.
"""

from __future__ import annotations

import socket
from functools import partial
from time import monotonic

from .. import net
from ..deadline import Deadline
from ..kernel import ReadGroup
from ..errors import UpstreamDown
from ..outbox import Outbox
from ..syscalls import NewTask, ReadWait, Sleep, WaitReadable, kill, spawn
from .conversation import ACTOR_CLOSED, RECEIVED, SENT, SERVER_CLOSED, Conversation

MAX_QUEUED = 1024 * 1024        # bytes queued for a side that does not read, before pushing back
READ_SIZE = 64 * 1024
CONNECT_TIMEOUT = 5.0           # seconds to open a connection upstream


class _Side:
    """One socket of a relayed connection: the actor's (downstream) or the TPS's."""

    __slots__ = ("sock", "fd", "pair", "kind", "closed_kind", "other", "outbox", "eof", "paused")

    def __init__(self, sock: net.Socket, pair: _Pair, kind: str, closed_kind: str) -> None:
        self.sock = sock
        self.fd = sock.fd
        self.pair = pair
        self.kind = kind                # what its reads are recorded as: SENT or RECEIVED
        self.closed_kind = closed_kind  # what its close is recorded as
        self.other: _Side = self
        self.outbox: Outbox | None = None   # what waits to be written to it (set by the proxy)
        self.eof = False                # it closed its sending side (we read its FIN)
        self.paused = False             # the other side is not read: this one does not take


class _Pair:
    __slots__ = ("conn", "down", "up", "closed")

    def __init__(self, conn: int, down: net.Socket, up: net.Socket) -> None:
        self.conn = conn
        self.down = _Side(down, self, SENT, ACTOR_CLOSED)
        self.up = _Side(up, self, RECEIVED, SERVER_CLOSED)
        self.down.other, self.up.other = self.up, self.down
        self.closed = False


class RecordingProxy:
    """Listens on ``listen`` (127.0.0.1 unless told otherwise) and relays to ``upstream``.

    The listening socket is bound at construction (port 0 picks a free one:
    ``address``). Run ``serve()`` on the kernel; ``conversation`` holds what passed;
    ``stopped_by`` says why it ended ("deadline", "max-bytes", "stop")."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], *,
                 max_bytes: int = 64 * 1024 * 1024, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.upstream = net.checked_address(upstream)
        self.max_bytes = max_bytes
        self.connect_timeout = connect_timeout
        self.conversation = Conversation()
        self.refused = 0                # connections the upstream did not take
        self.stopped_by = ""
        self._listener = net.listen(*listen)
        self.address: tuple[str, int] = self._listener.sock.getsockname()[:2]
        self._sides: dict[int, _Side] = {}
        self._group = ReadGroup()
        self._next_conn = 0
        self._start = monotonic()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def upstream_alive(self) -> bool:
        """Whether the upstream accepts a connection now (blocking, at most connect_timeout)."""
        try:
            self.check_upstream()
        except UpstreamDown:
            return False
        return True

    def check_upstream(self) -> None:
        """UpstreamDown unless the upstream accepts a connection now (blocking)."""
        try:
            socket.create_connection(self.upstream, timeout=self.connect_timeout).close()
        except OSError as error:
            raise UpstreamDown(f"upstream {net.format_address(self.upstream)} does not accept "
                               f"connections: {error.strerror or error}") from None

    def close(self) -> None:
        """Release the sockets of a proxy that is not serving."""
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def request_stop(self) -> None:
        """Ask ``serve()`` to end (safe from a signal handler or another thread)."""
        try:
            self._wake_w.send(b"\x00")
        except OSError:
            pass

    async def serve(self, deadline: Deadline | None = None) -> None:
        """Relay and record until ``deadline``, ``max_bytes`` or ``request_stop()``."""
        self._start = monotonic()
        acceptor = await NewTask(self._accept_loop(), daemon=True)
        reader = await NewTask(self._read_loop(), daemon=True)
        try:
            try:
                await ReadWait(self._wake_r, deadline)
                self.stopped_by = self.stopped_by or "stop"
            except TimeoutError:
                self.stopped_by = "deadline"
        finally:
            self.conversation.ended = self._now()
            kill(reader)
            kill(acceptor)
            self._listener.close()
            for side in list(self._sides.values()):
                self._drop(side.pair)
            self.close()

    def _now(self) -> float:
        return monotonic() - self._start

    async def _accept_loop(self) -> None:
        while True:
            try:
                sock, address = await self._listener.accept()
            except OSError:                 # EMFILE and the like: wait, never die
                if self._listener.closed:
                    return
                await Sleep(0.1)
                continue
            self._next_conn += 1
            spawn(self._open(self._next_conn, sock, net.format_address(address)), daemon=True)

    async def _open(self, conn: int, down: net.Socket, peer: str) -> None:
        try:
            up = await net.connect(self.upstream, self.connect_timeout)
        except OSError:
            self.refused += 1
            down.reset()
            return
        pair = _Pair(conn, down, up)
        self.conversation.open(self._now(), conn, peer)
        for side in (pair.down, pair.up):
            side.outbox = Outbox(side.sock, partial(self._write_failed, side),
                                 on_drained=partial(self._drained, side))
            self._sides[side.fd] = side
            self._group.add(side.fd)

    async def _read_loop(self) -> None:
        """One task reads every socket: each ready one once per round, so that none
        can keep the others waiting."""
        group, sides = self._group, self._sides
        record = self.conversation.add
        while True:
            for fd in await WaitReadable(group):
                side = sides.get(fd)
                if side is None:
                    continue
                try:
                    data = side.sock.recv_nowait(READ_SIZE)
                except OSError:
                    self._closed(side, reset=True)
                    continue
                if data is None:
                    continue
                if not data:
                    self._closed(side, reset=False)
                    continue
                record(self._now(), side.pair.conn, side.kind, data)
                self._forward(side.other, data)
                if self.conversation.size >= self.max_bytes:
                    self.stopped_by = "max-bytes"
                    self.request_stop()

    def _forward(self, side: _Side, data: bytes) -> None:
        """Write ``data`` to ``side`` now, or queue it; past MAX_QUEUED, stop reading
        the sender until ``side`` drains."""
        outbox = side.outbox
        if side.pair.closed or outbox is None:
            return
        outbox.write(data)
        if outbox.queued > MAX_QUEUED and not side.paused:
            side.paused = True
            self._group.discard(side.other.fd)

    def _write_failed(self, side: _Side, error: OSError) -> None:
        self._closed(side, reset=True)

    def _drained(self, side: _Side) -> None:
        """``side`` took all that was queued for it: read its sender again, or pass on
        the sender's close that waited for the queue."""
        if side.pair.closed:
            return
        if side.other.eof:
            side.sock.shutdown_write()
            self._drop_if_done(side.pair)
        elif side.paused:
            side.paused = False
            self._group.add(side.other.fd)

    def _closed(self, side: _Side, *, reset: bool) -> None:
        """``side`` closed (FIN) or reset: record it, pass it on."""
        pair = side.pair
        if pair.closed:
            return
        if not side.eof:
            self.conversation.add(self._now(), pair.conn, side.closed_kind)
        side.eof = True
        self._group.discard(side.fd)
        other = side.other
        if reset:
            other.sock.reset()
            self._drop(pair)
        elif other.outbox is None or not other.outbox.queued:
            other.sock.shutdown_write()     # the half-close goes on; the other way stays open
            self._drop_if_done(pair)
        # else: _drained passes the close on once what is queued for ``other`` is written

    def _drop_if_done(self, pair: _Pair) -> None:
        """Both sides closed and all that was queued for each is written: the end."""
        sides = (pair.down, pair.up)
        if all(s.eof for s in sides) and not any(s.outbox is not None and s.outbox.queued for s in sides):
            self._drop(pair)

    def _drop(self, pair: _Pair) -> None:
        pair.closed = True
        for side in (pair.down, pair.up):
            if side.outbox is not None:
                side.outbox.discard()
            if self._sides.get(side.fd) is side:
                del self._sides[side.fd]
            side.sock.close()
