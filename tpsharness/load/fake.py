"""The bundled fake TPS in a process of its own, so that it does not share the
generator's CPU: ``with FakeProcess() as address: ...``."""

import io
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from typing import IO

from ..errors import LoadUsageError

_LISTENING = re.compile(r"fake TPS listening on (\S+):(\d+)")


def check_fake_args(args: Sequence[str]) -> None:
    """LoadUsageError with the fake's own one-line complaint about ``args``, found by
    its own parser here rather than by a process that fails to start."""
    from fake_tps.__main__ import make_parser
    from fake_tps.options import from_arguments

    said = io.StringIO()
    try:
        with redirect_stdout(said), redirect_stderr(said):
            from_arguments(make_parser().parse_args(["--port", "0", *args]))
    except SystemExit as stop:
        if not stop.code:
            raise LoadUsageError(f"--fake-option {' '.join(args)}: asks for help or the version, "
                                 "not a run (see python -m fake_tps --help)") from None
        lines = said.getvalue().strip().splitlines()
        raise LoadUsageError(f"--fake-option: {lines[-1] if lines else ' '.join(args)}") from None
    except ValueError as error:
        raise LoadUsageError(f"--fake-option: {error}") from None


class FakeProcess:
    """``python -m fake_tps --port 0 [ARGS]``; its address once it listens."""

    def __init__(self, *args: str, timeout: float = 15.0) -> None:
        self.args = list(args)
        self.timeout = timeout
        self.process: subprocess.Popen[str] | None = None
        self.address: tuple[str, int] | None = None
        self.output: list[str] = []

    def start(self) -> tuple[str, int]:
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fake_tps", "--port", "0", *self.args], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env,
            start_new_session=True)        # Ctrl-C in the terminal is ours to handle, not its
        stdout = self.process.stdout
        assert stdout is not None       # stdout=PIPE
        timer = threading.Timer(self.timeout, self.process.kill)
        timer.start()
        try:
            for line in stdout:
                self.output.append(line.rstrip("\n"))
                match = _LISTENING.search(line)
                if match:
                    self.address = (match.group(1), int(match.group(2)))
                    break
        finally:
            timer.cancel()
        if self.address is None:
            self.stop()
            raise RuntimeError("the bundled fake TPS did not start: " + " | ".join(self.output[-5:]))
        threading.Thread(target=self._drain, args=(stdout,), daemon=True).start()
        return self.address

    def _drain(self, stdout: IO[str]) -> None:
        for line in stdout:
            self.output.append(line.rstrip("\n"))
            del self.output[:-50]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def __enter__(self) -> tuple[str, int]:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
