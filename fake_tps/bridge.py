"""Control of a serving fake from other threads: the wake socketpair, the queue of
calls, the stop request, and the thread that serves (``start_in_thread``).

The protocol code never sees this plumbing: a call from another thread is queued
and run by the server's control task between two requests, so that a request is
never answered half under old options and half under new ones (as trio's
``_entry_queue.py`` and ``_wakeup_socketpair.py`` keep it apart from its runner).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from tpsharness.kernel import Scheduler
from tpsharness.syscalls import ReadWait

__all__ = ["Bridge", "ServerThread", "CALL_TIMEOUT"]

log = logging.getLogger("fake_tps")
T = TypeVar("T")

CALL_TIMEOUT = 10.0         # seconds a call from another thread waits for the server
STOP_TIMEOUT = 10.0         # seconds a ServerThread waits for serve() to end

Command = tuple[Callable[[], Any] | None, "Future[Any]"]     # (None, _): the stop request


class Bridge:
    """Where calls from other threads meet the thread that serves."""

    def __init__(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._lock = threading.Lock()           # orders calls from other threads with serve()'s end
        self._thread: threading.Thread | None = None    # where serve() runs, while it does

    def submit(self, function: Callable[[], T]) -> Future[T]:
        """``function()``'s outcome: run at once if nothing serves or it serves in this
        thread (the future is done), else queued for the control task (wake it)."""
        future: Future[T] = Future()
        with self._lock:
            serving = self._thread
            if serving is None or serving is threading.current_thread():
                _run_into(function, future)
            else:
                self._commands.put((function, future))
        return future

    def wake(self) -> None:
        """Wake the control task (safe from any thread and from a signal handler)."""
        try:
            self._wake_w.send(b"\x00")
        except (BlockingIOError, OSError):
            pass

    def request_stop(self) -> None:
        """Ask the control task to return (from any thread or a signal handler)."""
        self._commands.put((None, Future()))
        self.wake()

    def serving_in(self, thread: threading.Thread | None) -> None:
        """From now on calls from other threads go to ``thread`` (None: run at once)."""
        with self._lock:
            self._thread = thread
            if thread is None:          # serve() ends: the calls still queued run here
                self._run_queued(until_stop=False)

    async def control(self) -> None:
        """The control task: run what other threads queue; return on a stop request."""
        while True:
            await ReadWait(self._wake_r)
            try:
                self._wake_r.recv(4096)
            except BlockingIOError:
                pass
            if self._run_queued(until_stop=True):
                return

    def _run_queued(self, *, until_stop: bool) -> bool:
        """Run the queued calls, in order; True once a stop request was among them
        (with ``until_stop`` the calls behind it stay queued)."""
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

    def close(self) -> None:
        self._wake_r.close()
        self._wake_w.close()


def _run_into(command: Callable[[], Any], future: Future[Any]) -> None:
    """Run a call; its outcome goes to the waiting ``future``."""
    try:
        future.set_result(command())
    except Exception as error:
        future.set_exception(error)


class Servable(Protocol):
    """What a ServerThread runs: a server with a bridge."""

    bridge: Bridge
    address: tuple[str, int]

    def serve(self) -> Coroutine[Any, Any, None]: ...

    def request_stop(self) -> None: ...

    def close(self) -> None: ...


S = TypeVar("S", bound=Servable)


class ServerThread(Generic[S]):
    """``with fake.start_in_thread() as fake:``: serve on a thread of its own."""

    def __init__(self, server: S) -> None:
        self.server = server
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> S:
        server = self.server
        thread = threading.Thread(target=self._run, name=f"fake-tps-{server.address[1]}", daemon=True)
        self._thread = thread
        server.bridge.serving_in(thread)    # calls from now on go to that thread (serve() confirms)
        thread.start()
        self._started.wait(STOP_TIMEOUT)
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
            self.server.bridge.serving_in(None)     # if serve() never ran to its end
            self._started.set()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        server = self.server
        thread = self._thread
        assert thread is not None, "__exit__ without __enter__"
        server.request_stop()
        thread.join(STOP_TIMEOUT)
        alive = thread.is_alive()
        server.close()
        if alive:
            raise RuntimeError(f"{server!r} did not stop within {STOP_TIMEOUT:g} s")
        if self._error is not None and exc_type is None:
            raise RuntimeError(f"{server!r} crashed: {self._error!r}") from self._error
