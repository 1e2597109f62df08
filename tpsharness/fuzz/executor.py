"""Running a program against one server, on the kernel, one observation point per write.

``Run`` owns the actors' connections. After each write it asks its ``settle``
policy for an observation point: the model's policy waits until the in-kernel fake
is quiescent (it has then answered everything, and loopback has delivered it); the
server's policy waits until the server produced at least what the model did (or a
deadline passes), then a short grace for anything extra. So timing alone never makes
a difference appear: a slow server is waited for, only a silent one is not.
"""

from __future__ import annotations

import select
from time import monotonic
from typing import TYPE_CHECKING, Protocol

from .. import net
from ..errors import ServerDown  # noqa: F401  (callers import it from here too)
from ..kernel import ReadGroup
from ..protocol import PrivateDataTemplate, register_request
from ..syscalls import Sleep, WaitReadable
from .observations import Inbox, Point, Seen
from .programs import Program, Step
from .uuids import Uuids

if TYPE_CHECKING:
    from fake_tps import FakeTPS

    from ..net import Socket

WRITE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
MODEL_SETTLE_LIMIT = 5.0        # seconds; an in-kernel fake answers in microseconds
SHORT_WAIT = 0.005              # seconds: a linger this short waits in select (microseconds), not epoll



class Conn:
    """One actor's connection: the socket and what has arrived on it."""

    __slots__ = ("sock", "inbox", "open")

    def __init__(self, sock: Socket) -> None:
        self.sock = sock
        self.inbox = Inbox()
        self.open = True

    def drain(self) -> None:
        """Read what has arrived, without waiting; a close or reset closes our side too."""
        while self.open:
            try:
                data = self.sock.recv_nowait()
            except OSError:
                data = b""
            if data is None:
                return
            if not data:
                self.open = False
                self.inbox.seen.closed = True
                self.sock.close()
                return
            self.inbox.feed(data)

    def close(self) -> None:
        self.open = False
        self.sock.close()


class Run:
    """One program's actors against the server at ``address``."""

    def __init__(self, program: Program, address: tuple[str, int], uuids: Uuids, host: str,
                 settle: Settle, exact_tails: bool = True, early: bool = True) -> None:
        self.program = program
        self.address = (str(address[0]), int(address[1]))
        self.uuids = uuids
        self.host = host                # the same Host header for model and server
        self.settle = settle
        self.exact_tails = exact_tails      # False: an unfinished message counts by its presence
        self.acting: str | None = None      # the actor of the step being run
        self.early = early                  # a point may end once it is known to differ (see apart)
        self.conns: dict[str, Conn] = {}            # actor -> the current connection
        self.connected_before: set[str] = set()
        self.lost: set[str] = set()                 # actors whose connection the server closed
        self.cseq: dict[str, int] = {}
        self.group = ReadGroup()

    def uuid_of(self, actor: str | None) -> str:
        """The uuid of a device or client (the actor of a register or send)."""
        return self.uuids.pool[self.program.identity(actor)]

    def is_open(self, actor: str | None) -> bool:
        conn = self.conns.get(actor) if actor is not None else None
        return conn is not None and conn.open

    def runnable(self, step: Step) -> bool:
        """Whether the step can run here: connect needs an actor without an open
        connection; the rest need one, or connect first (``connects_first``) unless the
        server closed the actor's connection (then the step is skipped)."""
        if step.do == "wait":
            return True
        if step.do == "connect":
            return not self.is_open(step.actor)
        return self.is_open(step.actor) or step.actor not in self.lost

    def connects_first(self, step: Step) -> bool:
        """Whether the step opens its actor's connection before it runs."""
        return step.do not in ("wait", "connect") and not self.is_open(step.actor)

    def writes(self, step: Step) -> list[bytes]:
        """The bytes the step writes, as a list of writes (two for a split request)."""
        actor = step.actor or ""        # only a wait step has no actor, and it writes nothing
        if step.do == "register":
            serial = self.uuid_of(actor) if step.get("serial") is None else self.uuids.pool[step.get("serial")]
            self.cseq[actor] = self.cseq.get(actor, 0) + 1
            data = register_request(serial, host=self.host, cseq=str(self.cseq[actor]),
                                    trailing_crlf=step.get("variant") == "crlf")
        elif step.do == "send":
            own = self.uuid_of(step.actor)
            dest = self.uuids.dest(step.get("to"), own)
            data = PrivateDataTemplate(own, dest, host=self.host).build(step.get("payload"))
        elif step.do == "send_raw":
            return [step.get("raw").build(self.uuids, self.host) or b"\r\n"]
        else:
            return []
        return pieces(data, step.get("variant"), step.get("split_at"))

    async def execute(self, step: Step, expected: list[Point] | None = None) -> list[Point]:
        """Run one step; its observation points (a list of {actor: Seen})."""
        points = []
        actor = step.actor or ""        # only a wait step has no actor, and it neither connects nor writes
        self.acting = step.actor
        if self.connects_first(step):       # what the server says on accept joins the step's point
            await self._connect(actor)
        if step.do == "connect":
            await self._connect(actor)
        elif step.do == "close":
            conn = self.conns[actor]
            conn.drain()            # what arrived before our close belongs to earlier points
            conn.close()
        elif step.do == "wait":
            await self.settle.wait(step.get("seconds"))
        for number, data in enumerate(self.writes(step) or [None]):
            if data is not None:
                await self._write(actor, data)
            points.append(await self.settle(self, expected[number] if expected else None))
        return points

    async def _connect(self, actor: str) -> None:
        try:
            sock = await net.connect(self.address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as error:
            raise ServerDown(f"connect: {error}") from None
        self.conns[actor] = Conn(sock)
        self.connected_before.add(actor)
        self.lost.discard(actor)
        self.group.add(sock.fd)

    async def _write(self, actor: str, data: bytes) -> None:
        conn = self.conns[actor]
        if not conn.open:
            return
        try:
            await conn.sock.sendall(data, timeout=WRITE_TIMEOUT)
        except (OSError, TimeoutError):
            conn.drain()
            if conn.open:           # it takes nothing and says nothing: count it as closed
                conn.inbox.seen.closed = True
                conn.close()
            self.lost.add(actor)

    def drain(self) -> None:
        for actor, conn in self.conns.items():
            if conn.open:
                conn.drain()
                if not conn.open:
                    self.lost.add(actor)

    def take_point(self) -> Point:
        """{actor: Seen} of every actor with a connection, since the last point."""
        return {actor: conn.inbox.take() for actor, conn in self.conns.items()
                if conn.open or conn.inbox.seen.closed or conn.inbox.seen.messages}

    def apart(self, expected: Point) -> bool:
        """Whether the acting actor's connection already differs from ``expected`` in a
        way nothing later can change (a message that is not the one expected, one too
        many, a close): the point's difference is then known, waiting is pointless."""
        if not self.early or self.acting is None or self.acting not in self.conns:
            return False
        return self.conns[self.acting].inbox.apart(expected.get(self.acting, Seen()))

    def satisfied(self, expected: Point) -> bool:
        empty = Seen()
        return all(not conn.open or conn.inbox.satisfies(expected.get(actor, empty), self.exact_tails)
                   for actor, conn in self.conns.items())

    def close(self) -> None:
        for conn in self.conns.values():
            if conn.open:
                conn.close()


def pieces(data: bytes, variant: str | None, split_at: int | None) -> list[bytes]:
    if variant == "pipelined":
        return [data + data]
    if variant == "split":
        cut = min(max(1, split_at or 1), len(data) - 1)
        return [data[:cut], data[cut:]]
    return [data]


class Settle(Protocol):
    """How a Run waits for an observation point (ModelSettle, ServerSettle)."""

    async def __call__(self, run: Run, expected: Point | None = None) -> Point: ...

    async def wait(self, seconds: float) -> None: ...


class ModelSettle:
    """The in-kernel model has settled when it is quiescent twice in a row."""

    def __init__(self, model: FakeTPS) -> None:
        self.model = model

    async def __call__(self, run: Run, expected: Point | None = None) -> Point:
        calm = 0
        limit = monotonic() + MODEL_SETTLE_LIMIT
        while calm < 2:
            await Sleep(0)
            calm = calm + 1 if self.model.quiescent() else 0
            if monotonic() > limit:
                raise RuntimeError(f"the model did not settle within {MODEL_SETTLE_LIMIT:g} s")
        run.drain()
        return run.take_point()

    async def wait(self, seconds: float) -> None:
        """A wait step: nothing times out within a fuzz wait, so the model need not sleep."""


class ServerSettle:
    """Wait until the server produced what the model did (at most ``timeout``).

    A point where the model produced nothing then gets a grace for anything the
    server says: 1.5 times its recent answer time, at least ``min_grace``, at most
    ``grace`` (epoll waits whole milliseconds; spinning instead would take the CPU
    from a server on the same machine). Where the model produced something, what a
    server sends with it arrives with it, and a late extra shows at the next point
    or in the program's final grace; ``patient`` gives every point the grace.
    """

    def __init__(self, timeout: float = 0.25, grace: float = 0.002, min_grace: float = 0.0002,
                 patient: bool = False) -> None:
        self.timeout = timeout
        self.grace = grace
        self.min_grace = min_grace
        self.patient = patient
        self.latency = grace / 2          # a running estimate of the server's answer time
        self.waited = 0.0                 # seconds spent waiting out windows and graces, in all

    async def __call__(self, run: Run, expected: Point | None = None) -> Point:
        expected = expected or {}
        start = monotonic()
        expects_something = any(seen.messages or seen.closed or seen.tail for seen in expected.values())
        while True:
            run.drain()
            if run.satisfied(expected) or run.apart(expected) or not any(conn.open for conn in run.conns.values()):
                break
            now = monotonic()
            if now >= start + self.timeout:
                self.waited += now - start
                return run.take_point()
            try:
                await WaitReadable(run.group, start + self.timeout - now)
            except TimeoutError:
                pass
        if expects_something:
            self.latency += (monotonic() - start - self.latency) / 8
            if not self.patient:
                return run.take_point()
        await self.linger(run, self.grace_now())
        return run.take_point()

    async def linger(self, run: Run, seconds: float) -> None:
        """Read what arrives for ``seconds``.

        epoll waits whole milliseconds (a 0.3 ms grace costs 1 ms), so a short linger
        waits in select, whose timeout has microseconds. It blocks the kernel, which
        is right here: the server's run is the only task in its kernel.
        """
        begin = monotonic()
        end = begin + seconds
        while True:
            fds = [conn.sock.fd for conn in run.conns.values() if conn.open]
            remaining = end - monotonic()
            if not fds or remaining <= 0:
                break
            if remaining <= SHORT_WAIT:
                select.select(fds, (), (), remaining)
            else:
                try:
                    await WaitReadable(run.group, remaining)
                except TimeoutError:
                    pass
            run.drain()
        self.waited += monotonic() - begin

    def grace_now(self) -> float:
        return min(self.grace, max(self.min_grace, 1.5 * self.latency))

    async def wait(self, seconds: float) -> None:
        await Sleep(seconds)
