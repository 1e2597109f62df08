"""The cooperative kernel: tasks, a scheduler, timers and I/O readiness.

A "coroutine operating system" in the manner of David Beazley's: a Task wraps a
generator or coroutine; the Scheduler runs ready tasks one step at a time; a task
asks for services by yielding (or awaiting) a system call from ``syscalls``.

The loop has three phases: poll I/O (blocking only when nothing is ready, until
the next deadline), fire expired deadlines, run the tasks that are ready. Every
kind of wait records a state name and an ``undo`` function on the task (plus what
it waits on and its deadline), so that kill and timeout withdraw any wait the same
way. The undo functions are the scheduler's own methods, called with the task, and
a deadline is a bare float in a heap (its task found through a dict): a wait
allocates no object the garbage collector has to track, which matters with
100,000 tasks.
"""

from __future__ import annotations

import errno
import heapq
import logging
import os
import select
import selectors
import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from itertools import count
from time import monotonic
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

from .deadline import Deadline, Timeout
from .run_context import current_scheduler, switch_to
from .errors import (Deadlock, FdBusy, InvalidArgument, KillSignal, NoSuchTask, NotWaitable,
                     TaskError, TaskKilled)
from .syscalls import (GetTid, KillTask, NewTask, ReadWait, Sleep, SystemCall, TaskCoro,
                       WaitReadable, WaitTask, WriteWait)

T = TypeVar("T")   # what a main task returns, and so run()

__all__ = ["Scheduler", "Task", "ReadGroup", "run", "TaskCoro", "Poller", "EpollPoller",
           "SelectorPoller"]

log = logging.getLogger("tpsharness.kernel")


class Poller(Protocol):
    """A readiness source: what the Scheduler needs of epoll (or of selectors)."""

    READ: int
    WRITE: int
    HANGUP: int

    def register(self, fd: int, mask: int, /) -> None: ...

    def modify(self, fd: int, mask: int, /) -> None: ...

    def unregister(self, fd: int) -> None: ...

    def poll(self, timeout: float | None = None, /) -> list[tuple[int, int]]: ...

    def close(self) -> None: ...


class EpollPoller:
    """Readiness straight from epoll: selectors' Python wrapper costs ~1 us per event."""

    READ = getattr(select, "EPOLLIN", 1)
    WRITE = getattr(select, "EPOLLOUT", 4)
    HANGUP = getattr(select, "EPOLLERR", 0) | getattr(select, "EPOLLHUP", 0)

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self.register = self._epoll.register
        self.modify = self._epoll.modify
        self.poll = self._epoll.poll
        self.close = self._epoll.close

    def unregister(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)
        except OSError:         # already closed: epoll dropped it by itself
            pass


class SelectorPoller:
    """The same interface on selectors.DefaultSelector, where there is no epoll."""

    READ = 1
    WRITE = 4
    HANGUP = 0          # selectors reports an error as both readable and writable

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self.close = self._selector.close

    def register(self, fd: int, mask: int) -> None:
        self._selector.register(fd, self._to_selector(mask))

    def modify(self, fd: int, mask: int) -> None:
        self._selector.modify(fd, self._to_selector(mask))

    def unregister(self, fd: int) -> None:
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError, OSError):
            pass

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        return [(key.fd, (self.READ if events & selectors.EVENT_READ else 0) |
                 (self.WRITE if events & selectors.EVENT_WRITE else 0))
                for key, events in self._selector.select(timeout)]

    def _to_selector(self, mask: int) -> int:
        return ((selectors.EVENT_READ if mask & self.READ else 0) |
                (selectors.EVENT_WRITE if mask & self.WRITE else 0))


DefaultPoller: type[Poller] = EpollPoller if hasattr(select, "epoll") else SelectorPoller

# Task states: where a task is, for repr and for the kernel's own checks.
READY = "READY"
SLEEP = "SLEEP"
READ_WAIT = "READ_WAIT"
WRITE_WAIT = "WRITE_WAIT"
TASK_WAIT = "TASK_WAIT"
ENDED = "ENDED"

LONGEST_POLL = 3600.0          # seconds; a longer wait just polls again

Outcome = tuple[Any, BaseException | None, bool]     # (value, exception, killed)

_MISSING: Any = object()
_RETURNED_NONE: Outcome = (None, None, False)
_TASK_TYPES = frozenset({types.CoroutineType, types.GeneratorType})
def _where(coro: object) -> str | None:
    """'file.py:41' of the innermost frame of a suspended task that is ours."""
    where = None
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        if not frame.f_code.co_filename.endswith("syscalls.py"):
            where = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return where


class Task:
    """A coroutine the scheduler runs, with its id, state and pending resume value."""

    __slots__ = ("tid", "coro", "daemon", "state", "send_value", "throw_exc",
                 "undo", "waiting_on", "deadline", "timed_call", "waiters", "killed")

    def __init__(self, tid: int, coro: TaskCoro, daemon: bool) -> None:
        self.tid = tid
        self.coro: TaskCoro | None = coro       # None once it ended
        self.daemon = daemon
        self.state = READY
        self.send_value: Any = None     # what the next step sends in: any call's result
        self.throw_exc: BaseException | None = None     # or what it throws in instead
        self.undo: Callable[[Task], None] | None = None     # withdraws the current wait
        # The _Watch, Task or ReadGroup of the current wait; its undo function knows
        # which (Any: the kernel dispatches on the wait's state, not on isinstance).
        self.waiting_on: Any = None
        self.deadline: float | None = None      # when the wait times out (a key of the timers)
        self.timed_call: SystemCall[Any] | None = None     # the call that set that deadline
        self.waiters: list[Task] | None = None  # tasks in WaitTask on this one
        self.killed = False

    def __repr__(self) -> str:
        kind = "daemon " if self.daemon else ""
        where = _where(self.coro) if self.coro is not None else None
        at = f" at {where}" if where else ""
        return f"Task(tid={self.tid}, {kind}state={self.state}){at}"


class ReadGroup:
    """File descriptors one task reads together (a server's connections, a pool of
    devices), so that thousands of idle connections need no task each.

    Its fds stay registered; ``await WaitReadable(group)`` returns those ready to read.
    ``add`` and ``discard`` are called from a task of the scheduler that polls them.
    """

    __slots__ = ("ready", "waiter")

    def __init__(self) -> None:
        self.ready: set[int] = set()        # fds found readable and not yet handed out
        self.waiter: Task | None = None     # the task in WaitReadable, if any

    def add(self, fd: int) -> None:
        """Read ``fd`` with this group from now on; FdBusy if a task already reads it."""
        scheduler = current_scheduler()
        if scheduler is None:
            raise TaskError("ReadGroup.add needs a running scheduler: call it from a task")
        scheduler.group_add(self, fd)

    def discard(self, fd: int) -> None:
        """Stop reading ``fd`` with this group (it stays open; nothing if not in it)."""
        scheduler = current_scheduler()
        if scheduler is not None:
            scheduler.group_discard(self, fd)
        self.ready.discard(fd)

    def take(self) -> set[int]:
        """The fds found readable since the last take (WaitReadable's result)."""
        ready, self.ready = self.ready, set()
        return ready

    def __repr__(self) -> str:
        return f"<ReadGroup {len(self.ready)} ready>"


class _Watch:
    """A registered file descriptor: the events asked for and who waits for them."""

    __slots__ = ("mask", "reader", "writer")

    def __init__(self, mask: int) -> None:
        self.mask = mask
        # A Task or a ReadGroup (Any: the loop tells them apart by __class__, which
        # costs less than isinstance on the hottest path and which mypy cannot follow).
        self.reader: Any = None
        self.writer: Task | None = None


class Scheduler:
    """Runs tasks until none is left; one per thread. ``poller``: the readiness
    source's class (epoll where there is one)."""

    def __init__(self, poller: Callable[[], Poller] | None = None) -> None:
        self._tasks: dict[int, Task] = {}             # tid -> live Task
        self._outcomes: dict[int, Outcome] = {}       # tid -> outcome, uncollected
        self._logged: set[int] = set()    # tids whose uncollected exception was logged
        self._ready: deque[Task] = deque()            # tasks to run, in order
        self._timers: list[float] = []                # heap of deadlines
        # deadline -> its Task, or a list of tied Tasks (Any: told apart by __class__)
        self._timer_owners: dict[float, Any] = {}
        self._cancelled_timers = 0        # deadlines in the heap that no task owns
        self._poller = (poller or DefaultPoller)()
        self._read = self._poller.READ
        self._write = self._poller.WRITE
        # An error or hang-up wakes both sides: the next recv or send reports it.
        self._read_events = self._poller.READ | self._poller.HANGUP
        self._write_events = self._poller.WRITE | self._poller.HANGUP
        self._watches: dict[int, _Watch] = {}         # fd -> _Watch
        self._next_tid = count(1).__next__
        self._current: Task | None = None             # the task running now
        # Bind the undo methods once: a fresh bound method per wait would be garbage.
        # (mypy forbids assigning to a method; here the instance caches its own.)
        self._undo_sleep = self._undo_sleep                 # type: ignore[method-assign]
        self._undo_read_wait = self._undo_read_wait         # type: ignore[method-assign]
        self._undo_write_wait = self._undo_write_wait       # type: ignore[method-assign]
        self._undo_task_wait = self._undo_task_wait         # type: ignore[method-assign]
        self._undo_group_wait = self._undo_group_wait       # type: ignore[method-assign]
        self._handlers: dict[type, Callable[[Task, Any], bool]] = {
            GetTid: self._sys_get_tid,
            NewTask: self._sys_new_task,
            KillTask: self._sys_kill_task,
            WaitTask: self._sys_wait_task,
            ReadWait: self._sys_read_wait,
            WriteWait: self._sys_write_wait,
            Sleep: self._sys_sleep,
            WaitReadable: self._sys_wait_readable,
            type(None): self._sys_yield,      # a bare `yield`, as in the seed
        }

    # -- public API -------------------------------------------------------------

    def new(self, coro: TaskCoro, daemon: bool = False) -> int:
        """Start ``coro`` (a coroutine or generator) as a task; return its tid."""
        if coro.__class__ not in _TASK_TYPES and not (hasattr(coro, "send") and
                                                      hasattr(coro, "throw")):
            raise TypeError(f"a task needs a coroutine or generator object, got {coro!r}"
                            " (did you forget to call the function?)")
        tid = self._next_tid()
        self._tasks[tid] = task = Task(tid, coro, daemon)
        self._ready.append(task)
        return tid

    def run(self) -> None:
        """Run until no task is left, then return."""
        try:
            self._loop()
        finally:
            self._log_uncollected()

    def kill(self, tid: int) -> bool:
        """Kill task ``tid`` from synchronous code (a ``finally``, a callback), as KillTask.

        True if a live task was killed. Killing the running task takes effect at its
        next system call.
        """
        victim = self._tasks.get(tid)
        if victim is None:
            return False
        if victim is self._current:
            victim.killed = True
            victim.throw_exc = KillSignal()
        else:
            self._kill(victim)
        return True

    def tasks(self) -> list[Task]:
        """The live tasks, for diagnostics."""
        return list(self._tasks.values())

    def forget_fd(self, fd: int) -> None:
        """Stop watching ``fd`` (about to be closed); its waiters get EBADF."""
        watch = self._watches.pop(fd, None)
        if watch is None:
            return
        self._poller.unregister(fd)
        if watch.reader.__class__ is ReadGroup:
            watch.reader.ready.discard(fd)
            watch.reader = None
        for task in (watch.reader, watch.writer):
            if task is not None:
                self._wake(task, exc=OSError(errno.EBADF, f"fd {fd} was closed while {task!r} waited on it"))

    def group_add(self, group: ReadGroup, fd: int) -> None:
        """Watch ``fd`` for ``group`` (what ReadGroup.add does on the running scheduler):
        its readiness goes to the group's ready set; FdBusy if a task reads it."""
        watch = self._watch(fd, self._read)
        if watch.reader is not None and watch.reader is not group:
            raise FdBusy(f"fd {fd}: {watch.reader!r} already reads it")
        watch.reader = group

    def group_discard(self, group: ReadGroup, fd: int) -> None:
        """Stop reading ``fd`` for ``group`` (ReadGroup.discard); the poller drops it at
        its next readiness with no reader, or when it is closed (``forget_fd``)."""
        watch = self._watches.get(fd)
        if watch is not None and watch.reader is group:
            watch.reader = None

    def close(self) -> None:
        """Release the poller. Tasks still alive are killed first."""
        self.kill_all()
        self._poller.close()

    def kill_all(self) -> None:
        """Kill every live task, newest first (handlers before their servers)."""
        self._ready.clear()
        previous = switch_to(self)      # victims' cleanup may close sockets (forget_fd)
        try:
            for task in reversed(list(self._tasks.values())):
                if task.tid in self._tasks:
                    self._kill(task)
        finally:
            switch_to(previous)

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- the loop ---------------------------------------------------------------

    def _loop(self, main: Task | None = None, deadline: float | None = None) -> bool:
        """Run tasks; return True if ``deadline`` passed, False when done.

        Done means no task is left or, when ``main`` is given, that it ended.
        """
        previous = switch_to(self)
        try:
            return self._run_phases(main, deadline)
        finally:
            switch_to(previous)
            self._current = None

    def _run_phases(self, main: Task | None, deadline: float | None) -> bool:
        ready = self._ready
        popleft = ready.popleft
        append = ready.append
        timers = self._timers
        timer_owners = self._timer_owners
        heappop = heapq.heappop
        poll = self._poller.poll
        watches = self._watches
        handlers = self._handlers
        tasks = self._tasks
        wake = self._wake
        read, write = self._read, self._write
        read_events, write_events = self._read_events, self._write_events
        timeout: float | None
        call: Any       # what a task yielded: any object, dispatched on its class below

        while tasks:
            if main is not None and main.state is ENDED:
                return False

            # Phase 1: poll I/O. Block only when nothing is ready, until the next deadline.
            if ready:
                timeout = 0
            else:
                timeout = None
                if timers:      # at most an hour: epoll cannot wait for Sleep(inf)
                    timeout = min(max(0.0, timers[0] - monotonic()), LONGEST_POLL)
                if deadline is not None:
                    remaining = max(0.0, deadline - monotonic())
                    timeout = remaining if timeout is None else min(timeout, remaining)
                if timeout is None and not watches:
                    raise Deadlock("no task can ever wake: " +
                                   ", ".join(repr(t) for t in tasks.values()))
            if watches or timeout:
                for fd, events in poll(timeout):
                    watch = watches.get(fd)
                    if watch is None:
                        continue
                    idle = 0
                    if events & read_events:
                        task = watch.reader
                        if task.__class__ is ReadGroup:
                            task.ready.add(fd)
                            if task.waiter is not None:
                                wake(task.waiter, task.take())
                        elif task is not None:      # inlined _wake: the hottest path
                            watch.reader = task.undo = task.waiting_on = None
                            if task.deadline is not None:
                                self._cancel_task_timer(task)
                            task.send_value = None
                            task.state = READY
                            append(task)
                        else:
                            idle = read
                    if events & write_events:
                        if watch.writer is not None:
                            wake(watch.writer)
                        else:
                            idle |= write
                    if idle & watch.mask:
                        self._drop_interest(fd, watch, idle & watch.mask)

            # Phase 2: fire expired deadlines.
            if timers or deadline is not None:
                now = monotonic()
                if deadline is not None and now >= deadline:
                    return True
                while timers and timers[0] <= now:
                    when = heappop(timers)
                    task = timer_owners.pop(when, None)
                    if task is None:
                        self._cancelled_timers -= 1
                        continue
                    if task.__class__ is list:      # tasks tied on one deadline: first in first
                        tied, task = task, task.pop(0)
                        if tied:
                            timer_owners[when] = tied
                    task.deadline = None
                    call, task.timed_call = task.timed_call, None
                    if task.state is SLEEP:
                        task.undo = None
                        task.send_value = None
                        task.state = READY
                        append(task)
                    else:
                        wake(task, exc=TimeoutError(_timed_out(call)))

            # Phase 3: run the tasks that are ready now; those they wake run next round.
            for _ in range(len(ready)):
                try:
                    task = popleft()
                except IndexError:      # a kill took tasks of this batch out of the queue
                    break
                self._current = task
                coro: TaskCoro = task.coro      # type: ignore[assignment]  # a ready task has one
                while True:
                    try:
                        exc = task.throw_exc
                        if exc is None:
                            call = coro.send(task.send_value)
                        else:
                            task.throw_exc = None
                            call = coro.throw(exc)
                    except StopIteration as stop:
                        self._end(task, stop.value, None)
                        break
                    except KillSignal:
                        task.killed = True
                        self._end(task, None, None)
                        break
                    except Exception as error:
                        self._end(task, None, error)
                        break
                    except BaseException as error:  # KeyboardInterrupt, SystemExit, a test
                        self._end(task, None, error)    # runner's timeout: not the task's to keep
                        raise
                    cls = call.__class__
                    if cls is Sleep and call.seconds == 0:      # the hot path: yield the CPU
                        task.send_value = None
                        append(task)
                        break
                    handler = handlers.get(cls)
                    if handler is None:
                        task.throw_exc = TypeError(
                            f"{task!r} yielded {call!r}, which is not a system call")
                        continue
                    try:
                        if not handler(task, call):
                            break
                    except Exception as error:       # the call failed: raise it in the caller
                        task.throw_exc = error
            self._current = None
        return False

    # -- waking, ending, killing ------------------------------------------------

    def _wake(self, task: Task, value: Any = None, exc: BaseException | None = None) -> None:
        undo = task.undo
        if undo is not None:
            task.undo = None
            undo(task)
        task.send_value = value
        task.throw_exc = exc
        task.state = READY
        self._ready.append(task)

    def _end(self, task: Task, value: Any, exc: BaseException | None) -> None:
        del self._tasks[task.tid]
        task.state = ENDED
        task.coro = None
        task.send_value = None
        task.undo = None
        waiters, task.waiters = task.waiters, None
        if waiters:
            for waiter in waiters:
                if task.killed:
                    self._wake(waiter, exc=TaskKilled(f"task {task.tid} was killed"))
                else:
                    self._wake(waiter, value, exc)
        elif not task.daemon:
            if value is None and exc is None and not task.killed:
                self._outcomes[task.tid] = _RETURNED_NONE   # the usual end: share one tuple
            else:
                self._outcomes[task.tid] = (value, exc, task.killed)
        if task.daemon and exc is not None:
            log.error("daemon task %d crashed", task.tid, exc_info=exc)

    def _kill(self, victim: Task) -> None:
        """End ``victim`` now: withdraw its wait, run its cleanup, wake its waiters.

        Cleanup runs synchronously; a victim that tries to wait again while being
        killed has its cleanup cut short (and it is logged).
        """
        victim.killed = True
        undo = victim.undo
        if undo is not None:
            victim.undo = None
            undo(victim)
        elif victim.state is READY:
            try:
                self._ready.remove(victim)
            except ValueError:
                pass
        coro: TaskCoro = victim.coro        # type: ignore[assignment]  # a live task has one
        previous, self._current = self._current, victim
        try:
            coro.throw(KillSignal())
        except (KillSignal, StopIteration):
            pass
        except BaseException:
            log.exception("%r raised while being killed", victim)
        else:
            log.warning("%r tried to wait while being killed; its cleanup was cut short", victim)
            try:
                coro.close()
            except BaseException:
                log.exception("%r would not close", victim)
        finally:
            self._current = previous
        self._end(victim, None, None)

    def _log_uncollected(self) -> None:
        for tid, (_, exc, _) in self._outcomes.items():
            if exc is not None and tid not in self._logged:
                self._logged.add(tid)
                log.error("task %d ended with an exception nobody collected", tid, exc_info=exc)

    # -- timers and fd watches ---------------------------------------------------

    def _set_deadline(self, task: Task, deadline: float, call: SystemCall[Any]) -> None:
        """Time ``task``'s current wait out at the instant ``deadline`` (monotonic)."""
        owner = self._timer_owners.setdefault(deadline, task)
        if owner is not task:           # another task has this very deadline
            if owner.__class__ is list:
                owner.append(task)
            else:
                self._timer_owners[deadline] = [owner, task]
        heapq.heappush(self._timers, deadline)
        task.deadline = deadline
        task.timed_call = call

    def _cancel_task_timer(self, task: Task) -> None:
        """Withdraw ``task``'s deadline; its float stays in the heap until popped."""
        deadline = task.deadline
        if deadline is None:
            return
        task.deadline = task.timed_call = None
        owners = self._timer_owners
        owner = owners.pop(deadline)
        if owner is not task:           # a list of tied tasks: keep the others
            owner.remove(task)
            if owner:
                owners[deadline] = owner
        self._cancelled_timers += 1
        # Lazy deletion keeps cancel O(1); rebuild when most of the heap is dead.
        if self._cancelled_timers > 1024 and self._cancelled_timers * 2 > len(self._timers):
            live: list[float] = []
            for deadline, owner in owners.items():
                live.extend([deadline] * len(owner) if owner.__class__ is list else (deadline,))
            live.sort()                 # a sorted list is a heap
            self._timers[:] = live
            self._cancelled_timers = 0

    def _watch(self, fd: int, event: int) -> _Watch:
        watch = self._watches.get(fd)
        if watch is None:
            try:
                self._poller.register(fd, event)
            except OSError as error:    # EBADF, or EPERM for a regular file
                raise OSError(error.errno, f"cannot wait on fd {fd}: {error.strerror}") from None
            watch = self._watches[fd] = _Watch(event)
        elif not watch.mask & event:
            self._poller.modify(fd, watch.mask | event)
            watch.mask |= event
        return watch

    def _drop_interest(self, fd: int, watch: _Watch, events: int) -> None:
        watch.mask &= ~events
        if watch.mask:
            self._poller.modify(fd, watch.mask)
        else:
            del self._watches[fd]
            self._poller.unregister(fd)

    def _park(self, task: Task, state: str, undo: Callable[[Task], None],
              waiting_on: _Watch | Task | ReadGroup, call: SystemCall[Any],
              timeout: Any) -> bool:
        """Suspend ``task`` in ``state``; ``undo(task)`` withdraws the wait.

        ``timeout`` is a Timeout told apart by its class (Any: mypy cannot narrow on
        ``__class__``, and isinstance would cost more on this path)."""
        task.state = state
        task.undo = undo
        task.waiting_on = waiting_on
        if timeout is not None:
            cls = timeout.__class__
            if cls is Deadline:         # an absolute deadline passed down: used as it is
                self._set_deadline(task, timeout.when, call)
            elif cls in (int, float) and timeout >= 0:
                self._set_deadline(task, monotonic() + timeout, call)
            else:
                task.undo = None
                undo(task)
                raise InvalidArgument(f"{call!r}: timeout must be a number >= 0 or a Deadline")
        return False

    def _undo_sleep(self, task: Task) -> None:
        self._cancel_task_timer(task)

    def _undo_read_wait(self, task: Task) -> None:
        task.waiting_on.reader = None
        task.waiting_on = None
        self._cancel_task_timer(task)

    def _undo_write_wait(self, task: Task) -> None:
        task.waiting_on.writer = None
        task.waiting_on = None
        self._cancel_task_timer(task)

    def _undo_group_wait(self, task: Task) -> None:
        task.waiting_on.waiter = None
        task.waiting_on = None
        self._cancel_task_timer(task)

    def _undo_task_wait(self, task: Task) -> None:
        target, task.waiting_on = task.waiting_on, None
        if target.waiters:
            target.waiters.remove(task)
        self._cancel_task_timer(task)

    # -- system calls: each returns True to resume the caller at once ------------

    def _sys_get_tid(self, task: Task, call: GetTid) -> bool:
        task.send_value = task.tid
        return True

    def _sys_new_task(self, task: Task, call: NewTask) -> bool:
        task.send_value = self.new(call.coro, call.daemon)
        return True

    def _sys_kill_task(self, task: Task, call: KillTask) -> bool:
        task.send_value = self.kill(call.tid)
        return True

    def _sys_wait_task(self, task: Task, call: WaitTask) -> bool:
        target = self._tasks.get(call.tid)
        if target is None:
            outcome = self._outcomes.pop(call.tid, _MISSING)
            if outcome is _MISSING:
                raise NoSuchTask(f"no task {call.tid} to wait for: it never existed, was a "
                                 "daemon, or its outcome was already collected")
            value, exc, killed = outcome
            if killed:
                raise TaskKilled(f"task {call.tid} was killed")
            if exc is not None:
                raise exc
            task.send_value = value
            return True
        if target is task:
            raise TaskError(f"task {task.tid} cannot wait for itself")
        if target.daemon:
            raise NotWaitable(f"task {target.tid} is a daemon: its outcome is not kept, "
                              "so it cannot be waited for")
        if target.waiters is None:
            target.waiters = []
        target.waiters.append(task)
        return self._park(task, TASK_WAIT, self._undo_task_wait, target, call, call.timeout)

    def _sys_read_wait(self, task: Task, call: ReadWait) -> bool:
        fd = call.fileobj if call.fileobj.__class__ is int else _fileno(call)
        watch = self._watches.get(fd)
        if watch is None or not watch.mask & self._read:
            watch = self._watch(fd, self._read)
        elif watch.reader is not None:
            raise FdBusy(f"fd {fd}: {watch.reader!r} already waits to read it")
        watch.reader = task
        if call.timeout is not None:
            return self._park(task, READ_WAIT, self._undo_read_wait, watch, call, call.timeout)
        task.state = READ_WAIT            # _park without a timer, inlined: the hot path
        task.undo = self._undo_read_wait
        task.waiting_on = watch
        return False

    def _sys_write_wait(self, task: Task, call: WriteWait) -> bool:
        fd = call.fileobj if call.fileobj.__class__ is int else _fileno(call)
        watch = self._watch(fd, self._write)
        if watch.writer is not None:
            raise FdBusy(f"fd {fd}: {watch.writer!r} already waits to write it")
        watch.writer = task
        return self._park(task, WRITE_WAIT, self._undo_write_wait, watch, call, call.timeout)

    def _sys_wait_readable(self, task: Task, call: WaitReadable) -> bool:
        group = cast(ReadGroup, call.group)         # the only Readable there is
        if group.waiter is not None:
            raise FdBusy(f"{group.waiter!r} already waits on this ReadGroup")
        if group.ready:
            task.send_value = group.take()
            return True
        group.waiter = task
        return self._park(task, READ_WAIT, self._undo_group_wait, group, call, call.timeout)

    def _sys_yield(self, task: Task, call: None) -> bool:
        task.send_value = None
        self._ready.append(task)
        return False

    def _sys_sleep(self, task: Task, call: Sleep) -> bool:
        seconds = call.seconds
        try:
            later = seconds > 0
        except TypeError:
            raise TypeError(f"Sleep({seconds!r}): seconds must be a number >= 0") from None
        if later:
            self._set_deadline(task, monotonic() + seconds, call)
            task.state = SLEEP
            task.undo = self._undo_sleep
        elif seconds == 0:
            task.send_value = None
            self._ready.append(task)
        else:
            raise InvalidArgument(f"Sleep({seconds!r}): seconds must be a number >= 0")
        return False


def _timed_out(call: Any) -> str:
    """Why a timed wait ended (``call``: the wait's system call, any with a timeout)."""
    timeout = call.timeout
    if timeout.__class__ is Deadline:
        return f"{call!r} timed out: its deadline of {timeout.seconds:g} s passed"
    return f"{call!r} timed out after {timeout} s"


def _fileno(call: ReadWait | WriteWait) -> int:
    """The fd a ReadWait or WriteWait names through an object's fileno()."""
    fileno = getattr(call.fileobj, "fileno", None)
    if fileno is None:
        raise TypeError(f"{call!r}: needs a file descriptor or an object with fileno()")
    return fileno()


def run(coro: Coroutine[Any, Any, T] | Generator[Any, Any, T], timeout: Timeout = None) -> T:
    """Run ``coro`` as the main task on a fresh Scheduler; return its result.

    Raises what the main task raised. Tasks still alive when it ends are killed
    (their cleanup runs). Past ``timeout`` (seconds, or a Deadline) every task is
    killed and TimeoutError is raised.
    """
    scheduler = Scheduler()
    try:
        tid = scheduler.new(coro)
        main = scheduler._tasks[tid]
        deadline = timeout if timeout is None or isinstance(timeout, Deadline) else Deadline(timeout)
        timed_out = scheduler._loop(main, None if deadline is None else deadline.when)
        if timed_out and deadline is not None:      # it can time out only with a deadline
            alive = ", ".join(repr(t) for t in scheduler.tasks())
            scheduler.kill_all()
            raise TimeoutError(f"run() gave up after {deadline.seconds:g} s; killed: {alive}")
        scheduler.kill_all()
        value, exc, killed = scheduler._outcomes.pop(tid)
        if killed:
            raise TaskKilled(f"the main task {tid} was killed")
        if exc is not None:
            raise exc
        return value
    finally:
        scheduler.close()
        scheduler._log_uncollected()
