"""One check of a TPS: a device registers, a client sends it a unique payload, the
device receives exactly that payload, all within a deadline (docs/protocol.md section 6).
"""

import os
from dataclasses import dataclass, field
from time import monotonic

from . import kernel
from .client import Client
from .device import Device
from .ids import new_uuid
from .endpoint import Transcript, format_ms
from .deadline import GRACE, Deadline, validate_timeout
from .errors import ConnectError, ReceiptError, RegisterError, TPSError
from .net import checked_address, format_address
from .protocol import DEFAULT_MAX_BODY, quote

STAGES = ("connect", "register", "send", "receipt")


@dataclass
class CheckResult:
    """What one check found. ``stage`` names the failed stage (None when ok); timings
    are in ms: connect, register, relay (send until the device had the payload), total."""

    ok: bool
    stage: str | None
    message: str
    address: tuple
    uuid: str
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
                "host": self.address[0], "port": self.address[1], "uuid": self.uuid,
                "payload_size": self.payload_size, "embedded_fake_tps": self.embedded,
                "timings_ms": self.timings}
        if transcript and self.transcript is not None:
            data["transcript"] = self.transcript.as_list()
        return data


async def check_async(host, port, *, uuid=None, auth_code="0000", payload=None, timeout=5.0,
                      strict=False, family=0, deadline=None):
    """The check as a coroutine, to run on a Scheduler beside other tasks.

    Every stage waits until the one ``deadline`` (default: ``timeout`` seconds from
    now); a stage that ends after it is that stage's failure, even if it succeeded.
    """
    address = checked_address((host, port))
    uuid = uuid or new_uuid()
    payload = payload if payload is not None else os.urandom(8).hex().encode()
    transcript = Transcript()
    if deadline is None:
        deadline = Deadline(timeout)
    started = deadline.start
    timings = {}
    device = Device(address, uuid, auth_code=auth_code, timeout=timeout, transcript=transcript,
                    strict=strict, family=family)
    client = Client(address, auth_code=auth_code, timeout=timeout, transcript=transcript,
                    strict=strict, family=family)

    def result(ok, stage, message):
        timings["total"] = round((monotonic() - started) * 1000, 3)
        return CheckResult(ok, stage, message, address, uuid, len(payload), timings, transcript)

    def in_time(error_type, done):
        """The stage ended: its failure if the deadline passed meanwhile."""
        if deadline.expired:
            elapsed = deadline.elapsed
            raise error_type(f"{done}, but the check's deadline of "
                             f"{format_ms(deadline.seconds)} passed after {format_ms(elapsed)}",
                             elapsed, timed_out=True)

    label = format_address(address)
    try:
        mark = monotonic()
        await device.connect(deadline=deadline)
        await client.connect(deadline=deadline)
        in_time(ConnectError, f"TPS {label} accepted both connections")
        timings["connect"] = round((monotonic() - mark) * 1000, 3)

        mark = monotonic()
        await device.register(deadline=deadline)
        in_time(RegisterError, f"TPS {label} registered {uuid}")
        timings["register"] = round((monotonic() - mark) * 1000, 3)

        mark = monotonic()
        await client.send(uuid, payload, deadline=deadline)
        relayed = await device.receive(deadline=deadline)
        if relayed.body != payload:
            elapsed = monotonic() - mark
            raise ReceiptError(f"device {uuid} received {_describe_mismatch(payload, relayed.body)} "
                               f"after {format_ms(elapsed)}", elapsed)
        in_time(ReceiptError, f"device {uuid} received the payload")
        timings["relay"] = round((monotonic() - mark) * 1000, 3)
    except TPSError as error:
        return result(False, error.stage, str(error))
    finally:
        device.close()
        client.close()
    total_ms = (monotonic() - started) * 1000
    return result(True, None, f"{label} registered {uuid} and relayed "
                              f"{len(payload)} bytes in {total_ms:.1f} ms")


def _describe_mismatch(sent, received):
    if len(sent) != len(received):
        return f"{len(received)} bytes ({quote(received, 40)}) instead of the {len(sent)} sent ({quote(sent, 40)})"
    first = next(i for i, (a, b) in enumerate(zip(sent, received)) if a != b)
    return (f"{len(received)} bytes that differ from the {len(sent)} sent at byte {first} "
            f"({quote(received, 40)} instead of {quote(sent, 40)})")


def check(host, port, *, uuid=None, auth_code="0000", payload=None, timeout=5.0, strict=False,
          family=0):
    """Check the TPS at host:port once; a CheckResult (it never raises for a TPS failure).

    Returns within ``timeout`` + GRACE (0.5 s) whatever the server does. ValueError
    for arguments no check can run with: a timeout that is not a finite number in
    (0, MAX_TIMEOUT], a uuid or auth code that cannot be a header value, a
    payload that is not bytes or is longer than a device reads.
    """
    timeout = validate_timeout(timeout)
    checked_address((host, port))
    validate_field("uuid", uuid, allow_none=True)
    validate_field("auth code", auth_code)
    validate_payload(payload)
    deadline = Deadline(timeout)
    return run_bounded(check_async(host, port, uuid=uuid, auth_code=auth_code, payload=payload,
                                   timeout=timeout, strict=strict, family=family, deadline=deadline),
                       (host, port), deadline)


MAX_FIELD = 1024        # characters in a uuid or auth code: they travel in header blocks


def validate_field(what, value, *, allow_none=False):
    """ValueError unless ``value`` can travel as a header value and a JSON string: a
    non-empty str of printable ASCII (CR and LF would split the message), at most
    MAX_FIELD characters."""
    if value is None and allow_none:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"the {what} must be a non-empty string, not {value!r}")
    if len(value) > MAX_FIELD:
        raise ValueError(f"the {what} must be at most {MAX_FIELD} characters, not {len(value)}")
    bad = next((c for c in value if not " " <= c <= "~"), None)
    if bad is not None:
        raise ValueError(f"the {what} must be printable ASCII, not {value!r} (it holds {bad!r})")


def validate_payload(payload):
    """ValueError unless ``payload`` is bytes a device can receive (at most the
    reader's DEFAULT_MAX_BODY: a longer relay would fail on our side, not the TPS's)."""
    if payload is None:
        return
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ValueError(f"the payload must be bytes, not {type(payload).__name__}")
    if len(payload) > DEFAULT_MAX_BODY:
        raise ValueError(f"the payload must be at most {DEFAULT_MAX_BODY} bytes, not {len(payload)}")


def run_bounded(coro, address, timeout):
    """Run a check coroutine on the kernel; past its deadline + GRACE, a failed result.

    ``timeout`` is the check's Deadline (or its seconds). Every wait inside has that
    deadline, so the guard should never fire; if it does, the result says so
    rather than hang.
    """
    deadline = timeout if isinstance(timeout, Deadline) else Deadline(timeout)
    guard = deadline.later(GRACE)
    try:
        return kernel.run(coro, timeout=guard)
    except TimeoutError:
        host, port = address
        return CheckResult(False, None, f"check: no result within {guard.seconds:g} s, although "
                                        "every stage has that deadline", (host, int(port)), "", 0,
                           {"total": round(guard.elapsed * 1000, 3)})
