"""One simulated connection to a TPS, the part devices and clients share.

An Endpoint owns a socket and a Reader, writes each request in ONE send (field
servers treat each read as one message), and sorts what arrives into replies and
relayed requests: a device waiting for its register reply may first receive
private data, and the other way round; nothing is dropped, up to a bound (a
flood of unread messages fails the stage). Low-level failures, a request where a
reply belongs and a deadline passed while bytes keep coming become the TPSError of
the stage the caller names, with the time spent.

One task at a time may use an endpoint (two readers of one socket is FdBusy).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Coroutine, Iterator, Sequence
from time import monotonic
from typing import Any, Literal, overload

from . import net
from .deadline import Deadline
from .defaults import AUTH_CODE, TIMEOUT
from .errors import (ConnectError, ProtocolError, ReceiptError, RegisterError, Rejected,
                     SendError, TPSError, UnknownDestination, UnreadOverflow)
from .protocol import (BadRequest, Message, PrivateData, PrivateDataTemplate, Reader, RegisterReply,
                       Reply, StrictReader, quote, status_text)
from .syscalls import Sleep

# A transcript keeps this much of what each actor sent and received, per direction,
# and says how much more it did not keep: a flooding server cannot fill the memory.
TRANSCRIPT_BYTES = 256 * 1024
TRANSCRIPT_ENTRIES = 4096


def format_size(size: int) -> str:
    """A byte count as messages show it: '812 bytes', '1.2 MB'."""
    if size < 1000:
        return f"{size} bytes"
    if size < 1_000_000:
        return f"{size / 1000:.1f} kB"
    return f"{size / 1_000_000:.1f} MB"


class Transcript:
    """What each side sent and received, in order, for ``--verbose`` and failures.

    Bounded: per actor and direction the first TRANSCRIPT_BYTES (in at most
    TRANSCRIPT_ENTRIES entries) are kept; past that only the count of bytes not kept
    grows, and the lines say so where the cut was made.
    """

    def __init__(self) -> None:
        self.start = monotonic()
        # (ms since start, actor, "sent" | "received" | ..., bytes), or for the place a
        # bound was reached (ms, actor, "cut", the direction cut: a str)
        self.entries: list[tuple[float, str, str, bytes | str]] = []
        self._kept: dict[tuple[str, str], list[int]] = {}   # -> [bytes kept, entries kept]
        self.not_kept: dict[tuple[str, str], int] = {}      # -> bytes that arrived past the bound

    def record(self, actor: str, direction: str, data: bytes | bytearray | memoryview) -> None:
        key = (actor, direction)
        kept = self._kept.get(key)
        if kept is None:
            kept = self._kept[key] = [0, 0]
        size = len(data)
        ms = round((monotonic() - self.start) * 1000, 3)
        if key in self.not_kept:
            self.not_kept[key] += size
            return
        if kept[0] + size > TRANSCRIPT_BYTES or kept[1] >= TRANSCRIPT_ENTRIES:
            room = TRANSCRIPT_BYTES - kept[0] if kept[1] < TRANSCRIPT_ENTRIES else 0
            if room > 0:
                self.entries.append((ms, actor, direction, bytes(data[:room])))
            self.not_kept[key] = size - max(room, 0)
            self.entries.append((ms, actor, "cut", direction))     # where the bound was reached
            kept[0] += max(room, 0)
            return
        kept[0] += size
        kept[1] += 1
        self.entries.append((ms, actor, direction, bytes(data)))

    def _cut_note(self, actor: str, direction: str) -> str:
        more = self.not_kept.get((actor, direction), 0)
        return (f"... {format_size(more)} more {direction} not kept (a transcript keeps "
                f"{format_size(TRANSCRIPT_BYTES)} per direction)")

    def lines(self, limit: int = 300) -> Iterator[str]:
        arrow = {"sent": ">>", "received": "<<", "closed": "--", "cut": ".."}
        for ms, actor, direction, data in self.entries:
            if isinstance(data, str):       # a "cut" entry: data is the direction cut
                shown = self._cut_note(actor, data)
            else:
                shown = quote(data, limit) if data else ""
            yield f"{ms:9.3f} ms {actor:6} {arrow.get(direction, direction)} {shown}".rstrip()

    def as_list(self) -> list[dict[str, float | str]]:
        return [{"ms": ms, "actor": actor, "direction": direction,
                 "data": self._cut_note(actor, data) if isinstance(data, str) else data.decode("latin-1")}
                for ms, actor, direction, data in self.entries]


TEMPLATE_CACHE = 64        # prebuilt requests kept per endpoint, one per destination

# Messages an endpoint keeps that nobody asked for yet: past either bound, a TPS that
# floods the connection is the failure of the stage that reads it.
MAX_UNREAD = 4096
MAX_UNREAD_BYTES = 16 * 1024 * 1024
_CHECK_UNREAD_FROM = 32             # below this many queued, the bounds are not summed
ARRIVED_READS = 64                  # reads read_arrived makes at most (1 MB)

Payload = bytes | bytearray | memoryview
"""What private data may carry: any bytes-like object."""


def format_ms(seconds: float) -> str:
    """Seconds as failure messages show them: '3.1 ms'."""
    return f"{seconds * 1000:.1f} ms"


def start_line(message: object) -> str:
    """The first line of a message as it arrived, for messages: 'POST /TransProxy HTTP/1.1'."""
    raw = getattr(message, "raw", b"") or b""
    line = bytes(raw).split(b"\r\n", 1)[0].decode("latin-1")
    return line if len(line) <= 60 else line[:60] + "..."


class Endpoint:
    """A connection to a TPS at ``address`` for one simulated actor.

    Every waiting method takes ``timeout=`` (seconds, default the endpoint's) and
    ``deadline=`` (a Deadline: the instant a whole check must end); given both, the
    sooner holds.
    """

    actor = "peer"
    __slots__ = ("uuid", "auth_code", "_templates", "address", "label", "timeout", "transcript",
                 "strict", "sock", "_reader", "_replies", "_requests", "name", "family",
                 "_unreadable", "_misplaced", "peer_closed", "addresses")

    def __init__(self, address: tuple[str, int], uuid: str, *, auth_code: str = AUTH_CODE,
                 timeout: float = TIMEOUT, transcript: Transcript | None = None,
                 strict: bool = False, family: int = 0,
                 addresses: Sequence[str] | None = None) -> None:
        self.uuid = uuid
        self.name = self.actor          # who this is in transcripts
        self.auth_code = auth_code
        self._templates: dict[str, PrivateDataTemplate] = {}
        self.address: tuple[str, int] = net.checked_address(address)
        self.label: str = net.format_address(self.address)
        self.timeout = timeout
        self.transcript = transcript
        self.strict = strict
        self.family = family            # socket.AF_INET / AF_INET6 to use only that; 0 either
        # the IP addresses to connect to, already resolved (and checked), or None to resolve
        self.addresses = tuple(addresses) if addresses is not None else None
        self.sock: net.Socket | None = None
        self._reader: Reader | StrictReader = StrictReader("peer") if strict else Reader()
        self._replies: list[Message] = []       # arrived and not yet asked for; lists, since a
        self._requests: list[PrivateData] = []  # deque costs 600 bytes and 10,000 devices hold two each
        # Bytes that could not be read as a message, after messages that could (the error
        # is raised once those are taken), and a message that arrived where a reply
        # belongs (raised, and kept for take_bytes).
        self._unreadable: ProtocolError | None = None
        self._misplaced = b""
        self.peer_closed = False        # the TPS closed (or reset) this connection

    @property
    def host_header(self) -> str:
        return self.label

    def _deadline(self, timeout: float | None, deadline: Deadline | None) -> Deadline:
        """The Deadline a call waits to: ``deadline`` and ``timeout`` seconds, the sooner;
        the endpoint's own timeout when neither is given."""
        if deadline is not None:
            return deadline if timeout is None else deadline.sooner(timeout)
        return Deadline(self.timeout if timeout is None else timeout)

    async def connect(self, timeout: float | None = None, *,
                      deadline: Deadline | None = None) -> float:
        """Open the connection; ConnectError says why not (refused, unresolved, silence)."""
        start = monotonic()
        deadline = self._deadline(timeout, deadline)
        timed_out = False
        reason: str | None
        try:
            self.sock = await net.connect(self.address, deadline=deadline, family=self.family,
                                          addresses=self.addresses)
        except ConnectionRefusedError as error:
            several = "every address failed" in str(error)
            reason = (f"TPS {self.label} refused the connection" if not several
                      else f"TPS {self.label} refused the connection ({str(error).partition('(')[2]}")
        except ConnectionResetError as error:
            reason = _describe(error, self.label)
        except socket.gaierror as error:        # net says why, after "connect to LABEL: "
            reason = str(error.strerror or error).removeprefix(f"connect to {self.label}: ")
        except TimeoutError:
            reason = f"TPS {self.label} did not accept the connection within {format_ms(monotonic() - start)}"
            timed_out = True
        except OSError as error:
            reason = f"cannot connect to {self.label}: {os.strerror(error.errno) if error.errno else error}"
        else:
            reason = None
        if reason is not None:
            elapsed = monotonic() - start
            raise ConnectError(f"{reason} after {format_ms(elapsed)}", elapsed, timed_out=timed_out)
        self.peer_closed = False
        self._unreadable = None
        self._misplaced = b""
        if self.transcript is not None:
            self.transcript.record(self.name, "connected", b"")
        return monotonic() - start

    async def _send(self, data: bytes, error_type: type[TPSError], started: float,
                    deadline: Deadline) -> None:
        if self.sock is None:
            raise error_type(f"not connected to {self.label}", 0.0)
        try:
            await self.sock.sendall(data, deadline=deadline)
        except TimeoutError:
            elapsed = monotonic() - started
            raise error_type(f"TPS {self.label} did not take the request within "
                             f"{format_ms(elapsed)}", elapsed, timed_out=True) from None
        except OSError as error:
            elapsed = monotonic() - started
            raise error_type(f"{_describe(error, self.label)} while sending, after "
                             f"{format_ms(elapsed)}", elapsed) from None
        if self.transcript is not None:
            self.transcript.record(self.name, "sent", data)

    @overload
    async def _next(self, want_request: Literal[True], error_type: type[TPSError], what: str,
                    started: float, deadline: Deadline) -> PrivateData: ...

    @overload
    async def _next(self, want_request: Literal[False], error_type: type[TPSError], what: str,
                    started: float, deadline: Deadline) -> Reply | RegisterReply: ...

    async def _next(self, want_request: bool, error_type: type[TPSError], what: str,
                    started: float, deadline: Deadline) -> PrivateData | Reply | RegisterReply:
        """The next relayed request (or reply), sorting what arrives meanwhile.

        The stage's ``error_type`` when ``deadline`` passes (even while bytes keep
        arriving: a flood), for a close, a reset, bytes that are not TPS messages, a
        request where a reply belongs, or more unread messages than an endpoint keeps.
        Between reads that leave it waiting it lets the other tasks run. One frame:
        thousands of devices wait here.
        """
        sock = self.sock
        if sock is None:
            raise error_type(f"not connected to {self.label}", 0.0)
        queue: list[PrivateData] | list[Message] = self._requests if want_request else self._replies
        received = 0
        requests_before = len(self._requests)
        while not queue:
            if self._unreadable is not None:
                elapsed = monotonic() - started
                raise error_type(f"TPS {self.label} answered bytes that are not a TPS message "
                                 f"({self._unreadable}) after {format_ms(elapsed)}", elapsed)
            if not want_request and len(self._requests) > requests_before:
                echo = self._own_request_since(requests_before)
                if echo is not None:    # a TPS acks before it relays: this is an echo
                    elapsed = monotonic() - started
                    raise error_type(f"TPS {self.label} sent a request ({start_line(echo)}) "
                                     f"(our own request, sent back) where the {what} belongs after "
                                     f"{format_ms(elapsed)}", elapsed)
            if received:                # bytes came, but not the message: a flood cannot
                if deadline.expired:    # keep this loop (or the kernel) from its deadline
                    elapsed = monotonic() - started
                    raise error_type(f"TPS {self.label} sent {format_size(received)} but no "
                                     f"{what} within {format_ms(elapsed)}", elapsed, timed_out=True)
                await _YIELD
            try:
                data = await sock.recv(net.RECV_SIZE, deadline=deadline)
            except TimeoutError:
                elapsed = monotonic() - started
                buffered = self._reader.buffered
                if buffered:
                    sent = f"sent only {buffered} bytes of a {what}, then nothing,"
                elif received:
                    sent = f"sent {format_size(received)} but no {what}"
                else:
                    sent = f"sent no {what}"
                raise error_type(f"TPS {self.label} {sent} within {format_ms(elapsed)}",
                                 elapsed, timed_out=True) from None
            except OSError as error:
                elapsed = monotonic() - started
                self.peer_closed = True
                raise error_type(f"{_describe(error, self.label)} before the {what} after "
                                 f"{format_ms(elapsed)}", elapsed) from None
            if self.transcript is not None:
                self.transcript.record(self.name, "received" if data else "closed", data)
            if not data:
                self.peer_closed = True
                elapsed = monotonic() - started
                partial = ""
                try:
                    self._reader.eof()
                except ProtocolError as error:
                    partial = f" (after a partial message: {quote(error.data)})"
                raise error_type(f"TPS {self.label} closed the connection before the {what}"
                                 f"{partial} after {format_ms(elapsed)}", elapsed)
            received += len(data)
            try:
                self._take(data)        # framed now: garbage is blamed on this stage and read
            except UnreadOverflow as error:
                elapsed = monotonic() - started
                raise error_type(f"TPS {self.label} {error} while this endpoint waited "
                                 f"for the {what}, after {format_ms(elapsed)}", elapsed) from None
            except ProtocolError as error:
                elapsed = monotonic() - started
                raise error_type(f"TPS {self.label} answered bytes that are not a TPS message "
                                 f"({error}) after {format_ms(elapsed)}", elapsed) from None
        if want_request:
            return self._requests.pop(0)
        message = self._replies.pop(0)
        if message.__class__ is Reply or message.__class__ is RegisterReply:
            return message
        self._misplaced = message.raw
        elapsed = monotonic() - started
        if isinstance(message, BadRequest):        # framed, but neither a reply nor a request
            sent = f"sent bytes that are not a reply ({start_line(message)})"
        else:
            sent = f"sent a request ({start_line(message)})"
        raise error_type(f"TPS {self.label} {sent} where the {what} belongs after "
                         f"{format_ms(elapsed)}", elapsed)

    async def send(self, dest: str, payload: bytes, *, timeout: float | None = None,
                   deadline: Deadline | None = None) -> Reply | RegisterReply:
        """POST /PrivateData ``payload`` to ``dest`` as this endpoint's uuid; the ack Reply.

        UnknownDestination for 404, Rejected for 400 or another status, SendError for
        silence, closes, garbage and a request where the ack belongs.
        """
        started = monotonic()
        deadline = self._deadline(timeout, deadline)
        template = self._templates.get(dest)
        if template is None:
            if len(self._templates) >= TEMPLATE_CACHE:
                self._templates.clear()     # a client spraying many serials keeps few
            template = self._templates[dest] = PrivateDataTemplate(
                self.uuid, dest, host=self.host_header, auth_code=self.auth_code)
        await self._send(template.build(payload), SendError, started, deadline)
        ack = await self._next(False, SendError, "acknowledgement", started, deadline)
        elapsed = monotonic() - started
        if ack.status == 200:
            return ack
        reason = status_text(ack)
        if ack.status == 404:
            raise UnknownDestination(f"TPS {self.label} answered {reason}: {dest!r} is not "
                                     f"registered, after {format_ms(elapsed)}", elapsed)
        raise Rejected(f"TPS {self.label} answered {reason} after {format_ms(elapsed)}", elapsed)

    def receive(self, timeout: float | None = None, *,
                deadline: Deadline | None = None) -> Coroutine[Any, Any, PrivateData]:
        """Await the next private data relayed to this endpoint (a PrivateData).

        A plain function returning the coroutine: one frame fewer per waiting device.
        """
        return self._next(True, ReceiptError, "private data", monotonic(),
                          self._deadline(timeout, deadline))

    def _take(self, data: bytes) -> None:
        """Feed what arrived to the reader; queue each whole message as a relayed
        request or a reply. A request where only a reply can be (anything but private
        data, or our own private data sent back) is queued with the replies, in its
        place, for the reply's reader to blame. ProtocolError for bytes that are not
        TPS messages, UnreadOverflow past MAX_UNREAD(_BYTES)."""
        if self._unreadable is not None:
            raise self._unreadable          # the reader stopped at bytes it cannot read
        self._reader.feed(data)
        requests, replies = self._requests, self._replies
        queued = len(requests) + len(replies)
        try:
            for message in self._reader:
                if message.__class__ is PrivateData:
                    requests.append(message)
                else:
                    replies.append(message)
        except ProtocolError as error:
            if len(requests) + len(replies) == queued:
                raise
            self._unreadable = error        # raised once the messages before it are taken
        if len(requests) > _CHECK_UNREAD_FROM or len(replies) > _CHECK_UNREAD_FROM:
            self._check_unread()

    def _own_request_since(self, index: int) -> PrivateData | None:
        """Our own private data among the requests queued from ``index`` on, taken out;
        None if there is none. (A TPS relays to our own connection only after the ack.)"""
        uuid = self.uuid
        for position in range(index, len(self._requests)):
            if self._requests[position].src == uuid:
                return self._requests.pop(position)
        return None

    def _check_unread(self) -> None:
        count = len(self._requests) + len(self._replies)
        size = sum(len(m.raw) for m in self._requests) + sum(len(m.raw) for m in self._replies)
        if count > MAX_UNREAD or size > MAX_UNREAD_BYTES:
            self._requests.clear()      # dropped: the stage fails, nobody will read them
            self._replies.clear()
            raise UnreadOverflow(f"sent {count} messages ({format_size(size)}) nobody asked for, "
                                 f"more than an endpoint keeps ({MAX_UNREAD} messages, "
                                 f"{format_size(MAX_UNREAD_BYTES)})")

    def deliver(self, data: bytes) -> list[PrivateData]:
        """For a pool that reads this endpoint's socket: frame ``data`` and return the
        relayed requests in it. Replies are dropped: a pooled endpoint awaits none.
        ProtocolError for bytes that are not TPS messages."""
        self._take(data)
        self._replies.clear()
        requests, self._requests = self._requests, []
        return requests

    async def send_raw(self, data: bytes, timeout: float | None = None, *,
                       deadline: Deadline | None = None) -> None:
        """Write exact bytes in one send (scenarios, conformance tests)."""
        await self._send(data, SendError, monotonic(), self._deadline(timeout, deadline))

    def next_reply(self, timeout: float | None = None, *, deadline: Deadline | None = None,
                   stage: str = "send") -> Coroutine[Any, Any, Reply | RegisterReply]:
        """Await the next reply (Reply or RegisterReply) on this connection; the
        failure is blamed on ``stage`` ("send" or "register")."""
        error_type: type[TPSError]
        if stage == "register":
            error_type, what = RegisterError, "register reply"
        else:
            error_type, what = SendError, "reply"
        return self._next(False, error_type, what, monotonic(), self._deadline(timeout, deadline))

    async def wait_closed(self, timeout: float | None = None, *,
                          deadline: Deadline | None = None) -> bool:
        """True if the TPS closes (FIN or RST) within ``timeout``; what arrives first is
        kept for next_reply/receive. ``unread`` tells how much did. Bytes past what
        can be framed or kept are read and dropped: the close is what was asked about."""
        sock = self.sock
        if sock is None:
            raise ConnectError(f"not connected to {self.label}", 0.0)
        deadline = self._deadline(timeout, deadline)
        discard = False
        while True:
            if deadline.expired:
                return False
            try:
                data = await sock.recv(net.RECV_SIZE, deadline=deadline)
            except TimeoutError:
                return False
            except OSError:
                self.peer_closed = True
                return True
            if self.transcript is not None:
                self.transcript.record(self.name, "received" if data else "closed", data)
            if not data:
                self.peer_closed = True
                return True
            if not discard:
                try:
                    self._take(data)
                except ProtocolError:
                    discard = True      # the reader is unusable now, and must not grow
            await _YIELD

    def take_bytes(self) -> bytes:
        """The bytes that arrived and were not taken as the messages asked for, in
        order: a message that came where a reply belongs, unread replies, and what the
        reader could not (yet) read as a message. Reading then starts afresh after them."""
        data = self._misplaced + b"".join(m.raw for m in self._replies) + self._reader.take()
        self._misplaced = b""
        self._replies.clear()
        self._unreadable = None
        return data

    async def next_bytes(self, size: int, timeout: float | None = None, *,
                         deadline: Deadline | None = None) -> bytes:
        """The next ``size`` bytes on this connection as they were sent, not read as
        messages (``take_bytes`` first, then what arrives); fewer if the TPS closes or
        the deadline passes first. What arrives past them is read as messages again."""
        sock = self.sock
        if sock is None:
            raise ConnectError(f"not connected to {self.label}", 0.0)
        deadline = self._deadline(timeout, deadline)
        data = self.take_bytes()
        while len(data) < size and not self.peer_closed and not deadline.expired:
            try:
                chunk = await sock.recv(net.RECV_SIZE, deadline=deadline)
            except TimeoutError:
                break
            except OSError:
                self.peer_closed = True
                break
            if self.transcript is not None:
                self.transcript.record(self.name, "received" if chunk else "closed", chunk)
            if not chunk:
                self.peer_closed = True
                break
            data += chunk
        if len(data) > size:
            self._take(data[size:])
            data = data[:size]
        return data

    def read_arrived(self) -> None:
        """Read what has already arrived, without waiting, and sort it as the waiting
        calls do: an exact replay looks so for what no step asked for (``unasked``).
        Bytes that are not TPS messages end the reading there (the next waiting call
        raises, ``take_bytes`` takes them); a close sets ``peer_closed``. At most
        ARRIVED_READS reads: a flood is left in the socket for the steps that follow."""
        sock = self.sock
        if sock is None or sock.closed:
            return
        for _ in range(ARRIVED_READS):
            if self.peer_closed or self._unreadable is not None:
                return
            try:
                data = sock.recv_nowait(net.RECV_SIZE)
            except OSError:
                self.peer_closed = True
                return
            if data is None:
                return
            if self.transcript is not None:
                self.transcript.record(self.name, "received" if data else "closed", data)
            if not data:
                self.peer_closed = True
                return
            try:
                self._take(data)
            except ProtocolError as error:      # UnreadOverflow too
                self._unreadable = error

    def unasked(self) -> list[str]:
        """What arrived and no call took yet, one piece per message (replies first,
        then relayed requests, each quoted), then in words what is not (yet) a whole
        message; empty when nothing is left."""
        pieces = [quote(message.raw, 120) for message in (*self._replies, *self._requests)]
        if self._misplaced:
            pieces.append(quote(self._misplaced, 120))
        if isinstance(self._unreadable, UnreadOverflow):
            pieces.append(str(self._unreadable))
        elif self._unreadable is not None:
            pieces.append(f"bytes that are not a TPS message ({self._unreadable})")
        elif self._reader.buffered:
            pieces.append(f"{format_size(self._reader.buffered)} of a message not whole yet")
        return pieces

    @property
    def unread(self) -> int:
        """Messages that arrived and were not asked for yet."""
        return len(self._replies) + len(self._requests)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


class Raw(Endpoint):
    """A connection for exact bytes: ``send_raw``, ``next_reply``, ``wait_closed``."""

    actor = "raw"
    __slots__ = ()

    def __init__(self, address: tuple[str, int], *, timeout: float = TIMEOUT,
                 transcript: Transcript | None = None, strict: bool = False,
                 family: int = 0) -> None:
        super().__init__(address, "", timeout=timeout, transcript=transcript, strict=strict,
                         family=family)


_YIELD = Sleep(0)       # let the other ready tasks run (one shared, immutable call)


def _describe(error: OSError, label: str) -> str:
    """What a socket error means, said of the TPS at ``label``."""
    if isinstance(error, ConnectionResetError):
        return f"TPS {label} reset the connection"
    if isinstance(error, (BrokenPipeError, ConnectionAbortedError)):
        return f"TPS {label} closed the connection"
    return error.strerror or str(error) or type(error).__name__
