"""One simulated connection to a TPS, the part devices and clients share.

An Endpoint owns a socket and a Reader, writes each request in ONE send (field
servers treat each read as one message), and sorts what arrives into replies and
relayed requests: a device waiting for its register reply may first receive
private data, and the other way round; nothing is dropped. Low-level failures
become the TPSError of the stage the caller names, with the time spent.

One task at a time may use an endpoint (two readers of one socket is FdBusy).
"""

import os
import socket
from time import monotonic

from . import net
from .errors import (ConnectError, ProtocolError, ReceiptError, Rejected, SendError,
                     UnknownDestination)
from .protocol import PrivateData, PrivateDataTemplate, Reader, StrictReader, quote


class Transcript:
    """What each side sent and received, in order, for ``--verbose`` and failures."""

    def __init__(self):
        self.start = monotonic()
        self.entries = []           # (ms since start, actor, "sent" | "received", bytes)

    def record(self, actor, direction, data):
        self.entries.append((round((monotonic() - self.start) * 1000, 3), actor, direction, bytes(data)))

    def lines(self, limit=300):
        arrow = {"sent": ">>", "received": "<<", "closed": "--"}
        for ms, actor, direction, data in self.entries:
            shown = quote(data, limit) if data else ""
            yield f"{ms:9.3f} ms {actor:6} {arrow.get(direction, direction)} {shown}".rstrip()

    def as_list(self):
        return [{"ms": ms, "actor": actor, "direction": direction,
                 "data": data.decode("latin-1")} for ms, actor, direction, data in self.entries]


TEMPLATE_CACHE = 64        # prebuilt requests kept per endpoint, one per destination


def format_ms(seconds):
    """Seconds as failure messages show them: '3.1 ms'."""
    return f"{seconds * 1000:.1f} ms"


class Endpoint:
    """A connection to a TPS at ``address`` for one simulated actor."""

    actor = "peer"
    __slots__ = ("uuid", "auth_code", "_templates", "address", "label", "timeout", "transcript",
                 "strict", "sock", "_reader", "_replies", "_requests", "name")

    def __init__(self, address, uuid, *, auth_code="0000", timeout=5.0, transcript=None,
                 strict=False):
        self.uuid = uuid
        self.name = self.actor          # who this is in transcripts
        self.auth_code = auth_code
        self._templates = {}
        self.address = tuple(address)
        self.label = net.format_address(self.address)
        self.timeout = timeout
        self.transcript = transcript
        self.strict = strict
        self.sock = None
        self._reader = StrictReader("client") if strict else Reader()
        self._replies = []          # arrived and not yet asked for; lists, since a deque
        self._requests = []         # costs 600 bytes and 10,000 devices hold two each

    @property
    def host_header(self):
        return self.label

    async def connect(self, timeout=None):
        """Open the connection; ConnectError says why not (refused, unresolved, silence)."""
        start = monotonic()
        timeout = self.timeout if timeout is None else timeout
        timed_out = False
        try:
            self.sock = await net.connect(self.address, timeout=timeout)
        except ConnectionRefusedError:
            reason = f"TPS {self.label} refused the connection"
        except ConnectionResetError as error:
            reason = _describe(error, self.label)
        except socket.gaierror as error:
            reason = f"cannot resolve {self.address[0]!r} ({error.strerror.rpartition(': ')[2]})"
        except TimeoutError:
            reason = f"TPS {self.label} did not accept the connection within {timeout:g} s"
            timed_out = True
        except OSError as error:
            reason = f"cannot connect to {self.label}: {os.strerror(error.errno) if error.errno else error}"
        else:
            reason = None
        if reason is not None:
            elapsed = monotonic() - start
            raise ConnectError(f"connect: {reason} after {format_ms(elapsed)}", elapsed, timed_out=timed_out)
        if self.transcript is not None:
            self.transcript.record(self.name, "connected", b"")
        return monotonic() - start

    async def _send(self, data, error_type, started, timeout=None):
        if self.sock is None:
            raise error_type(f"{error_type.stage}: not connected to {self.label}", 0.0)
        try:
            await self.sock.sendall(data, timeout=self.timeout if timeout is None else timeout)
        except TimeoutError:
            elapsed = monotonic() - started
            raise error_type(f"{error_type.stage}: TPS {self.label} did not take the request within "
                             f"{format_ms(elapsed)}", elapsed, timed_out=True) from None
        except OSError as error:
            elapsed = monotonic() - started
            raise error_type(f"{error_type.stage}: {_describe(error, self.label)} while sending, after "
                             f"{format_ms(elapsed)}", elapsed) from None
        if self.transcript is not None:
            self.transcript.record(self.name, "sent", data)

    async def _next(self, want_request, error_type, what, started, deadline):
        """The next relayed request (or reply), sorting what arrives meanwhile.

        The stage's ``error_type`` for silence until ``deadline``, a close, a reset or
        bytes that are not TPS messages. One frame: thousands of devices wait here.
        """
        queue = self._requests if want_request else self._replies
        stage = error_type.stage
        while not queue:
            try:
                data = await self.sock.recv(net.RECV_SIZE, timeout=max(0.0, deadline - monotonic()))
            except TimeoutError:
                elapsed = monotonic() - started
                partial = self._reader.buffered
                sent = (f"sent only {partial} bytes of a {what}, then nothing," if partial
                        else f"sent no {what}")
                raise error_type(f"{stage}: TPS {self.label} {sent} within {format_ms(elapsed)}",
                                 elapsed, timed_out=True) from None
            except OSError as error:
                elapsed = monotonic() - started
                raise error_type(f"{stage}: {_describe(error, self.label)} before the {what} after "
                                 f"{format_ms(elapsed)}", elapsed) from None
            if self.transcript is not None:
                self.transcript.record(self.name, "received" if data else "closed", data)
            if not data:
                elapsed = monotonic() - started
                partial = ""
                try:
                    self._reader.eof()
                except ProtocolError as error:
                    partial = f" (after a partial message: {quote(error.data)})"
                raise error_type(f"{stage}: TPS {self.label} closed the connection before the {what}"
                                 f"{partial} after {format_ms(elapsed)}", elapsed)
            try:
                self._take(data)        # framed now: garbage is blamed on this stage and read
            except ProtocolError as error:
                elapsed = monotonic() - started
                raise error_type(f"{stage}: TPS {self.label} answered bytes that are not a TPS message "
                                 f"({error}) after {format_ms(elapsed)}", elapsed) from None
        return queue.pop(0)

    async def send(self, dest, payload, *, timeout=None):
        """POST /PrivateData ``payload`` to ``dest`` as this endpoint's uuid; the ack Reply.

        UnknownDestination for 404, Rejected for 400 or another status, SendError for
        silence, closes and garbage.
        """
        started = monotonic()
        template = self._templates.get(dest)
        if template is None:
            if len(self._templates) >= TEMPLATE_CACHE:
                self._templates.clear()     # a client spraying many serials keeps few
            template = self._templates[dest] = PrivateDataTemplate(
                self.uuid, dest, host=self.host_header, auth_code=self.auth_code)
        await self._send(template.build(payload), SendError, started, timeout)
        ack = await self._next(False, SendError, "acknowledgement", started,
                               started + (self.timeout if timeout is None else timeout))
        elapsed = monotonic() - started
        if ack.status == 200:
            return ack
        reason = f"{ack.status} {ack.reason}".strip()
        if ack.status == 404:
            raise UnknownDestination(f"send: TPS {self.label} answered {reason}: {dest!r} is not "
                                     f"registered, after {format_ms(elapsed)}", elapsed)
        raise Rejected(f"send: TPS {self.label} answered {reason} after {format_ms(elapsed)}", elapsed)

    def receive(self, timeout=None):
        """Await the next private data relayed to this endpoint (a PrivateData).

        A plain function returning the coroutine: one frame fewer per waiting device.
        """
        started = monotonic()
        return self._next(True, ReceiptError, "private data", started,
                          started + (self.timeout if timeout is None else timeout))

    def _take(self, data):
        """Feed what arrived to the reader; queue each whole message as a relayed
        request or a reply. ProtocolError for bytes that are not TPS messages."""
        self._reader.feed(data)
        for message in self._reader:
            (self._requests if message.__class__ is PrivateData else self._replies).append(message)

    def deliver(self, data):
        """For a pool that reads this endpoint's socket: frame ``data`` and return the
        relayed requests in it. Replies are dropped: a pooled endpoint awaits none.
        ProtocolError for bytes that are not TPS messages."""
        self._take(data)
        self._replies.clear()
        requests, self._requests = self._requests, []
        return requests

    async def send_raw(self, data, timeout=None):
        """Write exact bytes in one send (scenarios, conformance tests)."""
        await self._send(data, SendError, monotonic(), timeout)

    def next_reply(self, timeout=None):
        """Await the next reply (Reply or RegisterReply) on this connection."""
        started = monotonic()
        return self._next(False, SendError, "reply", started,
                          started + (self.timeout if timeout is None else timeout))

    async def wait_closed(self, timeout=None):
        """True if the TPS closes (FIN or RST) within ``timeout``; what arrives first is
        kept for next_reply/receive. ``unread`` tells how much did."""
        deadline = monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                data = await self.sock.recv(net.RECV_SIZE, timeout=max(0.0, deadline - monotonic()))
            except TimeoutError:
                return False
            except OSError:
                return True
            if self.transcript is not None:
                self.transcript.record(self.name, "received" if data else "closed", data)
            if not data:
                return True
            try:
                self._take(data)
            except ProtocolError:
                pass        # garbage before a close: the close is what was asked about

    @property
    def unread(self):
        """Messages that arrived and were not asked for yet."""
        return len(self._replies) + len(self._requests)

    def close(self):
        if self.sock is not None:
            self.sock.close()


class Raw(Endpoint):
    """A connection for exact bytes: ``send_raw``, ``next_reply``, ``wait_closed``."""

    actor = "raw"
    __slots__ = ()

    def __init__(self, address, *, timeout=5.0, transcript=None, strict=False):
        super().__init__(address, None, timeout=timeout, transcript=transcript, strict=strict)


def _describe(error, label):
    """What a socket error means, said of the TPS at ``label``."""
    if isinstance(error, ConnectionResetError):
        return f"TPS {label} reset the connection"
    if isinstance(error, (BrokenPipeError, ConnectionAbortedError)):
        return f"TPS {label} closed the connection"
    return error.strerror or str(error) or type(error).__name__
