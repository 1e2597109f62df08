"""The simulated client (an app): send private data to a device, read the ack."""

import os

from .endpoint import Endpoint


def new_client_id(prefix="tpsharness-app-"):
    """A fresh SrcUuid: ``tpsharness-app-3f2a9c1d``."""
    return f"{prefix}{os.urandom(4).hex()}"


class Client(Endpoint):
    """An app on one TCP connection to the TPS, known to it by ``src`` (its SrcUuid).

    ``await cli.connect()``, ``await cli.send(serial, payload)`` (the ack Reply in
    field or strict form; UnknownDestination for 404, Rejected for 400), and
    ``await cli.receive()`` for what a device sends back.
    """

    actor = "client"
    __slots__ = ()

    def __init__(self, address, src=None, *, auth_code="0000", timeout=5.0, transcript=None,
                 strict=False, family=0):
        super().__init__(address, src or new_client_id(), auth_code=auth_code, timeout=timeout,
                         transcript=transcript, strict=strict, family=family)

    @property
    def src(self):
        return self.uuid
