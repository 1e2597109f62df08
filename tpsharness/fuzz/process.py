"""The server under test as a process the fuzzer owns (--server-cmd).

As AFL restarts its target after each crash, the fuzzer restarts the server, so
that a crash can be shrunk: every candidate program runs against a live server.
The command is a shell line (``/bin/sh -c``, so ``cd DIR && exec ./server -s
{port}`` works); ``{port}`` is replaced by a free loopback port. Each start is a
session of its own, and all of it is killed on every path (restart, end, Ctrl-C,
SIGTERM), with a server that daemonized out of it (``watchdog.daemons``); a
watchdog process does the same if the fuzzer dies by SIGKILL. The leader is not
reaped until its start is stopped, so its session id cannot be reused meanwhile;
then the watchdog is told to forget it. Its stdout and
stderr go to a bounded ring (``output.OutputRing``), which crash triage reads along
with the exit status.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Iterator

from ..defaults import HOST
from ..errors import InvalidArgument, ServerStartError  # noqa: F401  (callers import it from here too)
from ..text import printable
from . import watchdog
from .output import RING_SIZE, OutputRing

START_TIMEOUT = 10.0
STOP_GRACE = 2.0                # seconds from SIGTERM to SIGKILL
OUTPUT_SHOWN = 1500             # characters of the command's output quoted in errors
FIRST_BACKOFF = 0.001           # seconds between looks at the port, doubling up to
LAST_BACKOFF = 0.01
SHELL = "/bin/sh"
MAX_SPARES = 12                 # servers kept listening for the next restarts
SPARE_PATIENCE = 0.02           # seconds a restart may wait for its spare before another is kept


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: an exit code, or the signal that killed it."""

    code: int | None = None
    signal: int | None = None

    @property
    def signal_name(self) -> str | None:
        """The killing signal's name (SIGSEGV), also where a shell reported one as
        128 + its number; None if no signal ended it."""
        number = self.signal
        if number is None and self.code is not None and 128 < self.code < 128 + 65:
            number = self.code - 128
        if number is None:
            return None
        try:
            return signal.Signals(number).name
        except ValueError:
            return f"signal {number}"

    def __str__(self) -> str:
        if self.code is None and self.signal is None:
            return "ended, its exit status unknown (it ran in the background, not as the command)"
        if self.signal is not None:
            return f"killed by {self.signal_name}"
        if self.signal_name is not None:
            return f"exited with status {self.code} (a shell's report of {self.signal_name})"
        return f"exited with status {self.code}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class _Watchdog:
    """The watchdog process (see ``watchdog``): told of each start (session, port),
    it kills them all when the fuzzer closes its stdin or dies."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.process = subprocess.Popen([sys.executable, "-I", "-S", watchdog.__file__, token],
                                        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)

    def watch(self, session: int, port: int) -> None:
        self._write(b"%d %d\n" % (session, port))

    def forget(self, session: int) -> None:
        """``session`` was stopped and reaped: its id may now be another process's."""
        self._write(b"forget %d\n" % session)

    def _write(self, line: bytes) -> None:
        assert self.process.stdin is not None       # a pipe, made above
        try:
            self.process.stdin.write(line)
            self.process.stdin.flush()
        except OSError:             # it died: the fuzzer still kills its groups itself
            pass

    def close(self) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(watchdog.GRACE + 5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _Launch:
    """One start of the command: its session, its port, its output."""

    def __init__(self, command: str, port: int, token: str, ring_size: int, keeper: _Watchdog) -> None:
        self.port = port
        self.keeper = keeper
        self.marker = f"{watchdog.ENVIRONMENT}={token}."
        read_end, write_end = os.pipe()
        environment = dict(os.environ)
        environment[watchdog.ENVIRONMENT] = f"{token}."
        try:
            self.process = subprocess.Popen([SHELL, "-c", command.replace("{port}", str(port))],
                                            stdin=subprocess.DEVNULL, stdout=write_end, stderr=write_end,
                                            start_new_session=True, env=environment)
        except OSError as error:
            os.close(read_end)
            raise ServerStartError(f"cannot run {SHELL}: {error.strerror}") from None
        finally:
            os.close(write_end)
        keeper.watch(self.process.pid, port)
        self.since = watchdog.started(self.process.pid)     # what it leaves behind started later
        self.ring = OutputRing(read_end, ring_size)
        self._status: ExitStatus | None = None      # once reaped
        self.background = False     # the leader exited 0 and left the server running

    @property
    def session(self) -> int:
        return self.process.pid

    def members(self) -> list[int]:
        """The processes of this start's session, the leader's zombie aside."""
        return watchdog.members({self.session})

    def status(self) -> ExitStatus | None:
        """The leader's exit status, or None while it runs; it is not reaped here."""
        if self._status is not None:
            return self._status
        try:
            result = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:       # reaped elsewhere: Popen knows how it ended
            code = self.process.poll()
            return None if code is None else ExitStatus(code=code) if code >= 0 else ExitStatus(signal=-code)
        if result is None or result.si_pid == 0:
            return None
        if result.si_code == os.CLD_EXITED:
            return ExitStatus(code=result.si_status)
        return ExitStatus(signal=result.si_status)

    def others_running(self) -> bool:
        """Whether a process this start made still runs, the leader aside (a server
        that forked into the background and let its shell exit), in any session."""
        return any(pid != self.process.pid for pid in self.members()) or \
            bool(watchdog.marked(self.marker.encode()))

    def alive(self) -> bool:
        """The leader runs, or it left the server in the background, listening (a
        leader that exits 0 once its server listens left it there)."""
        status = self.status()
        if status is None:
            return True
        running = any(pid != self.process.pid for pid in self.members()) or watchdog.accepts(self.port)
        if status.code == 0 and running:
            self.background = True
        return self.background and running

    def wait_exit(self, timeout: float) -> ExitStatus | None:
        """The server's status once it exits, waiting at most ``timeout`` s: the
        leader's, or an unknown one for a server in the background once nothing of
        this start runs."""
        deadline = time.monotonic() + timeout
        delay = FIRST_BACKOFF
        while True:
            status = self.status()
            if status is not None:
                self.alive()            # a leader that exited 0 may have left the server running
            if self.background:         # the server is not our child: it ended when its port did
                status = None if watchdog.accepts(self.port) else ExitStatus()
            if status is not None or time.monotonic() >= deadline:
                return status
            time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, LAST_BACKOFF)

    def _wait_gone(self, timeout: float) -> None:
        """Wait until no process of this session runs (at most ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        delay = FIRST_BACKOFF
        while self.members() and time.monotonic() < deadline:
            time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, LAST_BACKOFF)

    def stop(self) -> ExitStatus | None:
        """SIGTERM to everything of this start, SIGKILL after STOP_GRACE to what is
        left (at once if the leader is gone, unless it left the server in the
        background); then reap. The leader's status (None if it ended by our signal)."""
        before = self.status()
        if self._status is None:
            watchdog.kill(self.members(), signal.SIGTERM)
            if before is None or self.background:
                self._wait_gone(STOP_GRACE)
            watchdog.kill(self.members(), signal.SIGKILL)
            escaped = watchdog.daemons({self.port: self.since}, self.marker.encode())
            watchdog.kill(escaped, signal.SIGTERM)
            if escaped:
                time.sleep(watchdog.GRACE)
                watchdog.kill(watchdog.daemons({self.port: self.since}, self.marker.encode()), signal.SIGKILL)
            self.process.kill()
            self.process.wait()
            self.keeper.forget(self.session)
            self._status = self.status() if before is None else before
        self.ring.wait_ended(0.2)
        self.ring.close()
        return before


class ServerProcess:
    """``command`` (a shell line; ``{port}`` filled in) listening on ``host``:``port``.

    Where the fuzzer picked the port, the first restart also starts a spare server on
    another free port, and each later restart swaps to the oldest spare (already
    listening, as a rule) and starts another: shrinking a crash restarts the server
    for every crashing candidate, and waiting for the server to start was most of
    that. When a restart still waits for its spare, twice as many are kept (at most
    MAX_SPARES). ``address`` follows the swaps. A context manager: leaving it closes
    everything.
    """

    def __init__(self, command: str, host: str = HOST, port: int | None = None,
                 start_timeout: float = START_TIMEOUT, ring_size: int = RING_SIZE, role: str = "server") -> None:
        self.role = role            # "server" or "reference": which command a message names
        if not command.strip():
            raise InvalidArgument(f"the {role} command is empty")
        if "{port}" not in command and port is None:
            raise InvalidArgument(f"the {role} command needs {{port}}, or give HOST PORT it listens on")
        self.command = command
        self.host = host
        self.port = port if port is not None else free_port()
        self.start_timeout = start_timeout
        self.ring_size = ring_size
        self.restarts = 0
        self.lost_spares = 0            # spares that died before their turn (see restart)
        self.token = secrets.token_hex(8)
        self._launches = 0
        self._spares = port is None         # the port is ours: a spare may take another
        self._current: _Launch | None = None
        self._spare_queue: deque[_Launch] = deque()
        self._spare_count = 1           # spares kept, once the first restart made one
        self._watchdog: _Watchdog | None = None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def spare_address(self) -> tuple[str, int] | None:
        """Where the next restart's server listens (None: the next restart starts one)."""
        return None if not self._spare_queue else (self.host, self._spare_queue[0].port)

    @property
    def session(self) -> int | None:
        """The session (and process group) of the server in use (None when stopped)."""
        return None if self._current is None else self._current.session

    def start(self) -> None:
        """Start the command and wait until it accepts connections."""
        with _interrupts_deferred():
            self._current = self._launch(self.port)
        self._wait_listening(self._current)

    def restart(self) -> None:
        """A fresh server: the oldest spare that is still alive, if there is one (then
        the address changes), else a new start. A spare that died waiting (its port
        taken by another process meanwhile, or something of the machine's that
        connected to it) is stopped and counted in ``lost_spares``, not fatal."""
        self.stop()
        self.restarts += 1
        while self._spare_queue:
            spare = self._spare_queue.popleft()
            if not spare.alive():
                spare.stop()
                self.lost_spares += 1
                continue
            self._current, self.port = spare, spare.port
            began = time.monotonic()
            self._wait_listening(spare)
            if time.monotonic() - began > SPARE_PATIENCE:
                self._spare_count = min(self._spare_count * 2, MAX_SPARES)
            break
        else:
            self.start()
        while self._spares and len(self._spare_queue) < self._spare_count:
            with _interrupts_deferred():
                self._spare_queue.append(self._launch(free_port()))

    def alive(self) -> bool:
        """Whether the server in use runs (its leader, or what it left in the background)."""
        return self._current is not None and self._current.alive()

    def wait_exit(self, timeout: float) -> ExitStatus | None:
        """The exit status of the server in use once its leader exits (at most
        ``timeout`` s; None if it still runs)."""
        return None if self._current is None else self._current.wait_exit(timeout)

    def output(self) -> bytes:
        """The last output of the server in use (at most ``ring_size`` bytes)."""
        return b"" if self._current is None else self._current.ring.data()

    def output_mark(self) -> int:
        """Where the output of the server in use is now (for ``output_since``)."""
        return 0 if self._current is None else self._current.ring.total

    def output_since(self, mark: int) -> bytes:
        """What the server in use printed after ``output_mark()`` gave ``mark``."""
        return b"" if self._current is None else self._current.ring.since(mark)

    def output_settled(self, timeout: float) -> bool:
        """Wait until the server in use closed its output (at most ``timeout`` s)."""
        return self._current is not None and self._current.ring.wait_ended(timeout)

    def stop(self) -> None:
        """Stop the server in use and everything it started."""
        if self._current is not None:
            self._current.stop()
            self._current = None

    def close(self) -> None:
        self.stop()
        while self._spare_queue:
            self._spare_queue.popleft().stop()
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None

    def _launch(self, port: int) -> _Launch:
        if self._watchdog is None:
            self._watchdog = _Watchdog(self.token)
        self._launches += 1
        return _Launch(self.command, port, f"{self.token}:{self._launches}", self.ring_size, self._watchdog)

    def _wait_listening(self, launch: _Launch) -> None:
        """Return once ``launch`` accepts connections, looking with a short backoff.
        A leader that exits 0 may have left the server in the background: it is waited
        for until the start timeout, even if nothing the fuzzer can see still runs (a
        server that cleared its environment in a session of its own)."""
        deadline = time.monotonic() + self.start_timeout
        delay = FIRST_BACKOFF
        while True:
            status = launch.status()
            launch.background = status is not None and status.code == 0
            if status is not None and status.code != 0:
                output = self._quoted(launch)
                self.stop()
                raise ServerStartError(f"the {self.role} command {status} before listening on "
                                       f"{self.host}:{launch.port}{output}")
            if _accepts(self.host, launch.port):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                output = self._quoted(launch)
                left = f"{status} and left nothing listening" if status is not None and \
                    not launch.others_running() else "did not listen"
                self.stop()
                raise ServerStartError(f"the {self.role} command {left} on {self.host}:{launch.port} "
                                       f"within {self.start_timeout:g} s{output}")
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, LAST_BACKOFF)

    @staticmethod
    def _quoted(launch: _Launch) -> str:
        launch.ring.wait_ended(0.2)
        text = launch.ring.text().strip()
        if not text:
            return "; it printed nothing"
        if len(text) > OUTPUT_SHOWN:
            text = "..." + text[-OUTPUT_SHOWN:]
        return "; its last output:\n" + "\n".join(printable(line, OUTPUT_SHOWN) for line in text.splitlines())


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the start being made is known (to the watchdog
    and to its ServerProcess), so that one arriving in between leaves no server that
    nobody stops. Only the main thread has signal handlers to swap."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    for number in previous:
        signal.signal(number, lambda number, frame: caught.append(number))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        for caught_number in caught:
            signal.raise_signal(caught_number)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
