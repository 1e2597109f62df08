"""The fake's serving machinery, apart from its protocol: the listener, the one
task that reads every connection, the timeout sweep, replies held back by
``reply_delay``, closing, and the calls other threads make (``bridge``).

``Serving`` hands each whole message (or each read, for a profile that reads as
field servers do) to ``FakeTPS``, whose methods are the protocol's decisions.
"""

from __future__ import annotations

import logging
import select
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable
from time import monotonic
from typing import TypeVar

from tpsharness import net
from tpsharness.kernel import ReadGroup
from tpsharness.protocol import Message
from tpsharness.syscalls import NewTask, Sleep, WaitReadable, kill, spawn

from .bridge import CALL_TIMEOUT, Bridge, ServerThread
from .events import EventLog, OnEvent, Stats, make_event
from .faults import Crash, Hooks
from .options import FakeOptions
from .peer import Peer

__all__ = ["Serving"]

log = logging.getLogger("fake_tps")
T = TypeVar("T")
S = TypeVar("S", bound="Serving")

DELAYED_ENTRY_COST = 256    # bytes a request waiting out reply_delay costs beyond its own


class Serving(ABC):
    """Connections, reads, timeouts and control; the protocol is a subclass's."""

    options: FakeOptions
    _hooks: Hooks

    def __init__(self, host: str, port: int, on_event: OnEvent | None = None) -> None:
        self.on_event = on_event        # called with each Event, in the server's thread
        self.stats = Stats()
        self.crash: Crash | None = None     # how a planted crash ended serving
        self._log = EventLog()
        self._listener = net.listen(host, port)
        self.address: tuple[str, int] = self._listener.sock.getsockname()[:2]
        self._table: dict[str, Peer] = {}       # uuid -> connection (devices and clients share it)
        self._peers: dict[int, Peer] = {}       # fd -> every open connection
        self._connections = ReadGroup()
        self._next_sweep = 0.0
        self.bridge = Bridge()
        self._delayed: deque[tuple[float, Peer, Message]] = deque()  # waiting out reply_delay
        self._delayer: int | None = None        # the tid of the task that answers them

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {net.format_address(self.address)} {len(self._peers)} connections>"

    # -- what tests ask ---------------------------------------------------------------

    @property
    def events(self) -> deque[tuple[int, str]]:
        """Notable things (protocol errors, drops), newest last: (sequence number, text)."""
        return self._log.events

    def events_since(self, seq: int) -> list[str]:
        """Event texts after sequence number ``seq``; ``event_seq`` is the current one."""
        return self._log.since(seq)

    @property
    def event_seq(self) -> int:
        return self._log.seq

    def quiescent(self) -> bool:
        """True when every byte received has been read, every connection attempt
        accepted and every queued byte sent: run in one kernel with its peers, the
        fake has then answered all it was sent (tpsharness fuzz's model settles so)."""
        poller = select.poll()
        poller.register(self._listener.fd, select.POLLIN)
        for fd, peer in list(self._peers.items()):
            if peer.pending():
                return False
            poller.register(fd, select.POLLIN)
        return not poller.poll(0)

    def registered(self) -> set[str]:
        """The uuids the table holds now (device serials and client SrcUuids)."""
        return set(list(self._table))

    def clear(self) -> None:
        """Close every connection, empty the table and zero the stats (between tests).

        Like ``configure``, it runs in the server's thread, between two requests: a
        request is never answered half before and half after it."""
        self._in_server(self._clear_now)

    def _clear_now(self) -> None:
        self._close_all("cleared")
        self.stats = Stats(open_connections=self.stats.open_connections)

    # -- serving ------------------------------------------------------------------------

    async def serve(self) -> None:
        """Serve until killed or ``request_stop()``; then close every connection."""
        self.bridge.serving_in(threading.current_thread())
        acceptor = await NewTask(self._accept_loop(), daemon=True)
        reader = await NewTask(self._read_loop(), daemon=True)
        try:
            await self.bridge.control()
        finally:
            for tid in (self._delayer, reader, acceptor):     # delayed replies end with the server
                if tid is not None:
                    kill(tid)
            self._delayed.clear()
            self._listener.close()
            self._close_all("the server stopped")
            self.bridge.serving_in(None)

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
            self._open(sock)

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

    def _serve_safely(self, work: Callable[[Peer, T], None], peer: Peer, arg: T) -> None:
        """``work(peer, arg)``; a bug of ours there costs that connection, not the server."""
        try:
            work(peer, arg)
        except Exception:
            log.exception("internal error serving %s", peer.address)
            self.note(f"internal error serving {peer.address}: closed it")
            self.close_peer(peer, "internal error")

    def _handle(self, peer: Peer, message: Message) -> None:
        delay = self.options.reply_delay
        if not delay:
            self._dispatch(peer, message)
            return
        if peer.closed:
            return
        peer.delayed += len(message.raw) + DELAYED_ENTRY_COST
        if peer.delayed > self.options.max_output:
            self.note(f"dropped {peer.address}: {peer.delayed} bytes of requests wait out reply_delay")
            self.stats.dropped += 1
            self.close_peer(peer, "requests pile up under reply_delay")
            return
        self._delayed.append((monotonic() + delay, peer, message))
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
        options = self.options
        for peer in list(self._peers.values()):
            if peer.request_started is not None and now - peer.request_started >= options.request_timeout:
                self.stats.slow_closed += 1
                self.note(f"closed {peer.address}: a request not whole {options.request_timeout:g} s "
                          f"after its first byte ({peer.reader.buffered} bytes of it)")
                self.close_peer(peer, "request timeout")
            elif now - peer.last_received >= peer.idle_timeout:
                self.stats.idle_closed += 1
                self.note(f"closed {peer.address}: nothing received for {peer.idle_timeout:g} s")
                self.close_peer(peer, "idle timeout")
        shortest = min(options.idle_timeout, options.bad_request_idle_timeout, options.request_timeout)
        self._next_sweep = now + min(1.0, max(0.01, shortest / 10))

    def _emit(self, kind: str, peer: str, **fields: object) -> None:
        """Hand an Event to ``on_event``, if any; its failure costs the listener, not us."""
        on_event = self.on_event
        if on_event is None:
            return
        try:
            on_event(make_event(kind, peer, fields))
        except Exception:
            log.exception("on_event failed; events are no longer sent to %r", on_event)
            self.on_event = None

    # -- what the protocol decides -------------------------------------------------------

    @abstractmethod
    def _open(self, sock: net.Socket) -> None:
        """Serve the new connection ``sock`` (make its Peer and ``_add`` it, or not)."""

    @abstractmethod
    def _read_from(self, peer: Peer, now: float) -> None:
        """``peer`` is readable: read it and ``_handle`` what it sent."""

    @abstractmethod
    def _dispatch(self, peer: Peer, message: Message) -> None:
        """Answer one message of ``peer``."""

    def _add(self, peer: Peer) -> None:
        self._peers[peer.sock.fd] = peer
        self._connections.add(peer.sock.fd)
        self.stats.open_connections += 1

    def note(self, text: str) -> None:
        """Record something a test may need to know about (protocol error, drop)."""
        self._log.note(text)

    def send(self, peer: Peer, data: bytes) -> None:
        peer.send(data)

    def _overflowed(self, peer: Peer) -> None:
        self.note(f"dropped {peer.address}: {peer.queued} bytes queued and it does not read")
        self.stats.dropped += 1
        self.close_peer(peer, "output queue full: it does not read")

    def _failed(self, peer: Peer, error: OSError) -> None:
        self.close_peer(peer, f"send failed: {error.strerror or error}")

    def close_peer(self, peer: Peer, reason: str) -> None:
        """Close ``peer`` (FIN, no bytes) and remove every table entry it holds; requests
        of it that wait out reply_delay go (they would only be skipped)."""
        for uuid in peer.uuids:
            if self._table.get(uuid) is peer:
                del self._table[uuid]
        peer.uuids.clear()
        if peer.delayed:
            peer.delayed = 0
            self._delayed = deque(entry for entry in self._delayed if entry[1] is not peer)
        if self._peers.get(peer.sock.fd) is peer:
            del self._peers[peer.sock.fd]
            self.stats.open_connections -= 1
        if not peer.closed:
            peer.close()
            self._emit("close", peer.address, reason=reason)

    def _close_all(self, reason: str) -> None:
        for peer in list(self._peers.values()):
            self.close_peer(peer, reason)
        self._table.clear()

    def die(self, crash: Crash | None = None) -> None:
        """Stop serving as a crashed server would: the listener first (whoever sees a
        connection close then finds the server dead), then every connection. ``crash``
        is kept for ``python -m fake_tps``, which ends the process so."""
        self.crash = crash or self.crash
        self._listener.close()
        self._close_all("the server died")
        self.request_stop()

    # -- control: stop and calls from other threads ----------------------------------------

    def _in_server(self, function: Callable[[], T]) -> T:
        """``function()`` where the server runs: at once if ``serve()`` runs in this
        thread or in none; else queued to the control task, which runs it between two
        requests, and waited for (its exception is raised here)."""
        future = self.bridge.submit(function)
        if not future.done():
            self.wake()
        return future.result(timeout=CALL_TIMEOUT)

    def wake(self) -> None:
        """Wake the control task (safe from any thread and from a signal handler)."""
        self.bridge.wake()

    def request_stop(self) -> None:
        """Ask ``serve()`` to end (from any thread or a signal handler)."""
        self.bridge.request_stop()

    def start_in_thread(self: S) -> ServerThread[S]:
        """Serve in a background thread; a context manager that stops it cleanly."""
        return ServerThread(self)

    def close(self) -> None:
        """Release the sockets of a server that is not serving."""
        self._listener.close()
        self.bridge.close()

