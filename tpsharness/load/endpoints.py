"""The load run's devices and clients: pooled endpoints whose every read goes to
the engine's callback, with the little state the hot path keeps on each."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ..client import Client
from ..device import Device
from ..errors import ProtocolError
from ..net import RECV_SIZE
from ..outbox import Outbox
from ..pool import EndpointPool
from ..protocol import Message, Reply, reply
from ..syscalls import WaitReadable

_END_OF_HEAD = b"\r\n\r\n"


class LoadDevice(Device):
    __slots__ = ("index", "outbox", "closed", "heartbeat_request", "relay_heads", "partial", "recv")
    index: int                                  # its place in the engine's devices
    outbox: Outbox | None                       # made at its first write
    closed: bool
    heartbeat_request: tuple[float, bytes]      # (KeepAliveIntervel, the re-register request)
    relay_heads: dict[bytes, tuple[str, int]] | None    # header block -> (src, body length), every pair's
    partial: bool                               # the reader may hold part of a message
    recv: Callable[[int], bytes]                # its socket's own recv, once pooled

    def __init__(self, address: tuple[str, int], uuid: str, index: int = 0, **options: Any) -> None:
        super().__init__(address, uuid, **options)
        self.index = index
        self.outbox = None
        self.closed = False
        self.relay_heads = None
        self.partial = False

    def _read(self, data: bytes) -> list[Message]:
        """``data`` through the reader: its whole messages (it keeps the rest)."""
        reader = self._reader
        reader.feed(data)
        messages = list(reader)
        self.partial = reader.buffered > 0
        return messages

    def messages(self, data: bytes) -> list[tuple[str, bytes] | Message]:
        """The messages in ``data`` (load's framing; a pooled Endpoint's ``deliver``
        returns only requests): a relayed request whose header block is one of
        ``relay_heads`` as ``(src, body)`` (see ``frame``), anything else typed."""
        messages: list[tuple[str, bytes] | Message] = []
        rest = self.frame(data, lambda device, src, body, now: messages.append((src, body)), 0.0)
        messages.extend(rest)
        return messages

    def frame(self, data: bytes, relayed: Callable[[LoadDevice, str, bytes, float], None],
              now: float) -> Sequence[Message]:
        """Call ``relayed(self, src, body, now)`` for each relayed request in ``data``
        whose header block is one of ``relay_heads`` (the prebuilt requests' blocks ->
        (src, body length)), framed by that known length without parsing; return the
        rest as typed messages, through the reader (anything else, and everything
        once a read ended mid-message, until the reader is empty again)."""
        heads = self.relay_heads
        if self.partial or not heads:
            return self._read(data)
        start, size = 0, len(data)
        find, get = data.find, heads.get
        while start < size:
            end = find(_END_OF_HEAD, start)
            if end < 0:
                break
            known = get(data[start:end + 4])
            if known is None:
                break
            body_end = end + 4 + known[1]
            if body_end > size:
                break
            relayed(self, known[0], data[end + 4:body_end], now)
            start = body_end
        if start == size:
            return ()
        return self._read(data[start:] if start else data)


_ACK = reply(200)                   # the field server's ack, byte for byte
_ACK_SIZE = len(_ACK)
_ACKED = Reply(200, "OK")


class LoadClient(Client):
    __slots__ = ("index", "pairs", "turn", "due_times", "in_flight", "last_progress", "outbox",
                 "closed", "count", "ack_cap", "partial", "recv")
    index: int                          # its place in the engine's clients
    pairs: list[int]                    # the streams it sends, in turn
    turn: int                           # index in pairs of the next stream
    due_times: deque[float]             # due times of messages not acked yet, in order
    in_flight: int
    last_progress: float
    outbox: Outbox | None
    closed: bool
    count: int                          # messages sent (every n-th asks for a reply)
    ack_cap: int                        # send times kept to match acks (0: acks not matched)
    partial: bool                       # the reader may hold part of a message
    recv: Callable[[int], bytes]        # its socket's own recv, once pooled

    def __init__(self, address: tuple[str, int], uuid: str, index: int = 0, **options: Any) -> None:
        super().__init__(address, uuid, **options)
        self.index = index
        self.pairs = []
        self.turn = self.count = self.in_flight = self.ack_cap = 0
        self.due_times = deque()
        self.last_progress = 0.0
        self.outbox = None
        self.closed = self.partial = False

    def messages(self, data: bytes) -> list[Message]:
        """The messages in ``data``; a read of nothing but whole field acks (the usual
        case) is counted without parsing them one by one."""
        acks = self.whole_acks(data)
        if acks:
            return [_ACKED] * acks
        reader = self._reader
        reader.feed(data)
        messages = list(reader)
        self.partial = reader.buffered > 0
        return messages

    def whole_acks(self, data: bytes) -> int:
        """How many field acks ``data`` is, when it is nothing else and nothing is
        buffered (the usual read); 0 otherwise."""
        size = len(data)
        if self.partial or size % _ACK_SIZE or data.count(_ACK) * _ACK_SIZE != size:
            return 0
        return size // _ACK_SIZE


def _no_reader(endpoint: LoadDevice | LoadClient, data: bytes) -> None:
    raise RuntimeError("LoadPool.run() before its on_read was set")


def _no_loss(endpoint: LoadDevice | LoadClient, cause: str, reason: str) -> None:
    pass


class LoadPool(EndpointPool["LoadDevice | LoadClient"]):
    """An EndpointPool whose reads go whole to ``on_read(endpoint, data)``: the
    engine frames and accounts each read in one call (acks counted in a batch,
    relays framed by their known header), straight from the socket. A connection
    that ends goes to ``on_lost(endpoint, cause, reason)``: the cause ("reset",
    "closed by the TPS", "protocol error") is what happened, the reason says it."""

    def __init__(self, on_read: Callable[[LoadDevice | LoadClient, bytes], None] | None = None,
                 on_lost: Callable[[LoadDevice | LoadClient, str, str], None] | None = None) -> None:
        super().__init__()
        self.on_read: Callable[[LoadDevice | LoadClient, bytes], None] = on_read or _no_reader
        self.on_lost = on_lost or _no_loss

    def add(self, endpoint: LoadDevice | LoadClient) -> None:
        super().add(endpoint)
        sock = endpoint.sock
        assert sock is not None         # EndpointPool.add refuses an endpoint not connected
        endpoint.recv = sock.sock.recv  # the raw socket's: no call between

    def _drop(self, endpoint: LoadDevice | LoadClient, cause: str, reason: str) -> None:
        self.discard(endpoint)
        endpoint.close()
        self.on_lost(endpoint, cause, reason)

    async def run(self) -> None:
        endpoints = self._endpoints
        group = self._group
        drop = self._drop
        while endpoints:
            on_read = self.on_read
            for fd in await WaitReadable(group):
                endpoint = endpoints.get(fd)
                if endpoint is None:
                    continue
                try:
                    data = endpoint.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                except OSError as error:
                    drop(endpoint, "reset", f"TPS {endpoint.label} reset the connection ({error.strerror})")
                    continue
                if not data:
                    drop(endpoint, "closed by the TPS", f"TPS {endpoint.label} closed the connection")
                    continue
                try:
                    on_read(endpoint, data)
                except ProtocolError as error:
                    drop(endpoint, "protocol error",
                         f"TPS {endpoint.label} sent bytes that are not a TPS message: {error}")
