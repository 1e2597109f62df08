"""The server under test as a process the fuzzer starts and restarts (--server-cmd).

As AFL restarts its target after each crash, the fuzzer restarts the server, so
that a crash can be shrunk: every candidate program runs against a live server.
``{port}`` in the command is replaced by a free loopback port.
"""

import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import IO

from ..defaults import HOST
from ..errors import InvalidArgument, ServerStartError  # noqa: F401  (callers import it from here too)

START_TIMEOUT = 10.0
OUTPUT_SHOWN = 1500             # characters of the command's output quoted in errors


def _die_with_parent() -> None:
    """In the child (Linux): SIGTERM when the fuzzer dies, even by SIGKILL, so that a
    killed run leaves no server behind."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass


PR_SET_PDEATHSIG = 1



def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class ServerProcess:
    """``command`` (a string; ``{port}`` filled in) listening on ``host``:``port``.

    Where the fuzzer picked the port, the first restart also starts a spare server on
    another free port, and each later restart swaps to the spare (already listening)
    and starts the next one: shrinking a crash restarts the server for every crashing
    candidate, and waiting for the interpreter to start was most of that. ``address``
    follows the swaps.
    """

    def __init__(self, command: str, host: str = HOST, port: int | None = None,
                 start_timeout: float = START_TIMEOUT) -> None:
        if "{port}" not in command and port is None:
            raise InvalidArgument("the server command needs {port}, or give HOST PORT it listens on")
        self.command = command
        self.host = host
        self.port = port if port is not None else free_port()
        self.argv = self._argv(self.port)
        if not self.argv:
            raise InvalidArgument("the server command is empty")
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._output: IO[bytes] = tempfile.TemporaryFile()
        self._spares = port is None         # the port is ours: a spare may take another
        self._spare: tuple[subprocess.Popen[bytes], int, IO[bytes]] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def spare_address(self) -> tuple[str, int] | None:
        """Where the next restart's server listens (None: the next restart starts one)."""
        return None if self._spare is None else (self.host, self._spare[1])

    def start(self) -> None:
        """Start the command and wait until it accepts connections."""
        self._output.seek(0)
        self._output.truncate()
        self.process = self._launch(self.argv, self._output)
        self._wait_listening()

    def restart(self) -> None:
        """A fresh server: the spare if there is one (then the address changes)."""
        self.stop()
        self.restarts += 1
        if self._spare is None:
            self.start()
        else:
            self.process, self.port, output = self._spare
            self._spare = None
            self._output.close()
            self._output = output
            self.argv = self._argv(self.port)
            self._wait_listening()
        if self._spares:
            port = free_port()
            output = tempfile.TemporaryFile()
            try:
                self._spare = (self._launch(self._argv(port), output), port, output)
            except ServerStartError:
                output.close()      # it failed to run at all: the next restart says so

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 3 s; the whole process group."""
        _stop(self.process)
        self.process = None

    def close(self) -> None:
        self.stop()
        if self._spare is not None:
            _stop(self._spare[0])
            self._spare[2].close()
            self._spare = None
        self._output.close()

    def _argv(self, port: int) -> list[str]:
        return shlex.split(self.command.replace("{port}", str(port)))

    @staticmethod
    def _launch(argv: list[str], output: IO[bytes]) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_die_with_parent)
        except OSError as error:
            raise ServerStartError(f"cannot run {shlex.join(argv)}: {error.strerror}") from None

    def _wait_listening(self) -> None:
        assert self.process is not None     # launched by the caller
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.process.poll() is not None:
                raise ServerStartError(f"the server command exited with status {self.process.returncode} "
                                       f"before listening on {self.host}:{self.port}{self._last_output()}")
            if self._accepts():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"the server command did not listen on {self.host}:{self.port} "
                                       f"within {self.start_timeout:g} s{self._last_output()}")
            time.sleep(0.02)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _last_output(self) -> str:
        self._output.seek(0)
        text = self._output.read().decode("utf-8", "replace").strip()
        if not text:
            return "; it printed nothing"
        if len(text) > OUTPUT_SHOWN:
            text = "..." + text[-OUTPUT_SHOWN:]
        return "; its last output:\n" + text


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 3 s; the whole process group."""
    if process is None or process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
