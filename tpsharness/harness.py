"""A blocking API over the kernel, for test bodies: ``tps.device()``, ``cli.send()``.

Each call runs the simulated actor's coroutine on a short-lived Scheduler until it
is done, bounded by the harness's timeout; the sockets outlive the schedulers, so
a device registered in one call receives in the next. Everything opened is closed
by ``close()``, which the pytest fixture calls at teardown even when a test fails.
"""

from __future__ import annotations

import socket
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import kernel
from .checker import CheckResult, check
from .client import Client
from .deadline import GRACE, validate_timeout
from .defaults import AUTH_CODE, TIMEOUT
from .device import Device
from .endpoint import Endpoint, Payload, Raw, Transcript
from .ids import CLIENT_PREFIX, new_uuid
from .net import checked_address
from .protocol import PrivateData, RegisterReply, Reply

if TYPE_CHECKING:
    from .load import LoadResult

T = TypeVar("T")
E = TypeVar("E", bound=Endpoint)
H = TypeVar("H", bound="_Handle[Any]")


class _Handle(Generic[E]):
    """What all blocking handles share: the endpoint, its harness, exact bytes out
    (``send_raw``), replies in, close."""

    def __init__(self, harness: Harness, endpoint: E) -> None:
        self._harness = harness
        self.endpoint = endpoint

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self._harness.run(coro, timeout)

    def send_raw(self, data: Payload) -> None:
        """Write exact bytes on this connection, in one send."""
        self._run(self.endpoint.send_raw(bytes(data)))

    def next_reply(self, timeout: float | None = None) -> Reply | RegisterReply:
        """The next Reply or RegisterReply on this connection."""
        return self._run(self.endpoint.next_reply(timeout), timeout)

    def closed_by_server(self, timeout: float | None = None) -> bool:
        """True if the TPS closes this connection within ``timeout`` seconds."""
        return self._run(self.endpoint.wait_closed(timeout), timeout)

    def close(self) -> None:
        self.endpoint.close()


class DeviceHandle(_Handle[Device]):
    """A connected simulated device, driven by blocking calls."""

    @property
    def uuid(self) -> str:
        """The device's SerialNumber."""
        return self.endpoint.uuid

    def register(self, timeout: float | None = None) -> RegisterReply:
        """Register (or re-register); the verified RegisterReply."""
        return self._run(self.endpoint.register(timeout), timeout)

    def heartbeat(self, timeout: float | None = None) -> RegisterReply:
        return self.register(timeout)

    def receive(self, timeout: float | None = None) -> PrivateData:
        """The next private data relayed to this device: a PrivateData (``src``,
        ``dest``, ``body`` the payload, ``raw``)."""
        return self._run(self.endpoint.receive(timeout), timeout)

    def send(self, dest: str, payload: Payload,
             timeout: float | None = None) -> Reply | RegisterReply:
        """Private data to ``dest`` (a client's SrcUuid); the ack."""
        return self._run(self.endpoint.send(dest, bytes(payload), timeout=timeout), timeout)


class ClientHandle(_Handle[Client]):
    """A connected simulated client, driven by blocking calls."""

    @property
    def uuid(self) -> str:
        """The client's SrcUuid."""
        return self.endpoint.uuid

    def send(self, dest: str, payload: Payload,
             timeout: float | None = None) -> Reply | RegisterReply:
        """Private data to ``dest``; the ack (UnknownDestination for 404, Rejected for 400)."""
        return self._run(self.endpoint.send(dest, bytes(payload), timeout=timeout), timeout)

    def receive(self, timeout: float | None = None) -> PrivateData:
        """The next private data a device sent to this client: a PrivateData."""
        return self._run(self.endpoint.receive(timeout), timeout)


class RawHandle(_Handle[Raw]):
    """A connection for exact bytes in (``send_raw``), exact messages out."""


class Harness:
    """Simulated devices and clients against the TPS at ``address``, blocking calls.

    A context manager: ``with Harness(address) as tps:`` closes every connection it
    opened at the end of the block, as ``close()`` does."""

    def __init__(self, address: tuple[str, int], *, timeout: float = TIMEOUT, strict: bool = False,
                 family: int = 0) -> None:
        self.address: tuple[str, int] = checked_address(address)
        self.timeout = validate_timeout(timeout)
        self.strict = strict
        self.family = family
        self.transcript = Transcript()
        self._handles: list[_Handle[Any]] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the kernel; its result. Bounded by the timeout plus GRACE (every
        wait inside has the timeout, so the bound is only a guard)."""
        return kernel.run(coro, timeout=(self.timeout if timeout is None else timeout) + GRACE)

    def _open(self, handle: H) -> H:
        self._handles.append(handle)
        self.run(handle.endpoint.connect())
        return handle

    def device(self, uuid: str | None = None, *, register: bool = True, auth_code: str = AUTH_CODE,
               trailing_crlf: bool = False, family: int | None = None) -> DeviceHandle:
        """A device connected (and, unless ``register=False``, registered) as ``uuid``
        (default: a fresh one, ids.new_uuid); ``family`` defaults to the harness's."""
        device = Device(self.address, uuid or new_uuid(), timeout=self.timeout,
                        transcript=self.transcript, strict=self.strict, auth_code=auth_code,
                        trailing_crlf=trailing_crlf, family=self.family if family is None else family)
        handle = self._open(DeviceHandle(self, device))
        if register:
            handle.register()
        return handle

    def client(self, uuid: str | None = None, *, auth_code: str = AUTH_CODE,
               family: int | None = None) -> ClientHandle:
        """A client, connected, sending as ``uuid`` (default: a fresh one)."""
        client = Client(self.address, uuid or new_uuid(CLIENT_PREFIX), timeout=self.timeout,
                        transcript=self.transcript, strict=self.strict, auth_code=auth_code,
                        family=self.family if family is None else family)
        return self._open(ClientHandle(self, client))

    def raw(self) -> RawHandle:
        """A connection for exact bytes."""
        return self._open(RawHandle(self, Raw(self.address, timeout=self.timeout,
                                              transcript=self.transcript, strict=self.strict,
                                              family=self.family)))

    def check(self, *, uuid: str | None = None, auth_code: str = AUTH_CODE,
              payload: Payload | None = None, timeout: float | None = None,
              strict: bool | None = None, family: int | None = None) -> CheckResult:
        """One full check (register, send, receipt), as ``tpsharness.check``; a
        CheckResult. ``timeout``, ``strict`` and ``family`` default to the harness's."""
        return check(*self.address, uuid=uuid or new_uuid(), auth_code=auth_code, payload=payload,
                     timeout=self.timeout if timeout is None else timeout,
                     strict=self.strict if strict is None else strict,
                     family=self.family if family is None else family)

    def alive(self, timeout: float = 2.0) -> bool:
        """True if the TPS still accepts connections."""
        try:
            with socket.create_connection(self.address, timeout=timeout):
                return True
        except OSError:
            return False

    def close(self) -> None:
        """Close every connection this harness opened."""
        for handle in self._handles:
            handle.close()
        self._handles.clear()

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def load(self, **options: Any) -> LoadResult:
        """A load run against this harness's TPS (see ``tpsharness.load``); a LoadResult.
        ``options`` are those of ``tpsharness.load.api.load`` (typed there)."""
        from .load import load
        return load(*self.address, **options)
