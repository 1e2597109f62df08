"""The watchdog: whatever a server command started dies with the fuzzer, even by SIGKILL.

``ServerProcess`` starts this file as a process of its own session (``python -I -S
watchdog.py TOKEN``: standard library only, nothing of tpsharness is imported) and
keeps the write end of its stdin. The fuzzer writes one line per server it starts:
its session id (the leader's pid, which is also its process group) and its port;
and ``forget S`` once it stopped and reaped that start (its pid may then be reused).
When stdin ends, because the fuzzer closed it or because the fuzzer died, each start
not forgotten is killed with everything that belongs to it. The parent-death signal
cannot do this: it reaches only the direct child.

What belongs to a start: every process of its session that carries the run's
``TPSHARNESS_FUZZ_SERVER=TOKEN:`` marker (``members``, filtered: a session id can be
reused by a process that is none of ours), and, while
its port still accepts connections once those are gone, every process of a session
of its own that inherited ``TPSHARNESS_FUZZ_SERVER=TOKEN:N.`` and listens on that
port (``daemons``: a server that daemonized, fork, setsid, fork). A server that
cleared its environment (``env -i``) carries no marker: a process of the fuzzer's
user, started after the start's leader, that listens on that port is the server the
command left behind all the same (no other process could have taken the port while
the server held it). A daemon that does not listen on the port (a database or a
redis the command started) is a shared service, not the server: it is left running.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time

ENVIRONMENT = "TPSHARNESS_FUZZ_SERVER"     # the variable every server process inherits
GRACE = 0.5                 # seconds between SIGTERM and SIGKILL
LISTEN = "0A"               # the state of a listening socket in /proc/net/tcp


def _processes() -> list[tuple[int, int]]:
    """(pid, session id) of every process that is not a zombie, the caller excepted."""
    found = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != b"Z":
            found.append((int(name), int(fields[3])))     # state, ppid, pgrp, session
    return found


def _marked(pid: int, prefix: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return any(entry.startswith(prefix) for entry in handle.read().split(b"\0"))
    except OSError:         # gone, or another user's
        return False


def _listening(ports: set[int]) -> set[str]:
    """The socket inodes listening on ``ports`` (IPv4 and IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                lines = handle.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) in ports:
                inodes.add(fields[9])
    return inodes


def started(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _left_behind(pid: int, since: int | None) -> bool:
    """``pid`` is the fuzzer's user's and started no earlier than ``since``."""
    if since is None:
        return False
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.getuid():
            return False
    except OSError:
        return False
    begun = started(pid)
    return begun is not None and begun >= since


def _holds(pid: int, inodes: set[str]) -> bool:
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    except OSError:
        pass
    return False


def marked(prefix: bytes) -> list[int]:
    """Pids of the processes that carry ``prefix`` in their environment."""
    return [pid for pid, _ in _processes() if _marked(pid, prefix)]


def members(sessions: set[int]) -> list[int]:
    """Pids of the processes of ``sessions``."""
    return [pid for pid, session in _processes() if session in sessions]


def daemons(ports: dict[int, int | None], prefix: bytes) -> list[int]:
    """Pids of the sessions of processes that listen on one of ``ports`` and carry
    ``prefix`` in their environment or (port -> since, see ``started``) were left
    behind by the start that got that port (slow where the machine has many sockets:
    used only when a port still accepts connections after its server's session is gone)."""
    escaped: set[int] = set()
    processes = _processes()
    for port, since in ports.items():
        inodes = _listening({port}) if accepts(port) else set()
        if inodes:
            escaped |= {session for pid, session in processes
                        if _holds(pid, inodes) and (_marked(pid, prefix) or _left_behind(pid, since))}
    return [pid for pid, session in processes if session in escaped]


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def main(token: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # only the end of stdin stops us
    prefix = f"{ENVIRONMENT}={token}:".encode()
    starts: dict[int, tuple[int, int | None]] = {}     # session -> (port, when its leader started)
    for line in sys.stdin.buffer:
        fields = line.split()
        if len(fields) == 2 and all(field.isdigit() for field in fields):
            starts[int(fields[0])] = (int(fields[1]), started(int(fields[0])))
        elif len(fields) == 2 and fields[0] == b"forget" and fields[1].isdigit():
            starts.pop(int(fields[1]), None)
    sessions, ports = set(starts), dict(starts.values())

    def ours() -> list[int]:
        return [pid for pid in members(sessions) if _marked(pid, prefix)]

    kill(ours(), signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while time.monotonic() < deadline and ours():
        time.sleep(0.02)
    kill(ours(), signal.SIGKILL)
    escaped = daemons(ports, prefix)
    kill(escaped, signal.SIGTERM)
    time.sleep(GRACE if escaped else 0)
    kill(daemons(ports, prefix), signal.SIGKILL)


if __name__ == "__main__":
    main(sys.argv[1])
