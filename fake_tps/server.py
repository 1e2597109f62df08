"""The bundled fake TPS: the field server's observable behaviour, on our kernel.

It answers byte for byte as the field server does (docs/protocol.md sections 1-2)
and keeps its table of uuids the same way: PrivateData looks its DestUuid up first
(unknown: 404 and nothing else), then makes the sender reachable by its SrcUuid
(closing an older holder), acks and relays raw; SrcUuid and DestUuid both naming
the sender get 400; a register takes over a serial another connection holds.
Unlike the field server it frames requests by Content-Length (split and pipelined
requests work, one reply each), bounds what it buffers and queues, and never dies
from what a peer sends.

Unrecognised input (docs/protocol.md section 3) gets 400, is discarded, and cuts the
connection's idle timeout to ``bad_request_idle_timeout``; the connection stays.
Where a request must begin, bytes that cannot begin ``POST `` are unrecognised at
once (no waiting for a header block); so is a read of nothing but CR/LF (the CRLF
field devices send after a body is skipped when it arrives with it); and so is a
request whose header block cannot be parsed. Oversized input (a header block over
16 KiB, a body over ``max_body``) gets 413 and a close, so memory stays bounded.
A request must arrive whole within ``request_timeout`` of its first byte (as
nginx's client_header_timeout/client_body_timeout): a trickling peer is closed and
counted in ``stats.slow_closed``. Texts from peers are quoted by a short prefix in
events and reasons.

Choices where the field server is unsafe: a connection that registers a second,
unknown serial is closed without a reply (as in the field) and every table entry
it held is removed (the field server kept a dangling one and later crashed). With
``check_auth``, a register with the wrong AuthCode gets the register reply with
ErrorNum 401 and a PrivateData gets ``401 Unauthorized``. With ``strict_http``
requests are validated with h11 and one that is not strict HTTP/1.1 gets 400 and
a close.

Injected faults (the catalogue, and the steps of this server each one changes) are
in ``fake_tps.faults``. ``configure()`` and ``clear()`` run in the server's thread.
"""

from __future__ import annotations

import enum
import logging
import math
import queue
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from time import monotonic
from types import TracebackType
from typing import Any, TypeVar

from tpsharness import net
from tpsharness.defaults import HOST, KEEPALIVE_INTERVAL
from tpsharness.errors import InvalidArgument, MessageTooLarge, ProtocolError
from tpsharness.kernel import ReadGroup, Scheduler
from tpsharness.protocol import (DEFAULT_MAX_BODY, NEED_DATA, BadRequest, Message, PrivateData, Reader,
                                 RegisterRequest, StrictReader, quote_text, register_reply, reply)
from tpsharness.syscalls import NewTask, ReadWait, Sleep, WaitReadable, WriteWait, kill, spawn

from .faults import FAULTS, FIELD_READ_SIZE, GARBAGE, RELAYS_BEFORE_DROPPING, Fault, Hooks
from .faults import known_faults as _known_faults

__all__ = ["FakeTPS", "FAULTS", "Fault", "Stats", "OPTIONS", "MAX_REPLY_DELAY", "GARBAGE",
           "FIELD_READ_SIZE", "RELAYS_BEFORE_DROPPING"]

log = logging.getLogger("fake_tps")
T = TypeVar("T")

OPTIONS = ("keepalive_interval", "idle_timeout", "bad_request_idle_timeout", "request_timeout",
           "nul_replies", "strict_http", "check_auth", "max_body", "max_output", "reply_delay",
           "faults")
# The fake's own option defaults (the shared ones come from tpsharness.defaults).
IDLE_TIMEOUT = 300.0                # seconds
BAD_REQUEST_IDLE_TIMEOUT = 5.0      # seconds
REQUEST_TIMEOUT = 10.0              # seconds
MAX_OUTPUT = 4 * 1024 * 1024        # bytes
MAX_EVENT = 300             # characters of one event text kept (peers choose what it quotes)
DELAYED_ENTRY_COST = 256    # bytes a request waiting out reply_delay costs beyond its own
CALL_TIMEOUT = 10.0         # seconds a call from another thread waits for the server


def _number(name: str, value: object, *, whole: bool = False, zero_ok: bool = False,
            most: float | None = None) -> Any:
    """``value`` if it is a finite number (a whole one if ``whole``) above zero (or
    zero too, if ``zero_ok``) and at most ``most``; InvalidArgument naming the option otherwise."""
    kind = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not zero_ok) or (most is not None and value > most):
        wanted = "a whole number" if whole else "a number of seconds"
        bounds = f"{'>= 0' if zero_ok else '> 0'}{f' and <= {most:g}' if most is not None else ''}"
        raise InvalidArgument(f"{name} must be {wanted} {bounds}, not {value!r}")
    return value


MAX_REPLY_DELAY = 3600.0    # a longer delay only wedges the server's own stop


# The checks of the options whose impossible values would crash or wedge the server.
_CHECKS: dict[str, Callable[[Any], Any]] = {
    "keepalive_interval": lambda v: _number("keepalive_interval", v, whole=True),
    "idle_timeout": lambda v: _number("idle_timeout", v),
    "bad_request_idle_timeout": lambda v: _number("bad_request_idle_timeout", v),
    "request_timeout": lambda v: _number("request_timeout", v),
    "max_body": lambda v: _number("max_body", v, whole=True, zero_ok=True),
    "max_output": lambda v: _number("max_output", v, whole=True),
    "reply_delay": lambda v: _number("reply_delay", v, zero_ok=True, most=MAX_REPLY_DELAY),
    "faults": _known_faults,
}


def _checked(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with every value checked (ValueError for an impossible one)."""
    return {name: _CHECKS[name](value) if name in _CHECKS else value
            for name, value in options.items()}


class _Unset(enum.Enum):
    """The default of a ``configure()`` option that was not given (None is a value)."""

    UNSET = "unset"


UNSET = _Unset.UNSET


def _valid_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgument(f"port must be a whole number from 0 to 65535, not {port!r}")
    return port


@dataclass
class Stats:
    """What the fake saw, for tests and for the counters printed at exit."""

    connections: int = 0        # accepted, in all
    open_connections: int = 0
    registrations: int = 0      # first registrations of a serial on a connection
    heartbeats: int = 0         # the same serial again on the same connection
    replaced: int = 0           # older connections closed by a newer registration or takeover
    relays: int = 0
    not_found: int = 0
    bad_requests: int = 0       # 400 for unrecognised input; the connection stays
    protocol_errors: int = 0    # oversized (413) or, with strict_http, not HTTP (400): closed
    auth_failures: int = 0
    idle_closed: int = 0
    slow_closed: int = 0        # closed: a request not whole within request_timeout
    dropped: int = 0            # closed by us: output queue overflow, requests piling up
                                # under reply_delay, serial change

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _Peer:
    """One connection: its socket, reader, the uuids it holds and its output queue."""

    __slots__ = ("sock", "reader", "uuids", "serial", "idle_timeout", "last_received",
                 "request_started", "outq", "queued", "flushing", "silenced", "relayed",
                 "delayed")

    def __init__(self, sock: net.Socket, reader: Reader | StrictReader, idle_timeout: float) -> None:
        self.sock = sock
        self.reader = reader
        self.uuids: dict[str, None] = {}    # table keys pointing at this connection, in order (a set)
        self.serial: str | None = None      # the serial this connection registered
        self.idle_timeout = idle_timeout
        self.last_received = monotonic()    # the idle sweep counts from here
        self.request_started: float | None = None   # first byte of a request not yet whole
        self.outq: deque[bytes] | None = None       # made when a send would block
        self.queued = 0
        self.flushing = False
        self.silenced = False       # the half-reply fault stops answering
        self.relayed = 0            # private data relayed to this connection (drop-relays-after-3)
        self.delayed = 0            # bytes of its requests waiting out reply_delay

    @property
    def closed(self) -> bool:
        return self.sock.closed


class FakeTPS:
    """A fake TPS server. Run ``serve()`` on a Scheduler, or ``start_in_thread()``.

    The listening socket is bound at construction, so ``address`` is known at once
    (port 0 picks a free port). ``configure()`` and ``clear()`` may be called from
    any thread: while ``serve()`` runs in another thread they run in the server's,
    between two requests, and return when done.
    """

    # The options (OPTIONS; docs/protocol.md section 4), set by __init__ and configure().
    keepalive_interval: int
    idle_timeout: float
    bad_request_idle_timeout: float
    request_timeout: float
    nul_replies: bool
    strict_http: bool
    check_auth: str | None
    max_body: int
    max_output: int
    reply_delay: float
    faults: frozenset[str]
    _hooks: Hooks           # the active faults' functions, made when ``faults`` is set

    def __init__(self, host: str = HOST, port: int = 0, *,
                 keepalive_interval: int = KEEPALIVE_INTERVAL, idle_timeout: float = IDLE_TIMEOUT,
                 bad_request_idle_timeout: float = BAD_REQUEST_IDLE_TIMEOUT,
                 request_timeout: float = REQUEST_TIMEOUT,
                 nul_replies: bool = False, strict_http: bool = False, check_auth: str | None = None,
                 max_body: int = DEFAULT_MAX_BODY, max_output: int = MAX_OUTPUT,
                 reply_delay: float = 0.0, faults: Iterable[str] = ()) -> None:
        options = _checked(dict(
            keepalive_interval=keepalive_interval, idle_timeout=idle_timeout,
            bad_request_idle_timeout=bad_request_idle_timeout, request_timeout=request_timeout,
            nul_replies=nul_replies, strict_http=strict_http, check_auth=check_auth,
            max_body=max_body, max_output=max_output, reply_delay=reply_delay, faults=faults))
        self._apply(options)
        _valid_port(port)
        self.stats = Stats()
        self.events: deque[tuple[int, str]] = deque(maxlen=200)  # notable things, newest last
        self._event_seq = 0
        self._listener = net.listen(host, port)
        self.address: tuple[str, int] = self._listener.sock.getsockname()[:2]
        self._table: dict[str, _Peer] = {}      # uuid -> connection (devices and clients share it)
        self._peers: dict[int, _Peer] = {}      # fd -> every open connection
        self._connections = ReadGroup()
        self._next_sweep = 0.0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any] | None, Future[Any]]] = \
            queue.SimpleQueue()
        self._serving_lock = threading.Lock()   # orders calls from other threads with serve()'s end
        self._delayed: deque[tuple[float, _Peer, Message]] = deque()  # waiting out reply_delay
        self._delayer: int | None = None        # the tid of the task that answers them
        self._thread: threading.Thread | None = None    # where serve() runs, while it does

    def __repr__(self) -> str:
        return f"<FakeTPS {net.format_address(self.address)} {len(self._peers)} connections>"

    # -- what tests ask ---------------------------------------------------------------

    def _note(self, text: str) -> None:
        """Record something a test may need to know about (protocol error, drop).
        Cut to MAX_EVENT characters: 200 events of a peer's megabyte would stay."""
        if len(text) > MAX_EVENT:
            text = f"{text[:MAX_EVENT]}... ({len(text)} characters)"
        self._event_seq += 1
        self.events.append((self._event_seq, text))
        log.info("%s", text)

    def events_since(self, seq: int) -> list[str]:
        """Event texts after sequence number ``seq``; ``event_seq`` is the current one."""
        return [text for number, text in list(self.events) if number > seq]

    @property
    def event_seq(self) -> int:
        return self._event_seq

    def quiescent(self) -> bool:
        """True when every byte received has been read, every connection attempt
        accepted and every queued byte sent: run in one kernel with its peers, the
        fake has then answered all it was sent (tpsharness fuzz's model settles so)."""
        poller = select.poll()
        poller.register(self._listener.fd, select.POLLIN)
        for fd, peer in list(self._peers.items()):
            if peer.outq:
                return False
            poller.register(fd, select.POLLIN)
        return not poller.poll(0)

    def registered(self) -> set[str]:
        """The uuids the table holds now (device serials and client SrcUuids)."""
        return set(list(self._table))

    def configure(self, *, keepalive_interval: int | _Unset = UNSET,
                  idle_timeout: float | _Unset = UNSET,
                  bad_request_idle_timeout: float | _Unset = UNSET,
                  request_timeout: float | _Unset = UNSET, nul_replies: bool | _Unset = UNSET,
                  strict_http: bool | _Unset = UNSET, check_auth: str | None | _Unset = UNSET,
                  max_body: int | _Unset = UNSET, max_output: int | _Unset = UNSET,
                  reply_delay: float | _Unset = UNSET,
                  faults: Iterable[str] | _Unset = UNSET) -> None:
        """Change options between tests (faults, nul_replies, reply_delay, ...); the
        ones not given stay.

        The values are checked here (ValueError); they take effect together, between
        two requests, in the server's thread (see ``clear``)."""
        given = dict(
            keepalive_interval=keepalive_interval, idle_timeout=idle_timeout,
            bad_request_idle_timeout=bad_request_idle_timeout, request_timeout=request_timeout,
            nul_replies=nul_replies, strict_http=strict_http, check_auth=check_auth,
            max_body=max_body, max_output=max_output, reply_delay=reply_delay, faults=faults)
        checked = _checked({name: value for name, value in given.items() if value is not UNSET})
        self._in_server(lambda: self._apply(checked))

    def _apply(self, options: dict[str, Any]) -> None:
        for name, value in options.items():
            setattr(self, name, value)
        if "faults" in options:
            self._hooks = Hooks.of(self.faults)

    def clear(self) -> None:
        """Close every connection, empty the table and zero the stats (between tests).

        Like ``configure``, it runs in the server's thread, between two requests: a
        request is never answered half before and half after it."""
        self._in_server(self._clear_now)

    def _clear_now(self) -> None:
        self._close_all()
        self.stats = Stats(open_connections=self.stats.open_connections)

    # -- serving ------------------------------------------------------------------------

    async def serve(self) -> None:
        """Serve until killed or ``request_stop()``; then close every connection."""
        with self._serving_lock:
            self._thread = threading.current_thread()
        acceptor = await NewTask(self._accept_loop(), daemon=True)
        reader = await NewTask(self._read_loop(), daemon=True)
        try:
            await self._control()
        finally:
            for tid in (self._delayer, reader, acceptor):     # delayed replies end with the server
                if tid is not None:
                    kill(tid)
            self._delayed.clear()
            self._listener.close()
            self._close_all()
            self._stop_serving()

    async def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = await self._listener.accept()
            except OSError as error:        # EMFILE, ECONNABORTED...: wait, never die
                if self._listener.closed:
                    return
                log.warning("accept failed: %s", error)
                await Sleep(0.1)
                continue
            self.stats.connections += 1
            for taken in self._hooks.accept:
                if taken(self, sock):
                    break
            else:
                self._open(sock)

    def _new_reader(self) -> Reader | StrictReader:
        if self.strict_http:
            return StrictReader("server", max_body=self.max_body)
        return Reader(max_body=self.max_body, requests_only=True)

    def _open(self, sock: net.Socket) -> None:
        peer = _Peer(sock, self._new_reader(), self.idle_timeout)
        self._peers[sock.fd] = peer
        self._connections.add(sock.fd)
        self.stats.open_connections += 1

    async def _read_loop(self) -> None:
        """One task reads every connection: an idle one costs no task, no timer."""
        while True:
            ready: Iterable[int]
            try:
                ready = await WaitReadable(self._connections, max(0.0, self._next_sweep - monotonic()))
            except TimeoutError:
                ready = ()
            now = monotonic()
            for fd in ready:
                peer = self._peers.get(fd)
                if peer is not None:
                    self._serve_safely(self._read_from, peer, now)
            if now >= self._next_sweep:
                self._sweep(now)

    def _serve_safely(self, work: Callable[[_Peer, T], None], peer: _Peer, arg: T) -> None:
        """``work(peer, arg)``; a bug of ours there costs that connection, not the server."""
        try:
            work(peer, arg)
        except Exception:
            log.exception("internal error serving %s", peer.sock.peer)
            self._note(f"internal error serving {peer.sock.peer}: closed it")
            self._close(peer)

    def _read_from(self, peer: _Peer, now: float) -> None:
        hooks = self._hooks
        try:
            data = peer.sock.recv_nowait(hooks.read_size)
        except OSError as error:         # reset
            log.debug("connection %s ended: %s", peer.sock.peer, error)
            self._close(peer)
            return
        if data is None:
            return
        if not data:
            self._close(peer)
            return
        peer.last_received = now
        if hooks.read is not None:
            self._handle(peer, hooks.read(self, data))
            return
        reader = peer.reader
        if not reader.buffered and not data.strip(b"\r\n") and not self.strict_http:
            self._handle(peer, BadRequest(f"a read of nothing but CR/LF ({len(data)} bytes)", data))
            return
        reader.feed(data)
        try:
            for message in reader:
                if peer.closed:
                    return
                self._handle(peer, message)
        except ProtocolError as error:
            if isinstance(error, MessageTooLarge) or self.strict_http:
                self.stats.protocol_errors += 1
                self._note(f"protocol error from {peer.sock.peer}, closed it: {error}")
                self._send(peer, self._status_reply(413 if isinstance(error, MessageTooLarge) else 400))
                self._close(peer)
                return
            peer.reader = self._new_reader()        # what was read is discarded
            self._handle(peer, BadRequest(str(error), error.data))
        if peer.reader.buffered:
            if peer.request_started is None:
                peer.request_started = now
        else:
            peer.request_started = None

    def _handle(self, peer: _Peer, message: Message) -> None:
        if not self.reply_delay:
            self._dispatch(peer, message)
            return
        if peer.closed:
            return
        peer.delayed += len(message.raw) + DELAYED_ENTRY_COST
        if peer.delayed > self.max_output:
            self._note(f"dropped {peer.sock.peer}: {peer.delayed} bytes of requests wait out "
                       f"reply_delay")
            self.stats.dropped += 1
            self._close(peer)
            return
        self._delayed.append((monotonic() + self.reply_delay, peer, message))
        if self._delayer is None:
            self._delayer = spawn(self._dispatch_delayed(), daemon=True)

    async def _dispatch_delayed(self) -> None:
        """Answer what waits for ``reply_delay``, in arrival order, from one task: the
        server's stop kills it (a task per reply would outlive the stop)."""
        try:
            while self._delayed:
                due, peer, message = self._delayed[0]
                wait = due - monotonic()
                if wait > 0:
                    await Sleep(wait)
                    continue
                self._delayed.popleft()
                if peer.closed:
                    continue
                peer.delayed -= len(message.raw) + DELAYED_ENTRY_COST
                self._serve_safely(self._dispatch, peer, message)
        finally:
            self._delayer = None

    def _sweep(self, now: float) -> None:
        """Close connections idle past their timeout, or slower than request_timeout
        to send a whole request; plan the next sweep."""
        for peer in list(self._peers.values()):
            if peer.request_started is not None and now - peer.request_started >= self.request_timeout:
                self.stats.slow_closed += 1
                self._note(f"closed {peer.sock.peer}: a request not whole {self.request_timeout:g} s "
                           f"after its first byte ({peer.reader.buffered} bytes of it)")
                self._close(peer)
            elif now - peer.last_received >= peer.idle_timeout:
                self.stats.idle_closed += 1
                self._note(f"closed {peer.sock.peer}: nothing received for {peer.idle_timeout:g} s")
                self._close(peer)
        shortest = min(self.idle_timeout, self.bad_request_idle_timeout, self.request_timeout)
        self._next_sweep = now + min(1.0, max(0.01, shortest / 10))

    # -- the protocol ----------------------------------------------------------------------

    def _dispatch(self, peer: _Peer, message: Message) -> None:
        if peer.silenced:
            return
        for answered in self._hooks.message:
            if answered(self, peer, message):
                return
        if isinstance(message, RegisterRequest):
            self._register(peer, message)
        elif isinstance(message, PrivateData):
            self._private_data(peer, message)
        else:
            self._bad_request(peer, message)

    def _field_read(self, chunk: bytes) -> Message:
        """What a field server makes of one read: the first message in it, a
        PrivateData carrying the whole read (it relays what it read), or a 400."""
        reader = Reader(max_body=self.max_body)
        reader.feed(chunk)
        try:
            message = reader.next()
        except ProtocolError as error:
            return BadRequest(f"unreadable read: {error}", chunk)
        head_end = chunk.find(b"\r\n\r\n")
        if message is NEED_DATA and head_end >= 0 and chunk.startswith(b"POST /PrivateData "):
            head = Reader()
            head.feed(chunk[:head_end + 4].replace(b"Content-Length", b"X-Cut-Length"))
            message = head.next()
        if message is NEED_DATA:
            return BadRequest(f"a read that is not a whole request ({len(chunk)} bytes)", chunk)
        if isinstance(message, PrivateData):
            return PrivateData(message.src, message.dest, message.auth_code, message.body, chunk)
        return message

    def _register(self, peer: _Peer, request: RegisterRequest) -> None:
        if self.check_auth is not None and request.auth_code != self.check_auth:
            self.stats.auth_failures += 1
            self._send_reply(peer, self._register_reply(error_num="401", error_string="Unauthorized"))
            return
        serial = request.serial
        holder = self._table.get(serial)
        if peer.serial is not None and holder is None:
            # A second, unknown serial: the field server closes such a connection without
            # a reply (and kept a dangling entry that crashed it later); we close it and
            # keep nothing.
            self._note(f"{peer.sock.peer} registered {quote_text(serial)} after "
                       f"{quote_text(peer.serial)}: closed it")
            self.stats.dropped += 1
            first_serial = peer.serial
            self._close(peer)
            for keep in self._hooks.second_serial:
                keep(self, peer, first_serial)
            return
        if any(did_it(self, peer, serial, holder) for did_it in self._hooks.register):
            pass
        elif holder is peer:
            self.stats.heartbeats += 1
        else:
            # A first serial, or one another connection holds: taken over (the holder is
            # closed); a connection that had a serial keeps that one too.
            self._claim(serial, peer)
            if peer.serial is None:
                peer.serial = serial
            self.stats.registrations += 1
        data = self._register_reply()
        for change in self._hooks.register_reply:
            data = change(data)
        self._send_reply(peer, data)

    def _private_data(self, peer: _Peer, request: PrivateData) -> None:
        if self.check_auth is not None and request.auth_code != self.check_auth:
            self.stats.auth_failures += 1
            self._send_reply(peer, self._status_reply(401))
            return
        target = self._table.get(request.dest)       # first: an unknown one changes nothing
        for handled in self._hooks.private_data:
            if handled(self, peer, request, target):
                return
        if target is None:
            self.stats.not_found += 1
            self._send_reply(peer, self._status_reply(404))
            return
        if self._table.get(request.src) is not peer:
            self._claim(request.src, peer)       # the sender is now reachable by SrcUuid
        elif target is peer:
            self._bad_request(peer, BadRequest("PrivateData whose SrcUuid and DestUuid both name "
                                               "the sending connection"))
            return
        self._send_reply(peer, self._status_reply(200))
        if target.closed:
            return
        relay = self._hooks.relay
        if not relay:
            self.stats.relays += 1
            self._send(target, request.raw)
            return
        copies: tuple[bytes, ...] = (request.raw,)
        for change in relay:
            target, copies = change(self, peer, target, copies)
        if copies:
            self.stats.relays += 1
        for raw in copies:
            self._send(target, raw)

    def _bad_request(self, peer: _Peer, request: Message) -> None:
        reason = request.reason if isinstance(request, BadRequest) else \
            f"a reply ({getattr(request, 'status', '?')}) where a request belongs"
        self._note(f"400 to {peer.sock.peer}: {reason}")
        self.stats.bad_requests += 1
        peer.idle_timeout = min(peer.idle_timeout, self.bad_request_idle_timeout)
        self._send_reply(peer, self._status_reply(400))

    def _claim(self, uuid: str, peer: _Peer) -> None:
        """Point ``uuid`` at ``peer``; an older connection holding it is closed."""
        older = self._table.get(uuid)
        if older is not None and older is not peer:
            for settled in self._hooks.takeover:
                if settled(self, peer, older):
                    return
            self._note(f"{quote_text(uuid)} taken by {peer.sock.peer}: closed the older connection "
                       f"{older.sock.peer}")
            self.stats.replaced += 1
            self._close(older)
        self._table[uuid] = peer
        peer.uuids[uuid] = None

    # -- output: bounded, never blocking a handler ------------------------------------------

    def _status_reply(self, status: int) -> bytes:
        """A PrivateData-style reply in the form this fake is set to (field, NUL, strict)."""
        return reply(status, nul=self.nul_replies, strict=self.strict_http)

    def _register_reply(self, error_num: str = "200", error_string: str = "Success OK") -> bytes:
        return register_reply(utc_time=int(time.time()), keepalive_interval=self.keepalive_interval,
                              error_num=error_num, error_string=error_string)

    def _send_reply(self, peer: _Peer, data: bytes) -> None:
        for change in self._hooks.reply:
            data = change(self, peer, data)
        self._send(peer, data)

    def _send(self, peer: _Peer, data: bytes) -> None:
        """Queue ``data`` for ``peer``; a peer that stops reading is dropped, not buffered."""
        if peer.closed:
            return
        if not peer.outq:
            try:
                sent = peer.sock.send_nowait(data)
            except OSError:
                self._close(peer)
                return
            if sent == len(data):
                return
            data = data[sent:]
        if peer.outq is None:
            peer.outq = deque()
        peer.outq.append(data)
        peer.queued += len(data)
        if peer.queued > self.max_output:
            self._note(f"dropped {peer.sock.peer}: {peer.queued} bytes queued and it does not read")
            self.stats.dropped += 1
            self._close(peer)
        elif not peer.flushing:
            peer.flushing = True
            spawn(self._flush(peer), daemon=True)

    async def _flush(self, peer: _Peer) -> None:
        try:
            while peer.outq and not peer.closed:
                await WriteWait(peer.sock.fd)
                while peer.outq:     # None once the peer is closed
                    data = peer.outq[0]
                    sent = peer.sock.send_nowait(data)
                    if sent == 0:
                        break
                    peer.queued -= sent
                    if sent == len(data):
                        peer.outq.popleft()
                    else:
                        peer.outq[0] = data[sent:]
                        break
        except OSError:
            self._close(peer)
        finally:
            peer.flushing = False

    # -- closing -------------------------------------------------------------------------

    def _close(self, peer: _Peer) -> None:
        """Close ``peer`` (FIN, no bytes) and remove every table entry it holds; requests
        of it that wait out reply_delay go (they would only be skipped)."""
        for uuid in peer.uuids:
            if self._table.get(uuid) is peer:
                del self._table[uuid]
        peer.uuids.clear()
        peer.outq = None
        if peer.delayed:
            peer.delayed = 0
            self._delayed = deque(entry for entry in self._delayed if entry[1] is not peer)
        if self._peers.get(peer.sock.fd) is peer:
            del self._peers[peer.sock.fd]
            self.stats.open_connections -= 1
        peer.sock.close()           # forget_fd takes it out of the ReadGroup

    def _close_all(self) -> None:
        for peer in list(self._peers.values()):
            self._close(peer)
        self._table.clear()

    def _die(self) -> None:
        """Stop serving as a crashed server would: the listener first (whoever sees a
        connection close then finds the server dead), then every connection."""
        self._listener.close()
        self._close_all()
        self.request_stop()

    # -- control: stop and calls from other threads ----------------------------------------

    async def _control(self) -> None:
        """Run what other threads queue (they write a byte to wake us); return on stop."""
        while True:
            await ReadWait(self._wake_r)
            try:
                self._wake_r.recv(4096)
            except BlockingIOError:
                pass
            if self._run_queued(until_stop=True):
                return

    def _run_queued(self, *, until_stop: bool) -> bool:
        """Run the calls other threads queued, in order; True once a stop request was
        among them (with ``until_stop`` the calls behind it stay queued)."""
        while True:
            try:
                command, future = self._commands.get_nowait()
            except queue.Empty:
                return False
            if command is not None:
                _run_into(command, future)
                continue
            future.set_result(None)
            if until_stop:
                return True

    def _in_server(self, function: Callable[[], T]) -> T:
        """``function()`` where the server runs: at once if ``serve()`` runs in this
        thread or in none; else queued to the control task, which runs it between two
        requests, and waited for (its exception is raised here)."""
        with self._serving_lock:
            serving = self._thread
            if serving is None or serving is threading.current_thread():
                return function()
            future: Future[T] = Future()
            self._commands.put((function, future))
        self.wake()
        return future.result(timeout=CALL_TIMEOUT)

    def _stop_serving(self) -> None:
        """serve() ends: calls from other threads run in their own from now on, and the
        ones still queued run here (none is left waiting)."""
        with self._serving_lock:
            self._thread = None
            self._run_queued(until_stop=False)

    def wake(self) -> None:
        """Wake the control task (safe from any thread and from a signal handler)."""
        try:
            self._wake_w.send(b"\x00")
        except (BlockingIOError, OSError):
            pass

    def request_stop(self) -> None:
        """Ask ``serve()`` to end (from any thread or a signal handler)."""
        self._commands.put((None, Future()))
        self.wake()

    def start_in_thread(self) -> _ServerThread:
        """Serve in a background thread; a context manager that stops it cleanly."""
        return _ServerThread(self)

    def close(self) -> None:
        """Release the sockets of a server that is not serving."""
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()


def _run_into(command: Callable[[], Any], future: Future[Any]) -> None:
    """Run a call another thread queued; its outcome goes to the waiting ``future``."""
    try:
        future.set_result(command())
    except Exception as error:
        future.set_exception(error)


class _ServerThread:
    """``with fake.start_in_thread() as fake:``: serve on a thread of its own."""

    def __init__(self, server: FakeTPS) -> None:
        self.server = server
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FakeTPS:
        server = self.server
        thread = threading.Thread(target=self._run, name=f"fake-tps-{server.address[1]}",
                                  daemon=True)
        self._thread = thread
        with server._serving_lock:      # calls from now on go to that thread (serve() confirms)
            server._thread = thread
        thread.start()
        self._started.wait(10)
        return server

    def _run(self) -> None:
        scheduler = Scheduler()
        try:
            scheduler.new(self.server.serve())
            self._started.set()
            scheduler.run()
        except BaseException as error:      # reported by __exit__, never lost
            self._error = error
            log.exception("fake TPS thread crashed")
        finally:
            scheduler.close()
            self.server._stop_serving()     # if serve() never ran to its end
            self._started.set()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        server = self.server
        thread = self._thread
        assert thread is not None, "__exit__ without __enter__"
        server.request_stop()
        thread.join(10)
        alive = thread.is_alive()
        server.close()
        if alive:
            raise RuntimeError(f"{server!r} did not stop within 10 s")
        if self._error is not None and exc_type is None:
            raise RuntimeError(f"{server!r} crashed: {self._error!r}") from self._error
