"""The simulated client (an app): send private data to a device, read the ack."""

from __future__ import annotations

from collections.abc import Sequence

from .defaults import AUTH_CODE, TIMEOUT
from .endpoint import Endpoint, Transcript
from .ids import CLIENT_PREFIX, new_uuid


class Client(Endpoint):
    """An app on one TCP connection to the TPS, known to it by ``uuid`` (its SrcUuid).

    ``await cli.connect()``, ``await cli.send(device_uuid, payload)`` (the ack Reply in
    field or strict form; UnknownDestination for 404, Rejected for 400), and
    ``await cli.receive()`` for what a device sends back.
    """

    actor = "client"
    __slots__ = ()

    def __init__(self, address: tuple[str, int], uuid: str | None = None, *,
                 auth_code: str = AUTH_CODE, timeout: float = TIMEOUT,
                 transcript: Transcript | None = None, strict: bool = False,
                 family: int = 0,
                 addresses: Sequence[str] | None = None) -> None:
        super().__init__(address, uuid or new_uuid(CLIENT_PREFIX), auth_code=auth_code, timeout=timeout,
                         transcript=transcript, strict=strict, family=family,
                         addresses=addresses)
