"""Many simulated endpoints read by one task: how one process holds thousands.

A pooled endpoint's connection is read by the pool, not by the endpoint (its own
``receive()`` would be FdBusy): each relayed private data goes to
``on_message(endpoint, message)``, and a connection the TPS closes goes to
``on_close(endpoint, reason)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from .errors import InvalidArgument, ProtocolError
from .kernel import ReadGroup
from .syscalls import WaitReadable

if TYPE_CHECKING:
    from .endpoint import Endpoint
    from .protocol import PrivateData

E = TypeVar("E", bound="Endpoint")
"""The kind of endpoint a pool holds (the load engine pools its own subclasses)."""

OnMessage = Callable[[E, "PrivateData"], object]
"""``on_message(endpoint, message)``: a relayed private data for a pooled endpoint."""
OnClose = Callable[[E, str], object]
"""``on_close(endpoint, reason)``: the TPS closed (or broke) a pooled connection."""


class EndpointPool(Generic[E]):
    """Devices (or clients), connected and registered, whose data one task reads."""

    def __init__(self, on_message: OnMessage[E] | None = None,
                 on_close: OnClose[E] | None = None) -> None:
        self.on_message = on_message
        self.on_close = on_close
        self._group = ReadGroup()
        self._endpoints: dict[int, E] = {}        # fd -> endpoint

    def __len__(self) -> int:
        return len(self._endpoints)

    def add(self, endpoint: E) -> None:
        """Read ``endpoint`` from now on (call from a task of the pool's scheduler);
        InvalidArgument if it is not connected."""
        sock = endpoint.sock
        if sock is None:
            raise InvalidArgument(f"{endpoint!r} is not connected: connect it before pooling it")
        self._group.add(sock.fd)
        self._endpoints[sock.fd] = endpoint

    def discard(self, endpoint: E) -> None:
        """Stop reading ``endpoint`` (its connection stays open)."""
        sock = endpoint.sock
        if sock is not None and self._endpoints.pop(sock.fd, None) is not None:
            self._group.discard(sock.fd)

    async def run(self) -> None:
        """Read every pooled connection until the pool is empty (or the task is killed)."""
        while self._endpoints:
            for fd in await WaitReadable(self._group):
                endpoint = self._endpoints.get(fd)
                if endpoint is not None:
                    self._read(endpoint)

    def _read(self, endpoint: E) -> None:
        sock = endpoint.sock
        assert sock is not None, "add() pools connected endpoints only"
        try:
            data = sock.recv_nowait()
        except OSError as error:
            return self._lost(endpoint, f"TPS {endpoint.label} reset the connection ({error.strerror})")
        if data is None:
            return None
        if not data:
            return self._lost(endpoint, f"TPS {endpoint.label} closed the connection")
        try:
            messages = endpoint.deliver(data)
        except ProtocolError as error:
            return self._lost(endpoint, f"TPS {endpoint.label} sent bytes that are not a TPS message: {error}")
        if self.on_message is not None:
            for message in messages:
                self.on_message(endpoint, message)
        return None

    def _lost(self, endpoint: E, reason: str) -> None:
        self.discard(endpoint)
        endpoint.close()
        if self.on_close is not None:
            self.on_close(endpoint, reason)
