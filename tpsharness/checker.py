"""One check of a TPS: a device registers, a client sends it a unique payload, the
device receives exactly that payload, all within a deadline (docs/protocol.md section 6).
"""

from __future__ import annotations

import os
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, fields
from time import monotonic
from typing import Any

from . import kernel
from .client import Client
from .deadline import GRACE, Deadline, validate_timeout
from .defaults import AUTH_CODE, TIMEOUT
from .device import Device
from .endpoint import Payload, Transcript, format_ms
from .errors import ConnectError, InvalidArgument, ReceiptError, RegisterError, SendError, TPSError
from .ids import new_uuid
from .net import checked_address, format_address, ip_address
from .protocol import DEFAULT_MAX_BODY, quote

STAGES = ("connect", "register", "send", "receipt")
"""The stages of a check, in order: the one vocabulary of failures, timings, JSON and
metrics. ``send`` lasts from the client's request until its ack, ``receipt`` from the
ack until the device had the payload (0 or near it when the relay came first)."""


@dataclass
class CheckResult:
    """What one check found.

    ``stage`` names the failed stage (None when ok); ``timings`` holds, in ms, one
    entry per stage that ran (STAGES) plus ``total``; ``uuid`` is the device's;
    ``embedded`` says the check ran against the bundled fake TPS.
    """

    ok: bool
    stage: str | None
    message: str
    host: str
    port: int
    uuid: str
    payload_size: int
    timings: dict[str, float] = field(default_factory=dict)
    transcript: Transcript | None = field(default=None, repr=False)
    embedded: bool = False

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, as every other API takes an address."""
        return self.host, self.port

    def to_dict(self, transcript: bool = False) -> dict[str, object]:
        """The fields by their names, for JSON; ``transcript`` (a list of entries) only
        when asked, since it can be large."""
        data: dict[str, object] = {name: getattr(self, name) for name in RESULT_FIELDS}
        data["timings"] = dict(self.timings)
        if transcript:
            data["transcript"] = self.transcript.as_list() if self.transcript is not None else []
        return data

    def as_legacy_dict(self) -> dict[str, int | str]:
        """The legacy monitoring plugin's dict: status 0 ok / 1 failed; target 1 when the
        payload reached the device, else 0; errors the failure sentence ('' when ok)."""
        return {"status": 0 if self.ok else 1, "target": 1 if self.ok else 0,
                "errors": "" if self.ok else self.message}


RESULT_FIELDS = tuple(f.name for f in fields(CheckResult) if f.name != "transcript")
"""The keys of ``CheckResult.to_dict()`` (``transcript`` is added when asked)."""


class CheckProgress:
    """How far a running check got: the stage it is in and the timings so far, for the
    guard that may have to stop it (run_bounded)."""

    __slots__ = ("stage", "timings", "uuid", "payload_size")

    def __init__(self) -> None:
        self.stage: str = STAGES[0]
        self.timings: dict[str, float] = {}
        self.uuid = ""
        self.payload_size = 0


async def check_async(host: str, port: int, *, uuid: str | None = None, auth_code: str = AUTH_CODE,
                      payload: Payload | None = None, timeout: float = TIMEOUT, strict: bool = False,
                      family: int = 0, addresses: Sequence[str] | None = None,
                      deadline: Deadline | None = None,
                      progress: CheckProgress | None = None) -> CheckResult:
    """The check as a coroutine, to run on a Scheduler beside other tasks.

    Every stage waits until the one ``deadline`` (default: ``timeout`` seconds from
    now); a stage that ends after it is that stage's failure, even if it succeeded.
    ``addresses`` (IP addresses): connect to these instead of what ``host``
    resolves to. ``progress`` (a CheckProgress) is kept up to date for run_bounded.
    """
    address = checked_address((host, port))
    uuid = uuid or new_uuid()
    payload = bytes(payload) if payload is not None else os.urandom(8).hex().encode()
    transcript = Transcript()
    if deadline is None:
        deadline = Deadline(timeout)
    if progress is None:
        progress = CheckProgress()
    started = monotonic()       # not deadline.start: starting an embedded fake is not the TPS's time
    timings = progress.timings
    progress.uuid, progress.payload_size = uuid, len(payload)
    device = Device(address, uuid, auth_code=auth_code, timeout=timeout, transcript=transcript,
                    strict=strict, family=family, addresses=addresses)
    client = Client(address, auth_code=auth_code, timeout=timeout, transcript=transcript,
                    strict=strict, family=family, addresses=addresses)

    def result(ok: bool, stage: str | None, message: str) -> CheckResult:
        timings["total"] = round((monotonic() - started) * 1000, 3)
        return CheckResult(ok, stage, message, address[0], address[1], uuid, len(payload), timings,
                           transcript)

    def in_time(error_type: type[TPSError], done: str) -> None:
        """The stage ended: its failure if the deadline passed meanwhile."""
        if deadline.expired:
            elapsed = deadline.elapsed
            raise error_type(f"{done}, but the check's deadline of "
                             f"{format_ms(deadline.seconds)} passed after {format_ms(elapsed)}",
                             elapsed, timed_out=True)

    def ms_since(mark: float) -> float:
        return round((monotonic() - mark) * 1000, 3)

    label = format_address(address)
    try:
        mark = monotonic()
        await device.connect(deadline=deadline)
        await client.connect(deadline=deadline)
        in_time(ConnectError, f"TPS {label} accepted both connections")
        timings["connect"] = ms_since(mark)

        progress.stage, mark = "register", monotonic()
        await device.register(deadline=deadline)
        in_time(RegisterError, f"TPS {label} registered {uuid}")
        timings["register"] = ms_since(mark)

        progress.stage, mark = "send", monotonic()
        await client.send(uuid, payload, deadline=deadline)
        in_time(SendError, f"TPS {label} acknowledged the private data")
        timings["send"] = ms_since(mark)

        progress.stage, mark = "receipt", monotonic()
        relayed = await device.receive(deadline=deadline)
        if relayed.body != payload:
            elapsed = monotonic() - mark
            raise ReceiptError(f"device {uuid} received {_describe_mismatch(payload, relayed.body)} "
                               f"after {format_ms(elapsed)}", elapsed)
        in_time(ReceiptError, f"device {uuid} received the payload")
        timings["receipt"] = ms_since(mark)
    except TPSError as error:
        return result(False, error.stage, str(error))
    finally:
        device.close()
        client.close()
    total_ms = (monotonic() - started) * 1000
    return result(True, None, f"{label} registered {uuid} and relayed "
                              f"{len(payload)} bytes in {total_ms:.1f} ms")


def _describe_mismatch(sent: bytes, received: bytes) -> str:
    if len(sent) != len(received):
        return f"{len(received)} bytes ({quote(received, 40)}) instead of the {len(sent)} sent ({quote(sent, 40)})"
    first = next(i for i, (a, b) in enumerate(zip(sent, received)) if a != b)
    return (f"{len(received)} bytes that differ from the {len(sent)} sent at byte {first} "
            f"({quote(received, 40)} instead of {quote(sent, 40)})")


def check(host: str, port: int, *, uuid: str | None = None, auth_code: str = AUTH_CODE,
          payload: Payload | None = None, timeout: float = TIMEOUT, strict: bool = False,
          family: int = 0, addresses: Sequence[str] | None = None) -> CheckResult:
    """Check the TPS at host:port once; a CheckResult (it never raises for a TPS failure).

    Returns within ``timeout`` + GRACE (0.5 s) whatever the server does. A host that
    is no host name (a NUL, an empty label, a name IDNA cannot encode, 10 kB) fails
    the connect stage, as one that does not resolve. ``addresses``: IP addresses to
    connect to instead of what ``host`` resolves to (the exporter's, checked against
    its allowlist: nothing is resolved again).
    InvalidArgument (a ValueError) for arguments no check can run with: a timeout that is not a finite number in
    (0, MAX_TIMEOUT], a uuid or auth code that cannot be a header value, a
    payload that is not bytes or is longer than a device reads, ``addresses`` that
    are not IP addresses.
    """
    timeout = validate_timeout(timeout)
    checked_address((host, port))
    validate_field("uuid", uuid, allow_none=True)
    validate_field("auth code", auth_code)
    validate_payload(payload)
    if addresses is not None:
        addresses = validate_addresses(addresses)
    deadline = Deadline(timeout)
    progress = CheckProgress()
    return run_bounded(check_async(host, port, uuid=uuid, auth_code=auth_code, payload=payload,
                                   timeout=timeout, strict=strict, family=family,
                                   addresses=addresses, deadline=deadline, progress=progress),
                       (host, port), deadline, progress)


def validate_addresses(addresses: object) -> tuple[str, ...]:
    """``addresses`` as a tuple of IP address strings; InvalidArgument unless it is a
    non-empty sequence of them (a name here would be resolved, which is what passing
    addresses avoids)."""
    if isinstance(addresses, (str, bytes)) or not isinstance(addresses, Sequence) or not addresses:
        raise InvalidArgument(f"addresses must be a non-empty sequence of IP addresses, not {addresses!r}")
    for address in addresses:
        if not isinstance(address, str) or ip_address(address) is None:
            raise InvalidArgument(f"addresses must be IP addresses, not {address!r}")
    return tuple(addresses)


MAX_FIELD = 1024        # characters in a uuid or auth code: they travel in header blocks


def validate_field(what: str, value: object, *, allow_none: bool = False) -> None:
    """InvalidArgument unless ``value`` can travel as a header value and a JSON string: a
    non-empty str of printable ASCII (CR and LF would split the message), at most
    MAX_FIELD characters."""
    if value is None and allow_none:
        return
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"the {what} must be a non-empty string, not {value!r}")
    if len(value) > MAX_FIELD:
        raise InvalidArgument(f"the {what} must be at most {MAX_FIELD} characters, not {len(value)}")
    bad = next((c for c in value if not " " <= c <= "~"), None)
    if bad is not None:
        raise InvalidArgument(f"the {what} must be printable ASCII, not {value!r} (it holds {bad!r})")


def validate_payload(payload: object) -> None:
    """InvalidArgument unless ``payload`` is bytes a device can receive (at most the
    reader's DEFAULT_MAX_BODY: a longer relay would fail on our side, not the TPS's)."""
    if payload is None:
        return
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise InvalidArgument(f"the payload must be bytes, not {type(payload).__name__}")
    if len(payload) > DEFAULT_MAX_BODY:
        raise InvalidArgument(f"the payload must be at most {DEFAULT_MAX_BODY} bytes, not {len(payload)}")


def run_bounded(coro: Coroutine[Any, Any, CheckResult], address: tuple[str, int],
                timeout: Deadline | float, progress: CheckProgress | None = None) -> CheckResult:
    """Run a check coroutine on the kernel; past its deadline + GRACE, a failed result.

    ``timeout`` is the check's Deadline (or its seconds). Every wait inside has that
    deadline, so the guard should never fire; if it does, the result says so rather
    than hang, and names the stage ``progress`` (the check's CheckProgress) was in
    (connect when there is none).
    """
    deadline = timeout if isinstance(timeout, Deadline) else Deadline(timeout)
    guard = deadline.later(GRACE)
    progress = progress if progress is not None else CheckProgress()
    try:
        return kernel.run(coro, timeout=guard)
    except TimeoutError:
        host, port = address
        timings = dict(progress.timings, total=round(guard.elapsed * 1000, 3))
        return CheckResult(False, progress.stage,
                           f"{progress.stage}: TPS {format_address((host, int(port)))} gave no result "
                           f"within {guard.seconds:g} s, although every stage has that deadline",
                           host, int(port), progress.uuid, progress.payload_size, timings)
