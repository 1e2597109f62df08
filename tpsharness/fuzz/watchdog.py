"""The watchdog: whatever a server command started dies with the fuzzer, even by SIGKILL.

``ServerProcess`` starts this file as a process of its own session (``python -I -S
watchdog.py TOKEN``: standard library only, nothing of tpsharness is imported) and
keeps the write end of its stdin. The fuzzer writes one line per server it starts,
the server's process group id. When stdin ends, because the fuzzer closed it or
because the fuzzer died, every process group it was told of is killed, and so is
every process whose environment carries ``TPSHARNESS_FUZZ_SERVER=TOKEN:...`` (a
server that double-forked and called setsid left its group but kept that variable).
The parent-death signal cannot do this: it reaches only the direct child.
"""

from __future__ import annotations

import os
import signal
import sys
import time

ENVIRONMENT = "TPSHARNESS_FUZZ_SERVER"     # the variable every server process inherits
GRACE = 0.5                 # seconds between SIGTERM and SIGKILL


def marked(prefix: bytes) -> list[int]:
    """Pids of this user's processes whose environment holds ``prefix`` (one
    ``NAME=VALUE`` entry's start), the caller's own excepted."""
    pids = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                entries = handle.read().split(b"\0")
        except OSError:         # gone, or another user's
            continue
        if any(entry.startswith(prefix) for entry in entries):
            pids.append(int(name))
    return pids


def kill_all(groups: set[int], prefix: bytes, sig: int) -> None:
    """Send ``sig`` to every process group of ``groups`` and every marked process."""
    for group in groups:
        try:
            os.killpg(group, sig)
        except OSError:
            pass
    for pid in marked(prefix):
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def main(token: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # only the end of stdin stops us
    prefix = f"{ENVIRONMENT}={token}:".encode()
    groups: set[int] = set()
    for line in sys.stdin.buffer:
        if line.strip().isdigit():
            groups.add(int(line))
    kill_all(groups, prefix, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while time.monotonic() < deadline and marked(prefix):
        time.sleep(0.02)
    kill_all(groups, prefix, signal.SIGKILL)


if __name__ == "__main__":
    main(sys.argv[1])
