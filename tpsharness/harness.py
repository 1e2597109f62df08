"""A blocking API over the kernel, for test bodies: ``tps.device()``, ``cli.send()``.

Each call runs the simulated actor's coroutine on a short-lived Scheduler until it
is done, bounded by the harness's timeout; the sockets outlive the schedulers, so
a device registered in one call receives in the next. Everything opened is closed
by ``close()``, which the pytest fixture calls at teardown even when a test fails.
"""

import socket

from . import kernel
from .checker import check_async
from .client import Client
from .deadline import GRACE, validate_timeout
from .defaults import TIMEOUT
from .device import Device
from .endpoint import Raw, Transcript
from .ids import CLIENT_PREFIX, new_uuid
from .net import checked_address


class _Handle:
    """What all blocking handles share: the endpoint, its harness, exact bytes out
    (``send_raw``), replies in, close."""

    def __init__(self, harness, endpoint):
        self._harness = harness
        self.endpoint = endpoint

    def _run(self, coro, timeout=None):
        return self._harness.run(coro, timeout)

    def send_raw(self, data):
        """Write exact bytes on this connection, in one send."""
        self._run(self.endpoint.send_raw(bytes(data)))

    def next_reply(self, timeout=None):
        """The next Reply or RegisterReply on this connection."""
        return self._run(self.endpoint.next_reply(timeout), timeout)

    def closed_by_server(self, timeout=None):
        """True if the TPS closes this connection within ``timeout`` seconds."""
        return self._run(self.endpoint.wait_closed(timeout), timeout)

    def close(self):
        self.endpoint.close()


class DeviceHandle(_Handle):
    """A connected simulated device, driven by blocking calls."""

    @property
    def uuid(self):
        """The device's SerialNumber."""
        return self.endpoint.uuid

    def register(self, timeout=None):
        """Register (or re-register); the verified RegisterReply."""
        return self._run(self.endpoint.register(timeout), timeout)

    def heartbeat(self, timeout=None):
        return self.register(timeout)

    def receive(self, timeout=None):
        """The next private data relayed to this device: a PrivateData (``src``,
        ``dest``, ``body`` the payload, ``raw``)."""
        return self._run(self.endpoint.receive(timeout), timeout)

    def send(self, dest, payload, timeout=None):
        """Private data to ``dest`` (a client's SrcUuid); the ack."""
        return self._run(self.endpoint.send(dest, bytes(payload), timeout=timeout), timeout)


class ClientHandle(_Handle):
    """A connected simulated client, driven by blocking calls."""

    @property
    def uuid(self):
        """The client's SrcUuid."""
        return self.endpoint.uuid

    def send(self, dest, payload, timeout=None):
        """Private data to ``dest``; the ack (UnknownDestination for 404, Rejected for 400)."""
        return self._run(self.endpoint.send(dest, bytes(payload), timeout=timeout), timeout)

    def receive(self, timeout=None):
        """The next private data a device sent to this client: a PrivateData."""
        return self._run(self.endpoint.receive(timeout), timeout)


class RawHandle(_Handle):
    """A connection for exact bytes in (``send_raw``), exact messages out."""


class Harness:
    """Simulated devices and clients against the TPS at ``address``, blocking calls."""

    def __init__(self, address, *, timeout=TIMEOUT, strict=False, family=0):
        self.address = checked_address(address)
        self.timeout = validate_timeout(timeout)
        self.strict = strict
        self.family = family
        self.transcript = Transcript()
        self._handles = []

    def run(self, coro, timeout=None):
        """Run ``coro`` on the kernel; its result. Bounded by the timeout plus GRACE (every
        wait inside has the timeout, so the bound is only a guard)."""
        return kernel.run(coro, timeout=(self.timeout if timeout is None else timeout) + GRACE)

    def _open(self, handle_type, endpoint):
        handle = handle_type(self, endpoint)
        self._handles.append(handle)
        self.run(endpoint.connect())
        return handle

    def device(self, uuid=None, *, register=True, **options):
        """A device connected (and, unless ``register=False``, registered) as ``uuid``
        (default: a fresh one, ids.new_uuid)."""
        options.setdefault("family", self.family)
        device = Device(self.address, uuid or new_uuid(), timeout=self.timeout,
                        transcript=self.transcript, strict=self.strict, **options)
        handle = self._open(DeviceHandle, device)
        if register:
            handle.register()
        return handle

    def client(self, uuid=None, **options):
        """A client, connected, sending as ``uuid`` (default: a fresh one)."""
        options.setdefault("family", self.family)
        client = Client(self.address, uuid or new_uuid(CLIENT_PREFIX), timeout=self.timeout,
                        transcript=self.transcript, strict=self.strict, **options)
        return self._open(ClientHandle, client)

    def raw(self):
        """A connection for exact bytes."""
        return self._open(RawHandle, Raw(self.address, timeout=self.timeout, transcript=self.transcript,
                                         strict=self.strict, family=self.family))

    def check(self, **options):
        """One full check (register, send, receipt); a CheckResult."""
        options.setdefault("timeout", self.timeout)
        options.setdefault("uuid", new_uuid())
        options.setdefault("family", self.family)
        return self.run(check_async(*self.address, **options), options["timeout"])

    def alive(self, timeout=2.0):
        """True if the TPS still accepts connections."""
        try:
            with socket.create_connection(self.address, timeout=timeout):
                return True
        except OSError:
            return False

    def close(self):
        """Close every connection this harness opened."""
        for handle in self._handles:
            handle.close()
        self._handles.clear()

    def load(self, **options):
        """A load run against this harness's TPS (see ``tpsharness.load``); a LoadResult."""
        from .load import load
        return load(*self.address, **options)
