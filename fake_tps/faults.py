"""The fake's injected faults, for the harness's own tests: one table, each entry one
misbehaviour, what it does and the step of the server it changes.

The server has a few hook points (``HOOKS``: accept, message, reply, register reply,
register, second serial, private data, relay, takeover); a fault is a description plus the functions it puts on some
of them. The server groups the active faults' functions by hook when its faults are
set (``Hooks``), so a step with no fault costs one truth test. A new fault is one
entry of ``FAULTS`` (and, if no existing hook function fits, one small function
here); docs/protocol.md section 4 lists the catalogue.

Hook functions see the server through ``Server``, the small public interface below
(``FakeTPS`` is one), never through its private names.

Three faults crash the server as a C/C++ one crashes, each its own way (``Crash``):
what it prints last and how the process ends. A FakeTPS serving in a thread only
stops serving (a test process must not die); ``python -m fake_tps`` then prints
the report and exits with the crash's status or signal, for tpsharness fuzz's
triage to read.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from tpsharness import net
from tpsharness.protocol import Message, PrivateData, RegisterRequest

from .events import Stats
from .peer import Peer


class Server(Protocol):
    """What a fault may do to the server: send, close, die, note, and read or change
    its uuid table (without the table's own rules)."""

    stats: Stats

    def send(self, peer: Peer, data: bytes) -> None:
        """Queue ``data`` for ``peer`` as it is."""

    def send_reply(self, peer: Peer, data: bytes) -> None:
        """Queue a reply for ``peer`` (through the reply faults)."""

    def status_reply(self, status: int) -> bytes:
        """A PrivateData-style reply in the form the server is set to."""

    def close_peer(self, peer: Peer, reason: str) -> None:
        """Close ``peer`` and remove its table entries; ``reason`` goes into its close event."""

    def die(self, crash: Crash | None = None) -> None:
        """Stop serving, as a crashed server would (``crash``: how the process ends)."""

    def note(self, text: str) -> None:
        """Record an event."""

    def holder(self, uuid: str) -> Peer | None:
        """The connection ``uuid`` names, if any."""

    def holders(self) -> Iterable[Peer]:
        """The connections of the table, in its order (one per entry)."""

    def hold(self, uuid: str, peer: Peer | None) -> None:
        """Point ``uuid`` at ``peer`` (None: remove the entry); nobody is closed."""


AcceptHook = Callable[[Server, net.Socket], bool]               # True: it took the connection
MessageHook = Callable[[Server, Peer, Message], bool]           # True: it answered (or swallowed)
ReplyHook = Callable[[Server, Peer, bytes], bytes]              # what a reply becomes
RegisterReplyHook = Callable[[bytes], bytes]                    # what a successful one becomes
RegisterHook = Callable[[Server, Peer, str, "Peer | None"], bool]  # True: it did the table's work
SecondSerialHook = Callable[[Server, Peer, str], None]          # after such a connection is closed
PrivateDataHook = Callable[[Server, Peer, PrivateData, "Peer | None"], bool]  # True: handled
RelayHook = Callable[[Server, Peer, Peer, "tuple[bytes, ...]"],
                     "tuple[Peer, tuple[bytes, ...]]"]          # (target, copies) -> new ones
TakeoverHook = Callable[[Server, Peer, Peer], bool]             # (newer, older); True: settled

RELAYS_BEFORE_DROPPING = 3      # the drop-relays-after-3 fault
GARBAGE = b"\x16\x03\x01 this is not HTTP\r\n\x00\xff\xfe\r\n\r\n"
CORRUPT_REGISTER_BODY = b'{"TransProxy": corrupt'
LONG_HEADER = 1024              # a header value longer than this kills die-on-long-header


@dataclass(frozen=True, slots=True)
class Crash:
    """How a planted crash ends ``python -m fake_tps``: the report it prints last on
    stderr (``{pid}`` is its pid), and its exit status, or the signal that kills it."""

    report: str = ""
    status: int = 1
    signal: int | None = None


# What a C++ server prints when AddressSanitizer catches it reading past a buffer (the
# frames are the imitated server's, not the fake's), and when an exception escapes.
ASAN_CRASH = Crash(
    "=================================================================\n"
    "=={pid}==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x602000000b1c at pc "
    "0x55c3d1e4a2b1 bp 0x7ffc1e0a3f20 sp 0x7ffc1e0a3f18\n"
    "READ of size 4 at 0x602000000b1c thread T0\n"
    "    #0 0x55c3d1e4a2b0 in auth_code_of(Json::Value const&) src/register.cpp:48\n"
    "    #1 0x55c3d1e4b3c4 in handle_register(Peer*, Message const&) src/register.cpp:97\n"
    "    #2 0x55c3d1e4c5d8 in on_read(bufferevent*, void*) src/server.cpp:212\n"
    "    #3 0x7f3a1b2c3d4e in event_base_loop (/lib/x86_64-linux-gnu/libevent-2.1.so.7+0x1e4d4)\n"
    "\n"
    "SUMMARY: AddressSanitizer: heap-buffer-overflow src/register.cpp:48 in auth_code_of(Json::Value const&)\n"
    "=={pid}==ABORTING\n", status=1)
TERMINATE_CRASH = Crash("terminate called after throwing an instance of 'std::length_error'\n"
                        "  what():  basic_string::_M_create\n", signal=signal.SIGABRT)
SEGV_CRASH = Crash(signal=signal.SIGSEGV)     # as the field server died: no word, a SIGSEGV


@dataclass(frozen=True, slots=True)
class Fault:
    """One misbehaviour: the sentence ``--help`` shows, and its functions on the hooks
    it changes (None elsewhere)."""

    description: str
    accept: AcceptHook | None = None
    message: MessageHook | None = None
    reply: ReplyHook | None = None
    register_reply: RegisterReplyHook | None = None
    register: RegisterHook | None = None
    second_serial: SecondSerialHook | None = None
    private_data: PrivateDataHook | None = None
    relay: RelayHook | None = None
    takeover: TakeoverHook | None = None


# -- what the faults do, hook by hook ------------------------------------------------------

def _close_at_once(server: Server, sock: net.Socket) -> bool:
    sock.close()
    return True


def _reset_at_once(server: Server, sock: net.Socket) -> bool:
    sock.reset()
    return True


def _swallow(server: Server, peer: Peer, message: Message) -> bool:
    return True


def _answer_garbage(server: Server, peer: Peer, message: Message) -> bool:
    server.send(peer, GARBAGE)
    return True


def _reject_registers(server: Server, peer: Peer, message: Message) -> bool:
    if not isinstance(message, RegisterRequest):
        return False
    server.send_reply(peer, server.status_reply(400))
    return True


def _half_then_silence(server: Server, peer: Peer, data: bytes) -> bytes:
    peer.silenced = True
    return data[:len(data) // 2]


def _corrupt_register_reply(data: bytes) -> bytes:
    body = CORRUPT_REGISTER_BODY
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def _keep_no_entry(server: Server, peer: Peer, serial: str, holder: Peer | None) -> bool:
    return True


def _forget_on_heartbeat(server: Server, peer: Peer, serial: str, holder: Peer | None) -> bool:
    if holder is not peer:
        return False
    server.stats.heartbeats += 1        # answered as a heartbeat, then forgotten
    server.hold(serial, None)
    return True


def _keep_dangling_entry(server: Server, peer: Peer, first_serial: str) -> None:
    server.hold(first_serial, peer)


def _die_on_dangling_entry(server: Server, peer: Peer, request: PrivateData,
                           target: Peer | None) -> bool:
    if target is None or not target.closed:
        return False
    server.note(f"private data for dangling {request.dest!r}: dying, as the field server did")
    server.die(SEGV_CRASH)
    return True


def _die_on_non_string_auth_code(server: Server, peer: Peer, message: Message) -> bool:
    if not isinstance(message, RegisterRequest):
        return False
    body = message.raw.partition(b"\r\n\r\n")[2]
    try:
        auth_code = json.loads(body)["TransProxy"]["Body"]["AuthCode"]
    except (ValueError, RecursionError, KeyError, TypeError):
        return False            # no AuthCode, or not the register JSON: not this bug
    if isinstance(auth_code, str):
        return False
    server.note(f"register with an AuthCode that is not a string ({type(auth_code).__name__}): dying")
    server.die(ASAN_CRASH)
    return True


def _die_on_long_header(server: Server, peer: Peer, message: Message) -> bool:
    head = message.raw.partition(b"\r\n\r\n")[0]
    for line in head.split(b"\r\n")[1:]:
        if len(line.partition(b":")[2].strip()) > LONG_HEADER:
            server.note(f"a header value of more than {LONG_HEADER} bytes: dying")
            server.die(TERMINATE_CRASH)
            return True
    return False


def _drop(server: Server, sender: Peer, target: Peer,
          copies: tuple[bytes, ...]) -> tuple[Peer, tuple[bytes, ...]]:
    return target, ()


def _corrupt_last_byte(server: Server, sender: Peer, target: Peer,
                       copies: tuple[bytes, ...]) -> tuple[Peer, tuple[bytes, ...]]:
    return target, tuple(raw[:-1] + bytes([raw[-1] ^ 0x01]) for raw in copies)


def _twice(server: Server, sender: Peer, target: Peer,
           copies: tuple[bytes, ...]) -> tuple[Peer, tuple[bytes, ...]]:
    return target, copies * 2


def _to_another_device(server: Server, sender: Peer, target: Peer,
                       copies: tuple[bytes, ...]) -> tuple[Peer, tuple[bytes, ...]]:
    for other in server.holders():
        if other is not target and other is not sender and other.serial is not None:
            return other, copies
    return target, copies


def _drop_after_some(server: Server, sender: Peer, target: Peer,
                     copies: tuple[bytes, ...]) -> tuple[Peer, tuple[bytes, ...]]:
    if not copies:
        return target, copies
    target.relayed += 1
    return target, copies if target.relayed <= RELAYS_BEFORE_DROPPING else ()


def _close_newer(server: Server, newer: Peer, older: Peer) -> bool:
    server.close_peer(newer, "takeover-closes-newer: closed the newer connection")
    return True


# -- the catalogue: a relay passes through the relay functions in this order ---------------

FAULTS: Mapping[str, Fault] = MappingProxyType({
    "close-on-accept": Fault("close every connection (FIN) right after accepting it",
                             accept=_close_at_once),
    "reset-on-accept": Fault("reset every connection (RST) right after accepting it",
                             accept=_reset_at_once),
    "silent": Fault("accept and read, never answer anything", message=_swallow),
    "half-reply": Fault("send the first half of every reply, then nothing more on that connection",
                        reply=_half_then_silence),
    "garbage-replies": Fault("answer every request with bytes that are not HTTP",
                             message=_answer_garbage),
    "corrupt-register-replies": Fault("answer registers 200 OK with a body that is not the "
                                      "register JSON", register_reply=_corrupt_register_reply),
    "forget-registrations": Fault("answer registers 200 OK but keep no table entry (private "
                                  "data gets 404)", register=_keep_no_entry),
    "reject-registers": Fault("answer every register 400 Bad Request", message=_reject_registers),
    "drop-relays": Fault("acknowledge private data but never relay it", relay=_drop),
    "corrupt-relays": Fault("relay private data with its last byte changed", relay=_corrupt_last_byte),
    "duplicate-relays": Fault("relay each private data twice", relay=_twice),
    "die-on-dangling-entry": Fault("like the field server, keep a dangling entry when a connection "
                                   "registers a second serial, and die (SIGSEGV) on private "
                                   "data for it", second_serial=_keep_dangling_entry,
                                   private_data=_die_on_dangling_entry),
    # Plausible server bugs, planted for tpsharness fuzz to find.
    "forget-after-heartbeat": Fault("drop a serial's table entry when its device heartbeats (the "
                                    "heartbeat is still answered 200)", register=_forget_on_heartbeat),
    "misroute-relays": Fault("relay private data to another registered device, not its "
                             "destination, when two or more are registered", relay=_to_another_device),
    "drop-relays-after-3": Fault("acknowledge but never relay private data past the 3rd relayed to "
                                 "one connection", relay=_drop_after_some),
    "takeover-closes-newer": Fault("on a takeover, close the newer connection instead of the "
                                   "older one", takeover=_close_newer),
    "die-on-auth-code-type": Fault("crash (an AddressSanitizer report, exit status 1) on a "
                                         "register whose AuthCode is not a JSON string",
                                         message=_die_on_non_string_auth_code),
    "die-on-long-header": Fault(f"crash (an uncaught std::length_error, SIGABRT) on a request "
                                f"with a header value over {LONG_HEADER} bytes", message=_die_on_long_header),
})


@dataclass(frozen=True, slots=True)
class Hooks:
    """The active faults' functions, grouped by hook, in catalogue order: all the
    server reads on its hot path (an empty tuple: that step runs as in the field)."""

    accept: tuple[AcceptHook, ...] = ()
    message: tuple[MessageHook, ...] = ()
    reply: tuple[ReplyHook, ...] = ()
    register_reply: tuple[RegisterReplyHook, ...] = ()
    register: tuple[RegisterHook, ...] = ()
    second_serial: tuple[SecondSerialHook, ...] = ()
    private_data: tuple[PrivateDataHook, ...] = ()
    relay: tuple[RelayHook, ...] = ()
    takeover: tuple[TakeoverHook, ...] = ()
    names: Mapping[str, str] = field(default_factory=dict)  # hook -> the faults on it, for fault events

    @classmethod
    def of(cls, names: Collection[str]) -> Hooks:
        faults = [fault for name, fault in FAULTS.items() if name in names]
        return cls(
            accept=tuple(fault.accept for fault in faults if fault.accept is not None),
            message=tuple(fault.message for fault in faults if fault.message is not None),
            reply=tuple(fault.reply for fault in faults if fault.reply is not None),
            register_reply=tuple(fault.register_reply for fault in faults
                                 if fault.register_reply is not None),
            register=tuple(fault.register for fault in faults if fault.register is not None),
            second_serial=tuple(fault.second_serial for fault in faults
                                if fault.second_serial is not None),
            private_data=tuple(fault.private_data for fault in faults
                               if fault.private_data is not None),
            relay=tuple(fault.relay for fault in faults if fault.relay is not None),
            takeover=tuple(fault.takeover for fault in faults if fault.takeover is not None),
            names=MappingProxyType({hook: ",".join(on) for hook in HOOKS
                                    for on in [[name for name, fault in FAULTS.items()
                                                if name in names and getattr(fault, hook) is not None]]
                                    if on}))


HOOKS = ("accept", "message", "reply", "register_reply", "register", "second_serial",
         "private_data", "relay", "takeover")

