"""A server's last output: the tail of its stdout and stderr, kept in a bounded ring.

A thread drains the pipe as fast as the server writes (a server that prints 100 MB
at start costs a little CPU, no memory and no disk) and keeps only the last
``size`` bytes: what crash triage reads, and what an error at start quotes.
"""

from __future__ import annotations

import os
import select
import threading

RING_SIZE = 64 * 1024           # bytes of output kept
READ_SIZE = 64 * 1024
POLL = 0.1                      # seconds between looks at the stop flag


class OutputRing:
    """The last ``size`` bytes written to the pipe whose read end is ``fd`` (owned)."""

    def __init__(self, fd: int, size: int = RING_SIZE) -> None:
        self.size = size
        self.total = 0              # bytes read in all
        self._fd = fd
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._ended = threading.Event()     # EOF: every writer closed the pipe
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="server-output", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([self._fd], [], [], POLL)
                if not readable:
                    continue
                data = os.read(self._fd, READ_SIZE)
                if not data:
                    break
                with self._lock:
                    self.total += len(data)
                    self._buffer += data
                    if len(self._buffer) > 2 * self.size:      # trimmed now and then, not per read
                        del self._buffer[:-self.size]
        except OSError:
            pass
        finally:
            self._ended.set()

    def data(self) -> bytes:
        """The last ``size`` bytes read so far."""
        with self._lock:
            return bytes(self._buffer[-self.size:])

    def since(self, mark: int) -> bytes:
        """What was read after ``total`` was ``mark`` (at most ``size`` bytes of it)."""
        with self._lock:
            return bytes(self._buffer[-min(self.total - mark, self.size):]) if self.total > mark else b""

    def text(self) -> str:
        """``data()`` as text (undecodable bytes replaced)."""
        return self.data().decode("utf-8", "replace")

    def wait_ended(self, timeout: float) -> bool:
        """Wait until every writer closed the pipe (at most ``timeout`` s); whether it did."""
        return self._ended.wait(timeout)

    def close(self) -> None:
        """Stop reading and release the pipe; ``data()`` keeps what was read."""
        self._stop.set()
        self._thread.join(POLL * 5)
        if not self._thread.is_alive():
            os.close(self._fd)
