"""Many simulated endpoints read by one task: how one process holds thousands.

A pooled endpoint's connection is read by the pool, not by the endpoint (its own
``receive()`` would be FdBusy): each relayed private data goes to
``on_message(endpoint, message)``, and a connection the TPS closes goes to
``on_close(endpoint, reason)``.
"""

from .errors import ProtocolError
from .kernel import ReadGroup
from .syscalls import WaitReadable


class EndpointPool:
    """Devices (or clients), connected and registered, whose data one task reads."""

    def __init__(self, on_message=None, on_close=None):
        self.on_message = on_message
        self.on_close = on_close
        self._group = ReadGroup()
        self._endpoints = {}        # fd -> endpoint

    def __len__(self):
        return len(self._endpoints)

    def add(self, endpoint):
        """Read ``endpoint`` from now on (call from a task of the pool's scheduler)."""
        self._group.add(endpoint.sock.fd)
        self._endpoints[endpoint.sock.fd] = endpoint

    def discard(self, endpoint):
        if self._endpoints.pop(endpoint.sock.fd, None) is not None:
            self._group.discard(endpoint.sock.fd)

    async def run(self):
        """Read every pooled connection until the pool is empty (or the task is killed)."""
        while self._endpoints:
            for fd in await WaitReadable(self._group):
                endpoint = self._endpoints.get(fd)
                if endpoint is not None:
                    self._read(endpoint)

    def _read(self, endpoint):
        try:
            data = endpoint.sock.recv_nowait()
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

    def _lost(self, endpoint, reason):
        self.discard(endpoint)
        endpoint.close()
        if self.on_close is not None:
            self.on_close(endpoint, reason)
