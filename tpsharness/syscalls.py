"""The system calls a task makes to the kernel, and their immediate forms.

A task asks the kernel for a service by yielding one of these objects (generator
tasks: ``tid = yield GetTid()``) or awaiting it (``async def`` tasks:
``tid = await GetTid()``). Each call only states what it asks for; the kernel side
of each lives in ``kernel.Scheduler`` under the same name. Wherever a call takes a
``timeout``, it may be seconds from now or a ``deadline.Deadline`` (an instant).
"""

from collections.abc import Coroutine, Generator
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

from .deadline import Timeout
from .errors import TaskError
from .run_context import Running, current_scheduler

__all__ = ["TaskCoro", "Timeout", "SystemCall", "GetTid", "NewTask", "KillTask", "WaitTask",
           "ReadWait", "WriteWait", "WaitReadable", "Sleep", "spawn", "kill", "forget_fd"]

Result = TypeVar("Result")


class HasFileno(Protocol):
    """What ReadWait and WriteWait accept besides an fd: an object with ``fileno()``."""

    def fileno(self) -> int: ...


class Readable(Protocol):
    """What WaitReadable waits on: a ``kernel.ReadGroup``."""

    def take(self) -> set[int]: ...


class SystemCall(Generic[Result]):
    """Base of all system calls: awaiting one yields it to the kernel, which sends
    back the call's ``Result``."""

    __slots__: tuple[str, ...] = ()

    def __await__(self) -> Generator["SystemCall[Result]", Any, Result]:
        return (yield self)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


TaskCoro: TypeAlias = (Coroutine[SystemCall[Any] | None, Any, Any]
                      | Generator[SystemCall[Any] | None, Any, Any])
"""What the kernel runs as a task: a coroutine (``async def``) or a generator that
awaits or yields system calls (a bare ``yield`` only lets the others run)."""


class GetTid(SystemCall[int]):
    """Return the calling task's id."""

    __slots__ = ()


class NewTask(SystemCall[int]):
    """Start ``coro`` as a new task and return its tid.

    A daemon task (a server's per-connection handler) keeps no outcome when it
    ends and cannot be waited for; its uncaught exception is logged at once.
    """

    __slots__ = ("coro", "daemon")

    def __init__(self, coro: TaskCoro, daemon: bool = False) -> None:
        self.coro = coro
        self.daemon = daemon


class KillTask(SystemCall[bool]):
    """Kill task ``tid``; return True if a live task was killed, else False.

    The victim's ``finally`` blocks run before this call returns; its waits are
    withdrawn and its waiters wake with TaskKilled.
    """

    __slots__ = ("tid",)

    def __init__(self, tid: int) -> None:
        self.tid = tid


class WaitTask(SystemCall[Any]):      # a task may return anything
    """Wait for task ``tid`` to end; return its result or raise its exception.

    Raises TaskKilled if it was killed, TimeoutError after ``timeout`` seconds,
    NotWaitable for a daemon, NoSuchTask for an unknown or already collected tid.
    """

    __slots__ = ("tid", "timeout")

    def __init__(self, tid: int, timeout: Timeout = None) -> None:
        self.tid = tid
        self.timeout = timeout


class ReadWait(SystemCall[None]):
    """Wait until ``fileobj`` (an object with fileno() or an int fd) is readable.

    Raises TimeoutError after ``timeout`` seconds. Code that closes a file
    descriptor it waited on must tell the kernel first (``forget_fd`` below);
    ``net.Socket.close`` does.
    """

    __slots__ = ("fileobj", "timeout")

    def __init__(self, fileobj: "int | HasFileno", timeout: Timeout = None) -> None:
        self.fileobj = fileobj
        self.timeout = timeout


class WriteWait(SystemCall[None]):
    """Wait until ``fileobj`` is writable; TimeoutError after ``timeout`` seconds."""

    __slots__ = ("fileobj", "timeout")

    def __init__(self, fileobj: "int | HasFileno", timeout: Timeout = None) -> None:
        self.fileobj = fileobj
        self.timeout = timeout


class WaitReadable(SystemCall[set[int]]):
    """Wait until some fd of ``group`` (a kernel.ReadGroup) is readable; return the set
    of readable fds. TimeoutError after ``timeout`` seconds. One task per group."""

    __slots__ = ("group", "timeout")

    def __init__(self, group: Readable, timeout: Timeout = None) -> None:
        self.group = group
        self.timeout = timeout


class Sleep(SystemCall[None]):
    """Sleep ``seconds``; ``Sleep(0)`` only lets the other ready tasks run first."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


# -- immediate operations -------------------------------------------------------
# Synchronous code that runs inside a task (a callback, a ``finally``, a close())
# cannot await a system call; these do the same service at once, on the scheduler
# running in this thread. They are the only way code outside the kernel reaches it.

def _running(operation: str) -> Running:
    scheduler = current_scheduler()
    if scheduler is None:
        raise TaskError(f"{operation}() needs a running scheduler: call it from a task")
    return scheduler


def spawn(coro: TaskCoro, daemon: bool = False) -> int:
    """Start ``coro`` as a new task now, as ``NewTask`` does; its tid."""
    return _running("spawn").new(coro, daemon)


def kill(tid: int) -> bool:
    """Kill task ``tid`` now, as ``KillTask`` does; True if a live task was killed.
    Killing the calling task takes effect at its next system call."""
    return _running("kill").kill(tid)


def forget_fd(fd: int) -> None:
    """Tell the running scheduler, if any, that ``fd`` is about to be closed.

    The kernel keeps file descriptors registered between waits (it saves two
    epoll_ctl calls per wait); a closed and reused fd would otherwise look armed.
    Its waiters get EBADF.
    """
    scheduler = current_scheduler()
    if scheduler is not None:
        scheduler.forget_fd(fd)
