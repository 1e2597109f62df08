"""The simulated device (an IP camera): register, heartbeat, receive private data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from time import monotonic

from .deadline import Deadline
from .defaults import AUTH_CODE, KEEPALIVE_INTERVAL, TIMEOUT
from .endpoint import Endpoint, Transcript, format_ms
from .errors import ReceiptError, RegisterError
from .ids import new_uuid
from .protocol import PrivateData, RegisterReply, quote, quote_text, register_request, status_text
from .text import printable


class Device(Endpoint):
    """A camera on one TCP connection to the TPS.

    ``await dev.connect()``, ``await dev.register()``, then ``await dev.receive()``
    for each relayed POST /PrivateData (a PrivateData whose ``body`` is the payload),
    ``await dev.send(client_uuid, data)`` to answer, ``await dev.run(on_data)`` to
    serve with heartbeats.
    """

    actor = "device"
    __slots__ = ("trailing_crlf", "keepalive_interval", "_cseq")

    def __init__(self, address: tuple[str, int], uuid: str | None = None, *,
                 auth_code: str = AUTH_CODE, timeout: float = TIMEOUT,
                 transcript: Transcript | None = None, strict: bool = False,
                 trailing_crlf: bool = False, family: int = 0,
                 addresses: Sequence[str] | None = None) -> None:
        super().__init__(address, uuid or new_uuid(), auth_code=auth_code, timeout=timeout,
                         transcript=transcript, strict=strict, family=family,
                         addresses=addresses)
        self.trailing_crlf = trailing_crlf
        self.keepalive_interval: int | None = None     # seconds, from the last register reply
        self._cseq = 0

    async def register(self, timeout: float | None = None, *,
                       deadline: Deadline | None = None) -> RegisterReply:
        """Register (or re-register: a heartbeat); the RegisterReply, verified.

        RegisterError unless the status is 200, MessageType is the register reply
        and ErrorNum is 200 (and for anything else in its place, a request too).
        """
        started = monotonic()
        deadline = self._deadline(timeout, deadline)
        request = self.register_request()
        await self._send(request, RegisterError, started, deadline)
        answer = await self._next(False, RegisterError, "register reply", started, deadline)
        elapsed = monotonic() - started
        after = f"after {format_ms(elapsed)}"
        if not isinstance(answer, RegisterReply):
            if answer.status != 200:
                raise RegisterError(f"TPS {self.label} answered {status_text(answer)} {after}", elapsed)
            raise RegisterError(f"TPS {self.label} answered {status_text(answer)} "
                                f"without the register reply JSON (body {quote(answer.body, 60)}) "
                                f"{after}", elapsed)
        if answer.status != 200:
            raise RegisterError(f"TPS {self.label} answered status {answer.status} "
                                f"{after}", elapsed)
        if answer.error_num != "200":
            raise RegisterError(f"TPS {self.label} refused {self.uuid!r} with ErrorNum "
                                f"{printable(str(answer.error_num), 20)} "
                                f"{quote_text(answer.error_string)} {after}", elapsed)
        interval = answer.keepalive_interval
        self.keepalive_interval = (int(interval) if isinstance(interval, str) and interval.isascii()
                                   and interval.isdigit() and len(interval) <= 9 and int(interval) > 0
                                   else None)
        return answer

    heartbeat = register

    def register_request(self, serial: str | None = None, *, auth_code: str | None = None,
                         trailing_crlf: bool | None = None) -> bytes:
        """The bytes of this device's next register request, with the next CSeq.

        ``serial`` registers another SerialNumber than the device's uuid (a scenario's
        second-serial step); ``auth_code`` and ``trailing_crlf`` default to the device's.
        Nothing is sent: ``register`` sends it, a scenario may split or repeat it.
        """
        self._cseq += 1
        return register_request(self.uuid if serial is None else serial, host=self.host_header,
                                cseq=str(self._cseq),
                                auth_code=self.auth_code if auth_code is None else auth_code,
                                trailing_crlf=self.trailing_crlf if trailing_crlf is None else trailing_crlf)

    async def run(self, on_data: Callable[[PrivateData], bytes | None] | None = None, *,
                  duration: float | None = None, heartbeat_fraction: float = 0.8) -> None:
        """Serve: receive private data and heartbeat before KeepAliveIntervel ends.

        ``on_data(message)`` is called for each PrivateData; if it returns bytes, they
        are sent back to ``message.src``. Runs until ``duration`` seconds passed
        (forever if None); TPSError subclasses end it.
        """
        end = None if duration is None else monotonic() + duration
        next_beat = monotonic() + (self.keepalive_interval or KEEPALIVE_INTERVAL) * heartbeat_fraction
        while end is None or monotonic() < end:
            now = monotonic()
            if now >= next_beat:
                await self.heartbeat()
                next_beat = monotonic() + (self.keepalive_interval or KEEPALIVE_INTERVAL) * heartbeat_fraction
                continue
            try:
                message = await self.receive(timeout=min(next_beat, end or next_beat) - now)
            except ReceiptError as error:
                if error.timed_out:         # a quiet spell: time to beat, or to stop
                    continue
                raise
            if on_data is not None:
                answer = on_data(message)
                if answer is not None:
                    await self.send(message.src, answer)
