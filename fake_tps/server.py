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
"""

import logging
import math
import queue
import select
import socket
import threading
import time
from time import monotonic
from collections import deque
from concurrent.futures import Future
from dataclasses import asdict, dataclass

from tpsharness import net
from tpsharness.errors import MessageTooLarge, ProtocolError
from tpsharness.kernel import ReadGroup, Scheduler
from tpsharness.protocol import (DEFAULT_MAX_BODY, NEED_DATA, BadRequest, PrivateData, Reader,
                                 RegisterRequest, StrictReader, quote_text, register_reply, reply)
from tpsharness.syscalls import NewTask, ReadWait, Sleep, WaitReadable, WriteWait, kill, spawn

log = logging.getLogger("fake_tps")

# Injected faults, for the harness's own tests. Each name is one misbehaviour.
FAULTS = {
    "close-on-accept": "close every connection (FIN) right after accepting it",
    "reset-on-accept": "reset every connection (RST) right after accepting it",
    "silent": "accept and read, never answer anything",
    "half-reply": "send the first half of every reply, then nothing more on that connection",
    "garbage-replies": "answer every request with bytes that are not HTTP",
    "corrupt-register-replies": "answer registers 200 OK with a body that is not the register JSON",
    "forget-registrations": "answer registers 200 OK but keep no table entry (private data gets 404)",
    "reject-registers": "answer every register 400 Bad Request",
    "drop-relays": "acknowledge private data but never relay it",
    "corrupt-relays": "relay private data with its last byte changed",
    "duplicate-relays": "relay each private data twice",
    "die-on-dangling-entry": "like the field server, keep a dangling entry when a connection "
                             "registers a second serial, and die (stop serving) on private data for it",
    "one-read-one-message": "read like a field server: each TCP read (of up to 4096 bytes) is one "
                            "whole message, so split requests get 400s, pipelined ones are "
                            "swallowed, large bodies are cut (docs/protocol.md section 3)",
    # Plausible server bugs, planted for tpsharness fuzz to find.
    "forget-after-heartbeat": "drop a serial's table entry when its device heartbeats (the "
                              "heartbeat is still answered 200)",
    "misroute-relays": "relay private data to another registered device, not its destination, "
                       "when two or more are registered",
    "drop-relays-after-3": "acknowledge but never relay private data past the 3rd relayed to one "
                           "connection",
    "takeover-closes-newer": "on a takeover, close the newer connection instead of the older one",
}
RELAYS_BEFORE_DROPPING = 3      # the drop-relays-after-3 fault
FIELD_READ_SIZE = 4096

OPTIONS = ("keepalive_interval", "idle_timeout", "bad_request_idle_timeout", "request_timeout",
           "nul_replies", "strict_http", "check_auth", "max_body", "max_output", "reply_delay",
           "faults")
MAX_EVENT = 300             # characters of one event text kept (peers choose what it quotes)


def _known_faults(faults):
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(FAULTS)}")
    return frozenset(faults)


def _number(name, value, *, whole=False, zero_ok=False, most=None):
    """``value`` if it is a finite number (a whole one if ``whole``) above zero (or
    zero too, if ``zero_ok``) and at most ``most``; ValueError naming the option otherwise."""
    kind = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not zero_ok) or (most is not None and value > most):
        wanted = "a whole number" if whole else "a number of seconds"
        bounds = f"{'>= 0' if zero_ok else '> 0'}{f' and <= {most:g}' if most is not None else ''}"
        raise ValueError(f"{name} must be {wanted} {bounds}, not {value!r}")
    return value


MAX_REPLY_DELAY = 3600.0    # a longer delay only wedges the server's own stop


# The checks of the options whose impossible values would crash or wedge the server.
_CHECKS = {
    "keepalive_interval": lambda v: _number("keepalive_interval", v, whole=True),
    "idle_timeout": lambda v: _number("idle_timeout", v),
    "bad_request_idle_timeout": lambda v: _number("bad_request_idle_timeout", v),
    "request_timeout": lambda v: _number("request_timeout", v),
    "max_body": lambda v: _number("max_body", v, whole=True, zero_ok=True),
    "max_output": lambda v: _number("max_output", v, whole=True),
    "reply_delay": lambda v: _number("reply_delay", v, zero_ok=True, most=MAX_REPLY_DELAY),
    "faults": _known_faults,
}


def _checked(options):
    """``options`` with every value checked (ValueError for an impossible one)."""
    return {name: _CHECKS[name](value) if name in _CHECKS else value
            for name, value in options.items()}


def _valid_port(port):
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be a whole number from 0 to 65535, not {port!r}")
    return port


GARBAGE = b"\x16\x03\x01 this is not HTTP\r\n\x00\xff\xfe\r\n\r\n"


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
    dropped: int = 0            # closed by us: output queue overflow, serial change

    def as_dict(self):
        return asdict(self)


class _Peer:
    """One connection: its socket, reader, the uuids it holds and its output queue."""

    __slots__ = ("sock", "reader", "uuids", "serial", "idle_timeout", "last_received",
                 "request_started", "outq", "queued", "flushing", "silenced", "relayed")

    def __init__(self, sock, reader, idle_timeout):
        self.sock = sock
        self.reader = reader
        self.uuids = {}             # table keys pointing at this connection, in order (a set)
        self.serial = None          # the serial this connection registered
        self.idle_timeout = idle_timeout
        self.last_received = monotonic()    # the idle sweep counts from here
        self.request_started = None         # first byte of a request not yet whole
        self.outq = None            # a deque, made when a send would block
        self.queued = 0
        self.flushing = False
        self.silenced = False       # the half-reply fault stops answering
        self.relayed = 0            # private data relayed to this connection

    @property
    def closed(self):
        return self.sock.closed


class FakeTPS:
    """A fake TPS server. Run ``serve()`` on a Scheduler, or ``start_in_thread()``.

    The listening socket is bound at construction, so ``address`` is known at once
    (port 0 picks a free port).
    """

    def __init__(self, host="127.0.0.1", port=0, *, keepalive_interval=120, idle_timeout=300.0,
                 bad_request_idle_timeout=5.0, request_timeout=10.0, nul_replies=False,
                 strict_http=False, check_auth=None, max_body=DEFAULT_MAX_BODY,
                 max_output=4 * 1024 * 1024, reply_delay=0.0, faults=()):
        options = _checked(dict(
            keepalive_interval=keepalive_interval, idle_timeout=idle_timeout,
            bad_request_idle_timeout=bad_request_idle_timeout, request_timeout=request_timeout,
            nul_replies=nul_replies, strict_http=strict_http, check_auth=check_auth,
            max_body=max_body, max_output=max_output, reply_delay=reply_delay, faults=faults))
        for name, value in options.items():
            setattr(self, name, value)
        _valid_port(port)
        self.stats = Stats()
        self.events = deque(maxlen=200)     # notable things, newest last: (seq, text)
        self._event_seq = 0
        self._listener = net.listen(host, port)
        self.address = self._listener.sock.getsockname()[:2]
        self._table = {}            # uuid -> _Peer (devices and clients share it)
        self._peers = {}            # fd -> _Peer, every open connection
        self._connections = ReadGroup()
        self._next_sweep = 0.0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._commands = queue.SimpleQueue()
        self._delayed = deque()     # (due, peer, message) waiting out reply_delay
        self._delayer = None        # the tid of the task that answers them
        self._thread = None

    def __repr__(self):
        return f"<FakeTPS {net.format_address(self.address)} {len(self._peers)} connections>"

    # -- what tests ask ---------------------------------------------------------------

    def _note(self, text):
        """Record something a test may need to know about (protocol error, drop).
        Cut to MAX_EVENT characters: 200 events of a peer's megabyte would stay."""
        if len(text) > MAX_EVENT:
            text = f"{text[:MAX_EVENT]}... ({len(text)} characters)"
        self._event_seq += 1
        self.events.append((self._event_seq, text))
        log.info("%s", text)

    def events_since(self, seq):
        """Event texts after sequence number ``seq``; ``event_seq`` is the current one."""
        return [text for number, text in list(self.events) if number > seq]

    @property
    def event_seq(self):
        return self._event_seq

    def quiescent(self):
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

    def registered(self):
        """The uuids the table holds now (device serials and client SrcUuids)."""
        return set(list(self._table))

    def configure(self, **options):
        """Change options between tests (faults, nul_replies, reply_delay, ...)."""
        for name in options:
            if name not in OPTIONS:
                raise TypeError(f"FakeTPS has no option {name!r}; options: {', '.join(OPTIONS)}")
        for name, value in _checked(options).items():
            setattr(self, name, value)

    # -- serving ------------------------------------------------------------------------

    async def serve(self):
        """Serve until killed or ``request_stop()``; then close every connection."""
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

    async def _accept_loop(self):
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
            if "close-on-accept" in self.faults:
                sock.close()
            elif "reset-on-accept" in self.faults:
                sock.reset()
            else:
                self._open(sock)

    def _new_reader(self):
        if self.strict_http:
            return StrictReader("server", max_body=self.max_body)
        return Reader(max_body=self.max_body, requests_only=True)

    def _open(self, sock):
        peer = _Peer(sock, self._new_reader(), self.idle_timeout)
        self._peers[sock.fd] = peer
        self._connections.add(sock.fd)
        self.stats.open_connections += 1

    async def _read_loop(self):
        """One task reads every connection: an idle one costs no task, no timer."""
        while True:
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

    def _serve_safely(self, work, peer, arg):
        """``work(peer, arg)``; a bug of ours there costs that connection, not the server."""
        try:
            work(peer, arg)
        except Exception:
            log.exception("internal error serving %s", peer.sock.peer)
            self._note(f"internal error serving {peer.sock.peer}: closed it")
            self._close(peer)

    def _read_from(self, peer, now):
        field_reads = "one-read-one-message" in self.faults
        try:
            data = peer.sock.recv_nowait(FIELD_READ_SIZE if field_reads else net.RECV_SIZE)
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
        if field_reads:
            self._handle(peer, self._field_read(data))
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

    def _handle(self, peer, message):
        if self.reply_delay:
            self._delayed.append((monotonic() + self.reply_delay, peer, message))
            if self._delayer is None:
                self._delayer = spawn(self._dispatch_delayed(), daemon=True)
        else:
            self._dispatch(peer, message)

    async def _dispatch_delayed(self):
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
                self._serve_safely(self._dispatch, peer, message)
        finally:
            self._delayer = None

    def _sweep(self, now):
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

    def _dispatch(self, peer, message):
        if "silent" in self.faults or peer.silenced:
            return
        if "garbage-replies" in self.faults:
            self._send(peer, GARBAGE)
            return
        if isinstance(message, RegisterRequest):
            self._register(peer, message)
        elif isinstance(message, PrivateData):
            self._private_data(peer, message)
        else:
            self._bad_request(peer, message)

    def _field_read(self, chunk):
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

    def _register(self, peer, request):
        if "reject-registers" in self.faults:
            self._send_reply(peer, self._status_reply(400))
            return
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
            dangling = peer.serial
            self._close(peer)
            if "die-on-dangling-entry" in self.faults:
                self._table[dangling] = peer
            return
        if "forget-registrations" in self.faults:
            pass
        elif holder is peer:
            self.stats.heartbeats += 1
            if "forget-after-heartbeat" in self.faults:
                del self._table[serial]
        else:
            # A first serial, or one another connection holds: taken over (the holder is
            # closed); a connection that had a serial keeps that one too.
            self._claim(serial, peer)
            if peer.serial is None:
                peer.serial = serial
            self.stats.registrations += 1
        if "corrupt-register-replies" in self.faults:
            body = b'{"TransProxy": corrupt'
            self._send_reply(peer, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            return
        self._send_reply(peer, self._register_reply())

    def _private_data(self, peer, request):
        if self.check_auth is not None and request.auth_code != self.check_auth:
            self.stats.auth_failures += 1
            self._send_reply(peer, self._status_reply(401))
            return
        target = self._table.get(request.dest)       # first: an unknown one changes nothing
        if target is not None and target.closed and "die-on-dangling-entry" in self.faults:
            self._note(f"private data for dangling {request.dest!r}: dying, as the field server did")
            self._listener.close()      # first: whoever sees a connection close finds it dead
            self._close_all()
            self.request_stop()
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
        if "drop-relays" in self.faults or target.closed:
            return
        if "misroute-relays" in self.faults:
            target = self._another_device(target, peer)
        target.relayed += 1
        if "drop-relays-after-3" in self.faults and target.relayed > RELAYS_BEFORE_DROPPING:
            return
        raw = request.raw
        if "corrupt-relays" in self.faults:
            raw = raw[:-1] + bytes([raw[-1] ^ 0x01])
        self.stats.relays += 1
        self._send(target, raw)
        if "duplicate-relays" in self.faults:
            self._send(target, raw)

    def _another_device(self, target, sender):
        """For the misroute-relays fault: a registered device other than ``target``."""
        for other in self._table.values():
            if other is not target and other is not sender and other.serial is not None:
                return other
        return target

    def _bad_request(self, peer, request):
        reason = request.reason if isinstance(request, BadRequest) else \
            f"a reply ({request.status}) where a request belongs"
        self._note(f"400 to {peer.sock.peer}: {reason}")
        self.stats.bad_requests += 1
        peer.idle_timeout = min(peer.idle_timeout, self.bad_request_idle_timeout)
        self._send_reply(peer, self._status_reply(400))

    def _claim(self, uuid, peer):
        """Point ``uuid`` at ``peer``; an older connection holding it is closed."""
        older = self._table.get(uuid)
        if older is not None and older is not peer:
            if "takeover-closes-newer" in self.faults:
                self._close(peer)
                return
            self._note(f"{quote_text(uuid)} taken by {peer.sock.peer}: closed the older connection "
                       f"{older.sock.peer}")
            self.stats.replaced += 1
            self._close(older)
        self._table[uuid] = peer
        peer.uuids[uuid] = None

    # -- output: bounded, never blocking a handler ------------------------------------------

    def _status_reply(self, status):
        """A PrivateData-style reply in the form this fake is set to (field, NUL, strict)."""
        return reply(status, nul=self.nul_replies, strict=self.strict_http)

    def _register_reply(self, error_num="200", error_string="Success OK"):
        return register_reply(utc_time=int(time.time()), keepalive_interval=self.keepalive_interval,
                              error_num=error_num, error_string=error_string)

    def _send_reply(self, peer, data):
        if "half-reply" in self.faults:
            data = data[:len(data) // 2]
            peer.silenced = True
        self._send(peer, data)

    def _send(self, peer, data):
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

    async def _flush(self, peer):
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

    def _close(self, peer):
        """Close ``peer`` (FIN, no bytes) and remove every table entry it holds."""
        for uuid in peer.uuids:
            if self._table.get(uuid) is peer:
                del self._table[uuid]
        peer.uuids.clear()
        peer.outq = None
        if self._peers.get(peer.sock.fd) is peer:
            del self._peers[peer.sock.fd]
            self.stats.open_connections -= 1
        peer.sock.close()           # forget_fd takes it out of the ReadGroup

    def _close_all(self):
        for peer in list(self._peers.values()):
            self._close(peer)
        self._table.clear()

    def clear(self):
        """Close every connection, empty the table and zero the stats (between tests)."""
        if self._thread is not None and threading.current_thread() is not self._thread:
            return self._call_in_server(self.clear)
        self._close_all()
        connections = self.stats.open_connections
        self.stats = Stats(open_connections=connections)
        return None

    # -- control: stop and calls from other threads ----------------------------------------

    async def _control(self):
        """Run what other threads queue (they write a byte to wake us); return on stop."""
        while True:
            await ReadWait(self._wake_r)
            try:
                self._wake_r.recv(4096)
            except BlockingIOError:
                pass
            while True:
                try:
                    command, future = self._commands.get_nowait()
                except queue.Empty:
                    break
                if command is None:
                    future.set_result(None)
                    return
                try:
                    future.set_result(command())
                except Exception as error:
                    future.set_exception(error)

    def _call_in_server(self, function):
        future = Future()
        self._commands.put((function, future))
        self.wake()
        return future.result(timeout=10)

    def wake(self):
        """Wake the control task (safe from any thread and from a signal handler)."""
        try:
            self._wake_w.send(b"\x00")
        except (BlockingIOError, OSError):
            pass

    def request_stop(self):
        """Ask ``serve()`` to end (from any thread or a signal handler)."""
        self._commands.put((None, Future()))
        self.wake()

    def start_in_thread(self):
        """Serve in a background thread; a context manager that stops it cleanly."""
        return _ServerThread(self)

    def close(self):
        """Release the sockets of a server that is not serving."""
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()


class _ServerThread:
    """``with fake.start_in_thread() as fake:``: serve on a thread of its own."""

    def __init__(self, server):
        self.server = server
        self._started = threading.Event()
        self._error = None

    def __enter__(self):
        server = self.server
        server._thread = threading.Thread(target=self._run, name=f"fake-tps-{server.address[1]}",
                                          daemon=True)
        server._thread.start()
        self._started.wait(10)
        return server

    def _run(self):
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
            self._started.set()

    def __exit__(self, *exc_info):
        server = self.server
        server.request_stop()
        server._thread.join(10)
        alive = server._thread.is_alive()
        server._thread = None
        server.close()
        if alive:
            raise RuntimeError(f"{server!r} did not stop within 10 s")
        if self._error is not None and exc_info[0] is None:
            raise RuntimeError(f"{server!r} crashed: {self._error!r}") from self._error
