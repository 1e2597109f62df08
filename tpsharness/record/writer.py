"""A conversation as scenarios: the steps the actors took, the gaps between them, and
what the TPS answered as the expectations.

Each connection is an actor. One that registers a serial is a device (its uuid is
that serial); one that sends private data first is a client known by its SrcUuid;
anything else is a raw connection. A second connection with the same uuid reuses
the first one's (``"uuid": "${device1}"``). A write that is exactly what the
harness's own device or client would send (modulo the Host header, which a replay
sets to its target) becomes ``register``/``heartbeat``/``send`` (``times`` for
identical pipelined copies, ``trailing_crlf`` for the field devices' extra CRLF);
every other write, field forms included, is ``send_raw`` of its exact bytes, with
``${tps}`` for the Host value and ``${actor}`` for the uuids in its headers and in a
register's SerialNumber. What the TPS sent back, framed as the player frames it,
becomes ``expect_reply``, ``expect_receipt``, ``expect_bytes`` (bytes that are not a
TPS message, or a request where a reply belongs) and ``expect_close``; a gap of
more than MIN_GAP before a write becomes a ``wait``. A scenario is cut (and says
so) where it would ask for more time or bytes than a scenario file may. Each
expectation comes at the event that completed its message, so before the next move
(a connect, a write, a close) of any actor: the scenario is exact (tpsharness.exact),
and a move made while something was still on its way says so in its ``pending``
(tpsharness.record.inflight).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from ..defaults import AUTH_CODE
from ..errors import ProtocolError
from ..protocol import (NEED_DATA, BadRequest, Message, PrivateData, PrivateDataTemplate, Reader,
                        RegisterReply, RegisterRequest, Reply, register_request)
from ..scenario import (DEFAULT_WITHIN, MAX_FILE, MAX_RECORDED_BYTES, MAX_SECONDS,
                        MAX_TOTAL_SECONDS, ScenarioData, Step, bytes_field, validate)
from .conversation import ACTOR_CLOSED, OPEN, RECEIVED, SENT, SERVER_CLOSED, Conversation, messages
from .files import slug, unique_stems
from .inflight import InFlight

MIN_GAP = 0.01          # seconds: a shorter pause between writes is not worth a wait
FILE_MARGIN = 0.9       # of MAX_FILE a written scenario may fill (indentation is estimated)

_HOST = re.compile(rb"(\r\nHost:[ \t]*)([^\r\n]*)", re.IGNORECASE)
_UUID_HEADER = re.compile(rb"(\r\n(?:SrcUuid|DestUuid):[ \t]*)([^\r\n]*)", re.IGNORECASE)
_SERIAL = re.compile(rb'("SerialNumber"\s*:\s*")([^"\\]*)(")')


@dataclass
class Actor:
    """What the writer learnt of one connection."""

    conn: int
    kind: str = "raw"               # device, client or raw
    uuid: str = ""
    auth_code: str = AUTH_CODE
    synthesized_register: bool = False      # a device the capture caught after its register
    talks_to: set[str] = field(default_factory=set)     # uuids it registered or addressed
    name: str = ""


@dataclass
class Written:
    """One scenario to write: its suggested file stem and its data; ``cut`` says why it
    ends before the session did (empty when it does not)."""

    stem: str
    data: ScenarioData
    cut: str = ""


def learn_actors(conversation: Conversation) -> dict[int, Actor]:
    """Each connection's actor kind, uuid and auth code, from what it sent (and, for a
    device the capture caught late, from what was relayed to it)."""
    actors: dict[int, Actor] = {conn: Actor(conn) for conn in conversation.peers}
    readers: dict[int, Reader] = {}
    unread: dict[int, bytearray] = {}       # what each reader holds: a message not yet whole
    relayed_to: dict[int, str] = {}
    for _, conn, kind, data in conversation.events:
        actor = actors.get(conn)
        if actor is None or kind not in (SENT, RECEIVED):
            continue
        if kind == RECEIVED:
            if conn not in relayed_to and actor.kind == "raw" and b"POST /PrivateData" in data:
                for message in messages(data)[0]:
                    if isinstance(message, PrivateData):
                        relayed_to[conn] = message.dest
                        break
            continue
        reader = readers.setdefault(conn, Reader())
        try:
            reader.feed(data)
            sent = list(reader)
        except ProtocolError:
            readers[conn] = Reader()        # what it sent was not a message: read on after it
            unread.pop(conn, None)
            continue
        if reader.buffered:
            held = unread.setdefault(conn, bytearray())
            held += data
            del held[:len(held) - reader.buffered]
        else:
            unread.pop(conn, None)
        for message in sent:
            if isinstance(message, RegisterRequest):
                if actor.kind == "raw" and not actor.uuid:
                    actor.kind, actor.uuid, actor.auth_code = "device", message.serial, message.auth_code
                actor.talks_to.add(message.serial)
            elif isinstance(message, PrivateData):
                if actor.kind == "raw" and not actor.uuid:
                    actor.kind, actor.uuid, actor.auth_code = "client", message.src, message.auth_code
                actor.talks_to.update((message.src, message.dest))
    for conn, held in unread.items():       # a request cut short still names whom it was for
        actors[conn].talks_to.update(match.group(2).strip().decode("latin-1")
                                     for match in _UUID_HEADER.finditer(held) if match.group(2).strip())
    for conn, dest in relayed_to.items():
        actor = actors[conn]
        if conn in conversation.started_mid_stream and (actor.kind == "raw" or actor.uuid == dest):
            actor.kind, actor.uuid, actor.synthesized_register = "device", dest, True
            actor.talks_to.add(dest)
    for actor in actors.values():
        if actor.uuid:
            actor.talks_to.add(actor.uuid)
        if "\r" in actor.auth_code or "\n" in actor.auth_code:
            actor.auth_code = AUTH_CODE
    return actors


def groups(actors: dict[int, Actor], per_device: bool, only: Iterable[str] = ()) -> list[list[int]]:
    """The connections each scenario holds: all of them, or with ``per_device`` one
    group per set of connections linked by a uuid (a device, the clients that spoke to
    it, the devices those spoke to...); ``only`` keeps the groups naming one of its uuids."""
    wanted = set(only)
    parent: dict[Any, Any] = {}

    def find(node: Any) -> Any:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for conn, actor in actors.items():
        for uuid in actor.talks_to:
            parent[find(("conn", conn))] = find(("uuid", uuid))
    members: dict[Any, list[int]] = {}
    for conn in actors:
        members.setdefault(find(("conn", conn)), []).append(conn)
    chosen = [sorted(conns) for conns in members.values()
              if not wanted or any(actors[c].talks_to & wanted for c in conns)]
    named = [any(actors[c].talks_to for c in conns) for conns in chosen]
    if named.count(False) > 1:      # raw connections that named no uuid: one file for them all
        unnamed = sorted(chain.from_iterable(conns for conns, n in zip(chosen, named) if not n))
        chosen = [conns for conns, n in zip(chosen, named) if n] + [unnamed]
    if not per_device:
        together = sorted(conn for conns in chosen for conn in conns)
        return [together] if together else []
    return sorted(chosen)


def write_scenarios(conversation: Conversation, *, per_device: bool = False, only: Iterable[str] = (),
                    stem: str = "session", description: str = "",
                    recorded: dict[str, Any] | None = None, destructive: bool = False) -> list[Written]:
    """The scenarios of ``conversation``: one for the session, or one per group of
    linked connections (``per_device``); each validated. ``destructive``: the TPS
    stopped accepting connections during the session, so each may kill a TPS (it then
    runs against a real one only with --tps-destructive, last)."""
    actors = learn_actors(conversation)
    chosen = [{conn: actors[conn] for conn in members} for members in groups(actors, per_device, only)]
    names = unique_stems([stem if not per_device else f"{stem}_{_device_stem(group)}" for group in chosen])
    written = []
    for group, name in zip(chosen, names):
        scenario = _Writer(conversation, group, name, description, recorded or {}).scenario()
        if destructive:
            scenario.data["destructive"] = True
        written.append(scenario)
    return written


def _device_stem(group: dict[int, Actor]) -> str:
    devices = [a for a in group.values() if a.kind == "device"]
    return slug(devices[0].uuid, limit=60, default="device") if devices else "unidentified"


class _Writer:
    """The steps of one group of connections."""

    def __init__(self, conversation: Conversation, actors: dict[int, Actor], stem: str,
                 description: str, recorded: dict[str, Any]) -> None:
        self.conversation = conversation
        self.actors = actors
        self.stem = stem
        self.description = description
        self.recorded = recorded
        self.steps: list[Step] = []
        self.by_uuid: dict[str, str] = {}       # uuid -> the first actor's name holding it
        self.names: set[str] = set()            # the actors' names
        self.readers: dict[int, Reader] = {}
        self.cseq: dict[int, int] = {}          # register requests each device actor made
        self.registered: set[int] = set()
        self.closed: set[int] = set()           # connections whose actor or server closed
        self.sure = 0.0                         # seconds the steps surely take
        self.size = 0.0                         # estimated bytes of the steps as written
        self.cut = ""
        self.cut_at: int | None = None          # the first event the scenario leaves out
        self.index = 0                          # the event being followed
        self.last_time: float | None = None
        self.connected: set[int] = set()        # connections the scenario opens
        self.open_at_cut: set[int] | None = None
        self.inflight = InFlight()

    def scenario(self) -> Written:
        counters = {"device": 0, "client": 0, "raw": 0}
        spec: dict[str, dict[str, str]] = {}
        for actor in self.actors.values():
            counters[actor.kind] += 1
            actor.name = f"{actor.kind}{counters[actor.kind]}"
            entry = {"kind": actor.kind}
            if actor.kind != "raw":
                if actor.uuid in self.by_uuid:
                    entry["uuid"] = "${%s}" % self.by_uuid[actor.uuid]
                else:
                    entry["uuid"] = actor.uuid
                    self.by_uuid[actor.uuid] = actor.name
                if actor.auth_code != AUTH_CODE:
                    entry["auth_code"] = actor.auth_code
            if actor.synthesized_register:
                entry["note"] = "the capture began after this device registered"
            spec[actor.name] = entry
        self.names = set(spec)
        for self.index, event in enumerate(self.conversation.events):
            if event[1] in self.actors:
                self._add(*event)
        if not self.steps:
            self.steps.append({"do": "wait", "seconds": 0, "note": "nothing happened"})
        counts = ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in counters.items() if n)
        at_end = self._annotate_pending()
        data: ScenarioData = {
            "description": self.description or f"Recorded by tpsharness record: {counts}",
            "recorded": {**self.recorded, "connections": len(self.actors),
                         **({"cut": self.cut} if self.cut else {})},
            "exact": True,
            **({"pending_at_end": at_end} if at_end else {}),
            "actors": spec,
            "steps": self.steps,
        }
        return Written(self.stem, validate(data, f"test_{self.stem}.tps.json"), self.cut)

    def _annotate_pending(self) -> dict[str, int]:
        """Write each move's ``pending``; what may arrive after the last step, by actor."""
        still_open = self.open_at_cut if self.open_at_cut is not None else self.connected - self.closed
        holders = {actor.uuid: conn for conn, actor in self.actors.items() if conn in still_open}
        return self.inflight.annotate(
            {conn: actor.name for conn, actor in self.actors.items()},
            end=self.cut_at if self.cut_at is not None else len(self.conversation.events),
            end_time=self.conversation.end, open_conns=still_open, holders=holders)

    # -- events -> steps -------------------------------------------------------------------

    def _add(self, time: float, conn: int, kind: str, data: bytes) -> None:
        """Follow one event: what was on its way at each move, and until the scenario
        is cut, its steps."""
        actor = self.actors[conn]
        gap = 0.0 if self.last_time is None else max(0.0, time - self.last_time)
        self.last_time = time
        inflight, index = self.inflight, self.index
        if kind == OPEN:
            if self._wait(gap) and self._move({"do": "connect", "actor": actor.name}):
                self.connected.add(conn)
                self._synthesized_register(actor)
        elif kind == SENT and conn not in self.closed:
            inflight.wrote(index, time, conn, data)
            if self._wait(gap):
                for step in self._writes(actor, data):
                    self._move(step)
        elif kind == RECEIVED:
            framed = self._frame(actor, data)
            inflight.received(index, time, conn, [m if not isinstance(m, bytes) else None for m in framed],
                              self.readers[conn].buffered > 0)
            if conn not in self.closed and framed:       # after a close nothing can be seen
                self._emit_all(self._expectations(actor, framed, gap))
        elif kind == SERVER_CLOSED and conn not in self.closed:
            self.closed.add(conn)
            steps = self._leftover(actor)
            inflight.received(index, time, conn, [None] if steps else [], False)
            inflight.server_closed(index, conn)
            steps.append(self._expecting({"do": "expect_close", "actor": actor.name}, gap))
            if self._wait_before_expecting(gap):
                self._emit_all(steps)
        elif kind == ACTOR_CLOSED and conn not in self.closed:
            self.closed.add(conn)
            inflight.actor_closed(index, conn)
            if self._wait(gap):
                self._move({"do": "close", "actor": actor.name})

    def _emit_all(self, steps: list[Step]) -> None:
        for step in steps:
            if not self._emit(step):
                return

    def _move(self, step: Step) -> bool:
        """Emit ``step``, a move an exact replay checks before."""
        if not self._emit(step):
            return False
        self.inflight.move(self.index, step)
        return True

    def _synthesized_register(self, actor: Actor) -> bool:
        if not actor.synthesized_register:
            return True
        self.cseq[actor.conn] = 1
        self.registered.add(actor.conn)
        note = "not in the capture (it began after this register): the relays need it"
        return self._move({"do": "register", "actor": actor.name, "note": note}) and \
            self._emit({"do": "expect_reply", "actor": actor.name, "status": 200,
                        "fields": {"ErrorNum": "200"}, "note": note})

    def _emit(self, step: Step) -> bool:
        if self.cut:
            return False
        size = len(json.dumps(step, indent=2)) * 1.5 + 8
        if self.size + size > MAX_FILE * FILE_MARGIN:
            return self._cut(f"the session is longer than a scenario file holds ({MAX_FILE} bytes); "
                             "record less (--duration, --only, --per-device)")
        self.size += size
        self.steps.append(step)
        return True

    def _cut(self, why: str) -> bool:
        if not self.cut:
            self.cut = f"cut at step {len(self.steps) + 1}: {why}"
            self.cut_at = self.index
            self.open_at_cut = self.connected - self.closed
            self.steps.append({"do": "wait", "seconds": 0, "note": self.cut})
        return False

    def _wait(self, gap: float) -> bool:
        """Waits for a gap before a write (or a connect, or a close); False once cut."""
        if self.cut:
            return False
        if gap < MIN_GAP:
            return True
        if self.sure + gap > MAX_TOTAL_SECONDS:
            return self._cut(f"the session's gaps add up to more than {MAX_TOTAL_SECONDS} s, the most "
                             "a scenario asks for")
        self.sure += gap
        while gap > 0:
            seconds = min(gap, MAX_SECONDS)
            if not self._emit({"do": "wait", "seconds": round(seconds, 3)}):
                return False
            gap -= seconds
        return True

    def _wait_before_expecting(self, gap: float) -> bool:
        """An expectation waits for what it expects, up to MAX_SECONDS; a longer gap
        before it (a TPS's idle timeout) is waited for first, less the expectation's share."""
        return self._wait(gap - MAX_SECONDS / 2) if gap > MAX_SECONDS / 2 else True

    @staticmethod
    def _expecting(step: Step, gap: float) -> Step:
        """``step`` given a ``within`` for a TPS that took ``gap`` seconds to do it."""
        gap = min(gap, MAX_SECONDS / 2)
        if gap * 1.5 + 1 > DEFAULT_WITHIN:
            step["within"] = min(MAX_SECONDS, math.ceil(gap * 1.5 + 1))
        return step

    # -- writes -------------------------------------------------------------------------------

    def _writes(self, actor: Actor, data: bytes) -> list[Step]:
        """The step that writes ``data`` as the actor did, in one write."""
        step = self._builder_step(actor, data)
        if step is not None:
            return [step]
        if b"${" in data:
            return [{"do": "send_raw", "actor": actor.name, **bytes_field("data", data)}]
        text = _HOST.sub(lambda m: m.group(1) + b"${tps}", data)
        text = _UUID_HEADER.sub(lambda m: m.group(1) + self._placeholder(m.group(2)), text)
        text = _SERIAL.sub(lambda m: m.group(1) + self._placeholder(m.group(2)) + m.group(3), text)
        return [{"do": "send_raw", "actor": actor.name, "data": text.decode("latin-1")}]

    def _literal_ok(self, uuid: str) -> bool:
        """Whether a step may name ``uuid`` as it is: an actor's uuid (written as its
        name), or a literal that the player will not take for a name or placeholder."""
        if uuid in self.by_uuid:
            return True
        return not ("\r" in uuid or "\n" in uuid or "${" in uuid or uuid in self.names)

    def _placeholder(self, value: bytes) -> bytes:
        name = self.by_uuid.get(value.strip().decode("latin-1"))
        return b"${%s}" % name.encode() if name is not None else value

    def _builder_step(self, actor: Actor, data: bytes) -> Step | None:
        """A register, heartbeat or send step that writes exactly ``data`` (its Host
        header aside), or None."""
        if actor.kind == "raw":
            return None
        reader = Reader()
        reader.feed(data)
        try:
            found = list(reader)
        except ProtocolError:
            return None
        if not found:
            return None
        message, times = found[0], len(found)
        consumed = len(message.raw) * times
        rest = data[consumed:]
        if data[:consumed] != message.raw * times or rest not in (b"", b"\r\n"):
            return None
        trailing = rest == b"\r\n"
        if trailing and times > 1:
            return None
        host = _host(message.raw)
        if host is None:
            return None
        step: Step
        if isinstance(message, RegisterRequest) and actor.kind == "device":
            cseq = self.cseq.get(actor.conn, 0) + 1
            if register_request(message.serial, host=host, cseq=str(cseq), auth_code=message.auth_code,
                                trailing_crlf=trailing) * times != data or not self._literal_ok(message.serial):
                return None
            heartbeat = message.serial == actor.uuid and actor.conn in self.registered and not trailing
            if heartbeat and message.auth_code != actor.auth_code:
                return None
            self.cseq[actor.conn] = cseq
            if heartbeat:
                step = {"do": "heartbeat", "actor": actor.name}
            else:
                step = {"do": "register", "actor": actor.name}
                if message.serial != actor.uuid:
                    step["serial"] = "${%s}" % self.by_uuid[message.serial] \
                        if message.serial in self.by_uuid else message.serial
                if message.auth_code != actor.auth_code:
                    step["auth_code"] = message.auth_code
                if trailing:
                    step["trailing_crlf"] = True
            if message.serial == actor.uuid:
                self.registered.add(actor.conn)
        elif isinstance(message, PrivateData) and message.src == actor.uuid and not trailing:
            if message.auth_code != actor.auth_code or not self._literal_ok(message.dest):
                return None
            template = PrivateDataTemplate(message.src, message.dest, host=host, auth_code=message.auth_code)
            if template.build(message.body) * times != data:
                return None
            step = {"do": "send", "actor": actor.name, "to": self.by_uuid.get(message.dest, message.dest)}
            try:
                step["payload"] = message.body.decode("utf-8")
            except UnicodeDecodeError:
                step["payload_hex"] = message.body.hex()
        else:
            return None
        if times > 1:
            step["times"] = times
        return step

    # -- what came back ---------------------------------------------------------------------

    def _frame(self, actor: Actor, data: bytes) -> list[Message | bytes]:
        """What ``data`` completes on the actor's connection, framed as the player frames
        it: messages, and bytes that are not one (the reader then starts afresh)."""
        reader = self.readers.setdefault(actor.conn, Reader())
        reader.feed(data)
        framed: list[Message | bytes] = []
        while True:
            try:
                message = reader.next()
            except ProtocolError:
                framed.append(reader.take())
                return framed
            if message is NEED_DATA:
                return framed
            framed.append(message)

    def _expectations(self, actor: Actor, framed: list[Message | bytes], gap: float) -> list[Step]:
        steps: list[Step] = []
        for item in framed:
            if isinstance(item, bytes):
                for start in range(0, len(item), MAX_RECORDED_BYTES):
                    steps.append({"do": "expect_bytes", "actor": actor.name,
                                  **bytes_field("data", item[start:start + MAX_RECORDED_BYTES])})
            else:
                steps.append(self._expectation(actor, item))
        if not self._wait_before_expecting(gap):
            return []
        self._expecting(steps[0], gap)
        return steps

    def _expectation(self, actor: Actor, message: Any) -> Step:
        name = actor.name
        if isinstance(message, RegisterReply):
            return {"do": "expect_reply", "actor": name, "status": message.status,
                    "fields": {"MessageType": "MSG_TRANSPROXY_REGISTER_RSP",
                               "ErrorNum": message.error_num, "ErrorString": message.error_string}}
        if isinstance(message, Reply):
            return {"do": "expect_reply", "actor": name, "status": message.status}
        if isinstance(message, PrivateData):
            step: Step = {"do": "expect_receipt", "actor": name}
            try:
                step["payload"] = message.body.decode("utf-8")
            except UnicodeDecodeError:
                step["payload_hex"] = message.body.hex()
            if self._literal_ok(message.src):
                step["from"] = self.by_uuid.get(message.src, message.src)
            return step
        assert isinstance(message, (RegisterRequest, BadRequest))
        return {"do": "expect_bytes", "actor": name, **bytes_field("data", message.raw[:MAX_RECORDED_BYTES]),
                "note": "the TPS sent a request where a reply belongs"}

    def _leftover(self, actor: Actor) -> list[Step]:
        """What the TPS sent last that is not a whole message (it closed mid-message)."""
        reader = self.readers.get(actor.conn)
        rest = reader.take() if reader is not None else b""
        if not rest.strip(b"\r\n\x00"):
            return []
        return [{"do": "expect_bytes", "actor": actor.name, **bytes_field("data", rest[:MAX_RECORDED_BYTES]),
                 "note": "the TPS closed the connection in the middle of a message"}]


def _host(raw: bytes) -> str | None:
    match = _HOST.search(raw)
    if match is None:
        return None
    value = match.group(2).decode("latin-1")
    return value if value == value.strip() else None
