"""The bundled fake TPS in a process of its own, so that it does not share the
generator's CPU: ``with FakeProcess() as address: ...``."""

import os
import re
import signal
import subprocess
import sys
import threading
from typing import IO

_LISTENING = re.compile(r"fake TPS listening on (\S+):(\d+)")


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
