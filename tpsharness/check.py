"""One check of a TPS: a device registers, a client sends it a unique payload, the
device receives exactly that payload, all within a deadline (PROTOCOL.md section 6).
"""

import os
from dataclasses import dataclass, field
from time import monotonic

from . import kernel
from .client import Client
from .device import Device, new_serial
from .endpoint import Transcript, format_ms
from .errors import ReceiptError, TPSError
from .net import format_address
from .protocol import quote

STAGES = ("connect", "register", "send", "receipt")
# How long past ``timeout`` a check may take at most, whatever the server does.
GRACE = 0.5


@dataclass
class CheckResult:
    """What one check found. ``stage`` names the failed stage (None when ok); timings
    are in ms: connect, register, relay (send until the device had the payload), total."""

    ok: bool
    stage: str | None
    message: str
    address: tuple
    serial: str
    payload_size: int
    timings: dict = field(default_factory=dict)
    transcript: Transcript = field(default=None, repr=False)
    embedded: bool = False          # checked against the bundled fake TPS

    def as_dict(self):
        """The legacy monitoring plugin's dict: status 0 ok / 1 failed; target 1 when the
        payload reached the device, else 0; errors the failure sentence ('' when ok)."""
        return {"status": 0 if self.ok else 1, "target": 1 if self.ok else 0,
                "errors": "" if self.ok else self.message}

    def to_json(self, transcript=False):
        data = {"ok": self.ok, "stage": self.stage, "message": self.message,
                "host": self.address[0], "port": self.address[1], "serial": self.serial,
                "payload_size": self.payload_size, "embedded_fake_tps": self.embedded,
                "timings_ms": self.timings}
        if transcript and self.transcript is not None:
            data["transcript"] = self.transcript.as_list()
        return data


async def check_async(host, port, *, serial=None, auth_code="0000", payload=None, timeout=5.0,
                      strict=False):
    """The check as a coroutine, to run on a Scheduler beside other tasks."""
    address = (host, int(port))
    serial = serial or new_serial()
    payload = payload if payload is not None else os.urandom(8).hex().encode()
    transcript = Transcript()
    started = monotonic()
    deadline = started + timeout
    timings = {}
    device = Device(address, serial, auth_code=auth_code, timeout=timeout, transcript=transcript,
                    strict=strict)
    client = Client(address, auth_code=auth_code, timeout=timeout, transcript=transcript,
                    strict=strict)

    def remaining():
        return max(0.001, deadline - monotonic())

    def result(ok, stage, message):
        timings["total"] = round((monotonic() - started) * 1000, 3)
        return CheckResult(ok, stage, message, address, serial, len(payload), timings, transcript)

    try:
        mark = monotonic()
        await device.connect(remaining())
        await client.connect(remaining())
        timings["connect"] = round((monotonic() - mark) * 1000, 3)

        mark = monotonic()
        await device.register(remaining())
        timings["register"] = round((monotonic() - mark) * 1000, 3)

        mark = monotonic()
        await client.send(serial, payload, timeout=remaining())
        relayed = await device.receive(remaining())
        if relayed.body != payload:
            elapsed = monotonic() - mark
            raise ReceiptError(f"receipt: device {serial} received {_describe_mismatch(payload, relayed.body)} "
                               f"after {format_ms(elapsed)}", elapsed)
        timings["relay"] = round((monotonic() - mark) * 1000, 3)
    except TPSError as error:
        return result(False, error.stage, str(error))
    finally:
        device.close()
        client.close()
    total_ms = (monotonic() - started) * 1000
    return result(True, None, f"{format_address(address)} registered {serial} and relayed "
                              f"{len(payload)} bytes in {total_ms:.1f} ms")


def _describe_mismatch(sent, received):
    if len(sent) != len(received):
        return f"{len(received)} bytes ({quote(received, 40)}) instead of the {len(sent)} sent ({quote(sent, 40)})"
    first = next(i for i, (a, b) in enumerate(zip(sent, received)) if a != b)
    return (f"{len(received)} bytes that differ from the {len(sent)} sent at byte {first} "
            f"({quote(received, 40)} instead of {quote(sent, 40)})")


def check(host, port, *, serial=None, auth_code="0000", payload=None, timeout=5.0, strict=False):
    """Check the TPS at host:port once; a CheckResult (it never raises for a TPS failure).

    Returns within ``timeout`` + 0.5 s whatever the server does.
    """
    return run_bounded(check_async(host, port, serial=serial, auth_code=auth_code, payload=payload,
                                   timeout=timeout, strict=strict), (host, port), timeout)


def run_bounded(coro, address, timeout):
    """Run a check coroutine on the kernel; past ``timeout`` + GRACE, a failed result.

    Every wait inside has the check's deadline, so the guard should never fire; if
    it does, the result says so rather than hang.
    """
    try:
        return kernel.run(coro, timeout=timeout + GRACE)
    except TimeoutError:
        host, port = address
        return CheckResult(False, None, f"check: no result within {timeout + GRACE:g} s, although "
                                        "every stage has that deadline", (host, int(port)), "", 0,
                           {"total": (timeout + GRACE) * 1000})
