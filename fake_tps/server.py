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
once; so is a read of nothing but CR/LF (the CRLF field devices send after a body is
skipped when it arrives with it); and so is a header block that cannot be parsed.
Oversized input (a header block over 16 KiB, a body over ``max_body``) gets 413 and
a close. A request must arrive whole within ``request_timeout`` of its first byte
(as nginx's client_header_timeout): a trickling peer is closed (``slow_closed``).

Where the field server is unsafe: a connection that registers a second, unknown
serial is closed without a reply (as in the field) and every table entry it held is
removed (the field server kept a dangling one and later crashed). With
``check_auth``, a wrong AuthCode gets ErrorNum 401 (register) or ``401
Unauthorized``; with ``strict_http``, a request that is not strict HTTP/1.1 gets 400
and a close.

Under ``profile="field"`` each read is decided by ``fake_tps.field`` instead of
framed (docs/protocol.md section 3.1); the table's rules below are the same. The
options are ``fake_tps.options``; the faults ``fake_tps.faults``; the serving
machinery ``fake_tps.serving``.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Iterable
from typing import Any

from tpsharness import net
from tpsharness.defaults import HOST
from tpsharness.errors import InvalidArgument, MessageTooLarge, ProtocolError
from tpsharness.protocol import (BadRequest, Message, Unrecognised, PrivateData, Reader, RegisterRequest, StrictReader,
                                 quote_text, register_reply, reply)

from . import field
from .events import OnEvent, Stats
from .faults import FAULTS, Fault, Hooks
from .options import OPTIONS, FakeOptions, signature
from .peer import Peer
from .serving import Serving

__all__ = ["FakeTPS"]

log = logging.getLogger("fake_tps")


def _valid_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgument(f"port must be a whole number from 0 to 65535, not {port!r}")
    return port


class FakeTPS(Serving):
    """A fake TPS server. Run ``serve()`` on a Scheduler, or ``start_in_thread()``.

    ``FakeTPS(host, port, **options)``: the options are FakeOptions' (each also an
    attribute, read-only; ``options`` holds them all). The listening socket is bound
    at construction, so ``address`` is known at once (port 0 picks a free port).
    ``configure()`` and ``clear()`` may be called from any thread: while ``serve()``
    runs in another thread they run in the server's, between two requests.
    """

    def __init__(self, host: str = HOST, port: int = 0, *, on_event: OnEvent | None = None,
                 **options: Any) -> None:
        self._apply(FakeOptions().replace(**options))
        super().__init__(host, _valid_port(port), on_event)

    __init__.__signature__ = signature(  # type: ignore[attr-defined]
        *list(inspect.signature(__init__).parameters.values())[:4])

    # -- options ----------------------------------------------------------------------

    def configure(self, **changes: Any) -> None:
        """Change options between tests (faults, nul_replies, reply_delay, ...); the
        ones not given stay. They are checked here (ValueError; TypeError for a name
        that is no option) and take effect together, between two requests, in the
        server's thread (see ``clear``)."""
        options = self.options.replace(**changes)
        self._in_server(lambda: self._apply(options))

    configure.__signature__ = signature(  # type: ignore[attr-defined]
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD))

    def _apply(self, options: FakeOptions) -> None:
        self.options = options
        self._hooks = Hooks.of(options.faults)
        self._replies = {status: reply(status, nul=options.nul_replies, strict=options.strict_http)
                         for status in (200, 400, 401, 404, 413)}

    # -- reading: the default profile frames by Content-Length -------------------------

    def _new_reader(self) -> Reader | StrictReader:
        if self.options.strict_http:
            return StrictReader("server", max_body=self.options.max_body)
        return Reader(max_body=self.options.max_body, requests_only=True)

    def _open(self, sock: net.Socket) -> None:
        self._emit("connect", sock.peer)
        for taken in self._hooks.accept:
            if taken(self, sock):
                self._emit("fault", sock.peer, hook="accept", faults=self._hooks.names["accept"])
                return
        peer = Peer(sock, self._new_reader(), self.options.idle_timeout, self.options.max_output,
                    self._overflowed, self._failed)
        self._add(peer)

    def _read_from(self, peer: Peer, now: float) -> None:
        by_field_rules = self.options.profile == "field"
        try:
            data = peer.sock.recv_nowait(field.READ_SIZE if by_field_rules else net.RECV_SIZE)
        except OSError as error:         # reset
            log.debug("connection %s ended: %s", peer.address, error)
            self.close_peer(peer, "reset by the peer")
            return
        if data is None:
            return
        if not data:
            self.close_peer(peer, "closed by the peer")
            return
        peer.last_received = now
        if by_field_rules:                  # each read is one message (docs/protocol.md 3.1)
            self._handle(peer, field.read(data))
            return
        reader = peer.reader
        strict = self.options.strict_http
        if not reader.buffered and not data.strip(b"\r\n") and not strict:
            self._handle(peer, Unrecognised(f"a read of nothing but CR/LF ({len(data)} bytes)", data))
            return
        reader.feed(data)
        try:
            for message in reader:
                if peer.closed:
                    return
                self._handle(peer, message)
        except ProtocolError as error:
            if isinstance(error, MessageTooLarge) or strict:
                self.stats.protocol_errors += 1
                self.note(f"protocol error from {peer.address}, closed it: {error}")
                status = 413 if isinstance(error, MessageTooLarge) else 400
                self._emit("reply", peer.address, status=status)
                self.send(peer, self.status_reply(status))
                self.close_peer(peer, "protocol error")
                return
            peer.reader = self._new_reader()        # what was read is discarded
            self._handle(peer, Unrecognised(str(error), error.data))
        if peer.reader.buffered:
            if peer.request_started is None:
                peer.request_started = now
        else:
            peer.request_started = None

    # -- the protocol: the default profile's decisions ---------------------------------------

    def _dispatch(self, peer: Peer, message: Message) -> None:
        if peer.silenced:
            return
        for answered in self._hooks.message:
            if answered(self, peer, message):
                self._fault_fired(peer, "message")
                return
        if isinstance(message, RegisterRequest):
            self._register(peer, message)
        elif isinstance(message, PrivateData):
            self._private_data(peer, message)
        else:
            self._bad_request(peer, message)

    def _register(self, peer: Peer, request: RegisterRequest) -> None:
        check_auth = self.options.check_auth
        if check_auth is not None and request.auth_code != check_auth:
            self.stats.auth_failures += 1
            self.send_reply(peer, self._register_reply(error_num="401", error_string="Unauthorized"))
            return
        serial = request.serial
        holder = self._table.get(serial)
        if peer.serial is not None and holder is None:
            # A second, unknown serial: the field server closes such a connection without
            # a reply (and kept a dangling entry that crashed it later); we close it and
            # keep nothing.
            self.note(f"{peer.address} registered {quote_text(serial)} after "
                      f"{quote_text(peer.serial)}: closed it")
            self.stats.dropped += 1
            first_serial = peer.serial
            self.close_peer(peer, "a second, unknown serial")
            for keep in self._hooks.second_serial:
                keep(self, peer, first_serial)
                self._fault_fired(peer, "second_serial")
            return
        if not serial:      # only the field profile reads one (3.1 rule 3): answered, entered nowhere
            self.note(f"{peer.address} registered an empty serial: answered, entered nothing")
            self.send_reply(peer, self._register_reply())
            return
        if any(did_it(self, peer, serial, holder) for did_it in self._hooks.register):
            self._fault_fired(peer, "register")
        elif holder is peer:
            self.stats.heartbeats += 1
            self._emit("heartbeat", peer.address, serial=serial)
        else:
            # A first serial, or one another connection holds: taken over (the holder is
            # closed); a connection that had a serial keeps that one too.
            self._emit("register", peer.address, serial=serial)
            self._claim(serial, peer)
            if peer.serial is None:
                peer.serial = serial
            self.stats.registrations += 1
        data = self._register_reply()
        for change in self._hooks.register_reply:
            data = change(data)
            self._fault_fired(peer, "register_reply")
        self.send_reply(peer, data)

    def _private_data(self, peer: Peer, request: PrivateData) -> None:
        check_auth = self.options.check_auth
        if check_auth is not None and request.auth_code != check_auth:
            self.stats.auth_failures += 1
            self.send_reply(peer, self.status_reply(401))
            return
        target = self._table.get(request.dest)       # first: an unknown one changes nothing
        for handled in self._hooks.private_data:
            if handled(self, peer, request, target):
                self._fault_fired(peer, "private_data")
                return
        if target is None:
            self.stats.not_found += 1
            self.send_reply(peer, self._replies[404])
            return
        if self._table.get(request.src) is not peer:
            self._claim(request.src, peer)       # the sender is now reachable by SrcUuid
            if peer.serial is None:     # and, on a connection that had none, that is its serial
                peer.serial = request.src
        elif target is peer:
            self._bad_request(peer, BadRequest("PrivateData whose SrcUuid and DestUuid both name "
                                               "the sending connection"))
            return
        self.send_reply(peer, self._replies[200])
        if target.closed:
            return
        relay = self._hooks.relay
        if not relay:
            self.stats.relays += 1
            if self.on_event is not None:
                self._relayed(peer, target, request, request.raw)
            target.send(request.raw)
            return
        copies: tuple[bytes, ...] = (request.raw,)
        for change in relay:
            target, copies = change(self, peer, target, copies)
        self._fault_fired(peer, "relay")
        if copies:
            self.stats.relays += 1
        for raw in copies:
            if self.on_event is not None:
                self._relayed(peer, target, request, raw)
            target.send(raw)

    def _relayed(self, peer: Peer, target: Peer, request: PrivateData, raw: bytes) -> None:
        self._emit("relay", peer.address, to=target.address, src=request.src, dest=request.dest,
                   bytes=len(raw))

    def _bad_request(self, peer: Peer, request: Message) -> None:
        reason = request.reason if isinstance(request, BadRequest) else \
            f"a reply ({getattr(request, 'status', '?')}) where a request belongs"
        self.note(f"400 to {peer.address}: {reason}")
        self.stats.bad_requests += 1
        if isinstance(request, Unrecognised) or not isinstance(request, BadRequest):  # section 3
            peer.idle_timeout = min(peer.idle_timeout, self.options.bad_request_idle_timeout)
        self.send_reply(peer, self._replies[400])

    def _claim(self, uuid: str, peer: Peer) -> None:
        """Point ``uuid`` at ``peer``; an older connection holding it is closed."""
        older = self._table.get(uuid)
        if older is not None and older is not peer:
            for settled in self._hooks.takeover:
                if settled(self, peer, older):
                    self._fault_fired(peer, "takeover")
                    return
            self.note(f"{quote_text(uuid)} taken by {peer.address}: closed the older connection "
                      f"{older.address}")
            self.stats.replaced += 1
            self.close_peer(older, f"replaced: {uuid} taken by {peer.address}")
        self._table[uuid] = peer
        peer.uuids[uuid] = None

    def _register_reply(self, error_num: str = "200", error_string: str = "Success OK") -> bytes:
        return register_reply(utc_time=int(time.time()), keepalive_interval=self.options.keepalive_interval,
                              error_num=error_num, error_string=error_string)

    # -- the public interface the faults use (faults.Server) -----------------------------------

    def status_reply(self, status: int) -> bytes:
        """A PrivateData-style reply in the form this fake is set to (field, NUL, strict)."""
        return self._replies.get(status) or reply(status, nul=self.options.nul_replies,
                                                  strict=self.options.strict_http)

    def send_reply(self, peer: Peer, data: bytes) -> None:
        for change in self._hooks.reply:
            data = change(self, peer, data)
            self._fault_fired(peer, "reply")
        if self.on_event is not None:
            status = data[9:12]
            self._emit("reply", peer.address, status=int(status) if status.isdigit() else "not HTTP")
        peer.send(data)

    def _fault_fired(self, peer: Peer, hook: str) -> None:
        self._emit("fault", peer.address, hook=hook, faults=self._hooks.names[hook])

    def holder(self, uuid: str) -> Peer | None:
        return self._table.get(uuid)

    def holders(self) -> Iterable[Peer]:
        return list(self._table.values())

    def hold(self, uuid: str, peer: Peer | None) -> None:
        if peer is None:
            self._table.pop(uuid, None)
        else:
            self._table[uuid] = peer



def _option_property(name: str) -> property:
    return property(lambda server: getattr(server.options, name), doc=f"The {name} option (read-only).")


for _name in OPTIONS:           # fake.faults, fake.reply_delay...: the options, read-only
    setattr(FakeTPS, _name, _option_property(_name))
del _name
