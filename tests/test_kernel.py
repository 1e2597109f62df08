"""The kernel's contract: each system call's success, timeout and kill paths."""

import gc
import logging
import resource
import socket
import time
import tracemalloc

import pytest

from tpsharness.errors import (Deadlock, FdBusy, NoSuchTask, NotWaitable, TaskError,
                               TaskKilled)
from tpsharness.kernel import Scheduler, run
from tpsharness.syscalls import (GetTid, KillTask, NewTask, ReadWait, Sleep, WaitTask,
                                 WriteWait)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def full_pair(pair):
    """A socket pair whose first socket cannot take another byte (nobody reads)."""
    a, _ = pair
    a.setblocking(False)
    try:
        while True:
            a.send(b"x" * 65536)
    except BlockingIOError:
        pass
    return pair


# -- scheduling -------------------------------------------------------------------

def test_generator_and_async_tasks_interleave_like_the_seeds_laundry_and_cook():
    log = []

    def laundry():
        for i in range(3):
            log.append(f"laundry {i}")
            yield

    async def cook():
        for i in range(3):
            log.append(f"cook {i}")
            await Sleep(0)

    sched = Scheduler()
    sched.new(laundry())
    sched.new(cook())
    sched.run()
    assert log == ["laundry 0", "cook 0", "laundry 1", "cook 1", "laundry 2", "cook 2"]


def test_run_returns_when_no_task_is_left():
    sched = Scheduler()

    async def quick():
        return 1

    sched.new(quick())
    sched.run()
    assert sched.tasks() == []


def test_gettid_returns_the_tid_that_new_returned():
    seen = {}

    def gen_task():
        seen["gen"] = yield GetTid()

    async def async_task():
        seen["async"] = await GetTid()

    sched = Scheduler()
    gen_tid = sched.new(gen_task())
    async_tid = sched.new(async_task())
    sched.run()
    assert seen == {"gen": gen_tid, "async": async_tid}


def test_newtask_starts_a_child_with_the_tid_it_returns():
    async def child():
        return await GetTid()

    async def parent():
        tid = await NewTask(child())
        return tid, await WaitTask(tid)

    tid, childs_own_tid = run(parent(), timeout=5)
    assert tid == childs_own_tid


def test_new_rejects_a_function_that_was_not_called():
    async def task():
        pass

    with pytest.raises(TypeError, match="forget to call"):
        Scheduler().new(task)


def test_yielding_something_that_is_not_a_system_call_raises_typeerror_in_the_task():
    def confused():
        yield 42

    with pytest.raises(TypeError, match="not a system call"):
        run(confused(), timeout=5)


def test_an_exception_in_one_task_does_not_stop_the_others(caplog):
    done = []

    async def crasher():
        raise ValueError("boom")

    async def worker():
        for _ in range(3):
            await Sleep(0)
        done.append(True)

    sched = Scheduler()
    sched.new(crasher())
    sched.new(worker())
    with caplog.at_level(logging.ERROR, logger="tpsharness.kernel"):
        sched.run()
    assert done == [True]
    assert "nobody collected" in caplog.text and "boom" in caplog.text


def test_a_crashing_daemon_is_logged_at_once(caplog):
    async def crasher():
        raise ValueError("daemon boom")

    async def main():
        await NewTask(crasher(), daemon=True)
        await Sleep(0)
        await Sleep(0)
        return "main done"

    with caplog.at_level(logging.ERROR, logger="tpsharness.kernel"):
        assert run(main(), timeout=5) == "main done"
    assert "daemon task" in caplog.text and "daemon boom" in caplog.text


# -- Sleep --------------------------------------------------------------------------

def test_sleepers_wake_in_deadline_order():
    order = []

    async def sleeper(name, seconds):
        await Sleep(seconds)
        order.append(name)

    sched = Scheduler()
    sched.new(sleeper("late", 0.15))
    sched.new(sleeper("early", 0.05))
    sched.new(sleeper("middle", 0.1))
    sched.run()
    assert order == ["early", "middle", "late"]


def test_sleep_lasts_at_least_its_duration():
    async def main():
        start = time.monotonic()
        await Sleep(0.05)
        return time.monotonic() - start

    assert run(main(), timeout=5) >= 0.05


def test_sleepers_tied_on_one_deadline_all_wake_in_order_even_when_one_is_killed(monkeypatch):
    """Equal deadlines share one key in the kernel's timer table: a frozen clock forces it."""
    clock = [100.0]
    monkeypatch.setattr("tpsharness.kernel.monotonic", lambda: clock[0])
    woke = []

    async def sleeper(name):
        await Sleep(1.0)
        woke.append(name)

    async def main():
        tids = [await NewTask(sleeper(name)) for name in "abcd"]
        await Sleep(0)                      # all four now sleep until 101.0
        await KillTask(tids[1])
        clock[0] = 200.0
        for tid in (tids[0], tids[2], tids[3]):
            await WaitTask(tid, timeout=5)

    sched = Scheduler()
    sched.new(main())
    sched.run()
    assert woke == ["a", "c", "d"]
    assert sched._timer_owners == {}
    assert len(sched._timers) == sched._cancelled_timers   # what is left is withdrawn


def test_withdrawn_deadlines_do_not_pile_up(pair):
    """Every recv with a timeout sets a deadline that data then withdraws."""
    a, b = pair

    async def main():
        for _ in range(5000):
            b.send(b"x")
            await ReadWait(a, timeout=30)
            a.recv(1)
        return len(sched._timers)

    sched = Scheduler()
    tid = sched.new(main())
    sched.run()
    assert sched._outcomes[tid][0] < 3000      # compacted, not 5000 dead deadlines


def test_a_task_sleeping_forever_does_not_stop_the_others(pair):
    a, b = pair
    b.send(b"x")
    done = []

    async def forever():
        await Sleep(float("inf"))

    async def main():
        tid = await NewTask(forever())
        await Sleep(0)              # the sleeper's infinite deadline heads the timers now
        await ReadWait(a)           # the kernel polls with it: no OverflowError
        await KillTask(tid)
        done.append(True)

    sched = Scheduler()             # no run() deadline to cap the poll
    sched.new(main())
    sched.run()
    assert done == [True]


@pytest.mark.parametrize("call, error, match", [
    (Sleep("1"), TypeError, r"Sleep\('1'\): seconds must be a number >= 0"),
    (Sleep(float("nan")), ValueError, r"Sleep\(nan\): seconds must be a number >= 0"),
    (ReadWait("not a file"), TypeError, "needs a file descriptor or an object with fileno"),
    (WriteWait(None), TypeError, "needs a file descriptor or an object with fileno"),
])
def test_a_system_call_with_a_bad_argument_raises_a_clear_error_in_the_caller(call, error, match):
    async def main():
        await call

    with pytest.raises(error, match=match):
        run(main(), timeout=5)


def test_waiting_on_a_file_that_cannot_be_polled_names_the_fd(tmp_path):
    with open(tmp_path / "plain", "w") as plain:
        async def main():
            await ReadWait(plain)

        with pytest.raises(PermissionError, match=f"cannot wait on fd {plain.fileno()}"):
            run(main(), timeout=5)


def test_negative_sleep_raises_valueerror_in_the_task():
    async def main():
        await Sleep(-1)

    with pytest.raises(ValueError, match="must be a number >= 0"):
        run(main(), timeout=5)


def test_an_idle_scheduler_uses_no_cpu():
    async def main():
        await Sleep(0.3)

    before = resource.getrusage(resource.RUSAGE_SELF)
    run(main(), timeout=5)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.1, f"{cpu:.3f} s of CPU while sleeping 0.3 s: busy waiting"


# -- WaitTask -----------------------------------------------------------------------

def test_waittask_returns_the_result():
    async def child():
        await Sleep(0)
        return "result"

    async def parent():
        return await WaitTask(await NewTask(child()))

    assert run(parent(), timeout=5) == "result"


def test_waittask_raises_the_exception_the_task_ended_with():
    async def child():
        raise KeyError("the child's error")

    async def parent():
        return await WaitTask(await NewTask(child()))

    with pytest.raises(KeyError, match="the child's error"):
        run(parent(), timeout=5)


def test_waittask_returns_at_once_when_the_task_already_ended():
    async def child():
        return 7

    async def parent():
        tid = await NewTask(child())
        for _ in range(3):
            await Sleep(0)
        return await WaitTask(tid)

    assert run(parent(), timeout=5) == 7


def test_waittask_does_not_wake_the_waiter_before_the_task_ends():
    log = []

    async def child():
        for i in range(3):
            log.append(f"child {i}")
            await Sleep(0)

    async def parent():
        await WaitTask(await NewTask(child()))
        log.append("parent resumed")

    run(parent(), timeout=5)
    assert log == ["child 0", "child 1", "child 2", "parent resumed"]


def test_waittask_times_out_and_leaves_the_task_running():
    async def child():
        await Sleep(0.2)
        return "finished later"

    async def parent():
        tid = await NewTask(child())
        with pytest.raises(TimeoutError, match="timed out"):
            await WaitTask(tid, timeout=0.01)
        return await WaitTask(tid)

    assert run(parent(), timeout=5) == "finished later"


def test_waittask_on_a_daemon_says_it_cannot_be_waited_for():
    async def daemon():
        await Sleep(10)

    async def parent():
        tid = await NewTask(daemon(), daemon=True)
        await WaitTask(tid)

    with pytest.raises(NotWaitable, match="daemon"):
        run(parent(), timeout=5)


def test_an_outcome_is_collected_once():
    async def child():
        return 1

    async def parent():
        tid = await NewTask(child())
        await WaitTask(tid)
        await WaitTask(tid)

    with pytest.raises(NoSuchTask, match="already collected"):
        run(parent(), timeout=5)


def test_a_task_cannot_wait_for_itself():
    async def main():
        await WaitTask(await GetTid())

    with pytest.raises(TaskError, match="itself"):
        run(main(), timeout=5)


def test_every_waiter_gets_the_outcome():
    results = []

    async def child():
        await Sleep(0.01)
        return "shared"

    async def waiter(tid):
        results.append(await WaitTask(tid))

    async def main():
        tid = await NewTask(child())
        waiters = [await NewTask(waiter(tid)) for _ in range(3)]
        for w in waiters:
            await WaitTask(w)

    run(main(), timeout=5)
    assert results == ["shared"] * 3


# -- KillTask -----------------------------------------------------------------------

def test_killtask_runs_the_victims_finally_and_is_not_caught_by_except_exception():
    log = []

    async def victim():
        try:
            await Sleep(10)
        except Exception:
            log.append("caught by except Exception")
        finally:
            log.append("finally ran")

    async def main():
        tid = await NewTask(victim())
        await Sleep(0)
        killed = await KillTask(tid)
        log.append("kill returned")
        return killed

    assert run(main(), timeout=5) is True
    assert log == ["finally ran", "kill returned"]


def test_killtask_returns_false_for_an_ended_or_unknown_task():
    async def child():
        return 1

    async def main():
        tid = await NewTask(child())
        await WaitTask(tid)
        return await KillTask(tid), await KillTask(9999)

    assert run(main(), timeout=5) == (False, False)


def test_killtask_wakes_the_waiters_with_taskkilled():
    async def victim():
        await Sleep(10)

    async def waiter(tid):
        with pytest.raises(TaskKilled, match="was killed"):
            await WaitTask(tid)
        return "woken"

    async def main():
        tid = await NewTask(victim())
        waiter_tid = await NewTask(waiter(tid))
        await Sleep(0)
        await KillTask(tid)
        return await WaitTask(waiter_tid)

    assert run(main(), timeout=5) == "woken"


def test_waiting_for_a_task_killed_earlier_raises_taskkilled():
    async def victim():
        await Sleep(10)

    async def main():
        tid = await NewTask(victim())
        await KillTask(tid)
        await WaitTask(tid)

    with pytest.raises(TaskKilled):
        run(main(), timeout=5)


def test_a_killed_ready_task_never_runs_again():
    steps = []

    async def spinner():
        while True:
            steps.append(1)
            await Sleep(0)

    async def main():
        tid = await NewTask(spinner())
        await Sleep(0)          # spinner ran once and is back in the ready queue
        await KillTask(tid)
        count = len(steps)
        for _ in range(5):
            await Sleep(0)
        return count, len(steps)

    before, after = run(main(), timeout=5)
    assert before == after == 1


def test_killing_a_sleeper_withdraws_its_timer():
    async def sleeper():
        await Sleep(30)

    async def main():
        tid = await NewTask(sleeper())
        await Sleep(0)
        await KillTask(tid)

    start = time.monotonic()
    run(main(), timeout=5)
    assert time.monotonic() - start < 5     # the 30 s timer does not hold the scheduler


def test_killing_a_reader_withdraws_its_fd_wait(pair):
    a, _ = pair

    async def reader():
        await ReadWait(a)

    async def main():
        tid = await NewTask(reader())
        await Sleep(0)
        await KillTask(tid)
        # the fd is free again: another task may wait on it without FdBusy
        with pytest.raises(TimeoutError):
            await ReadWait(a, timeout=0.01)
        return "fd free"

    assert run(main(), timeout=5) == "fd free"


def test_killing_a_waiter_withdraws_it_from_the_waited_task():
    async def child():
        await Sleep(0.02)
        return "child done"

    async def waiter(tid):
        await WaitTask(tid)

    async def main():
        tid = await NewTask(child())
        waiter_tid = await NewTask(waiter(tid))
        await Sleep(0)
        await KillTask(waiter_tid)
        return await WaitTask(tid)

    assert run(main(), timeout=5) == "child done"


def test_a_task_can_kill_itself_and_its_cleanup_runs():
    log = []

    async def suicidal():
        try:
            await KillTask(await GetTid())
            log.append("after kill")
        finally:
            log.append("cleanup")

    async def main():
        tid = await NewTask(suicidal())
        with pytest.raises(TaskKilled):
            await WaitTask(tid)

    run(main(), timeout=5)
    assert log == ["cleanup"]


def test_a_victim_that_waits_during_cleanup_is_cut_short_and_logged(caplog):
    async def stubborn():
        try:
            await Sleep(10)
        finally:
            await Sleep(10)

    async def main():
        tid = await NewTask(stubborn())
        await Sleep(0)
        return await KillTask(tid)

    with caplog.at_level(logging.WARNING, logger="tpsharness.kernel"):
        assert run(main(), timeout=5) is True
    assert "tried to wait while being killed" in caplog.text


# -- ReadWait / WriteWait -------------------------------------------------------------

def test_readwait_wakes_when_data_arrives(pair):
    a, b = pair

    async def reader():
        await ReadWait(a)
        return a.recv(10)

    async def writer():
        await Sleep(0.01)
        b.send(b"ping")

    async def main():
        tid = await NewTask(reader())
        await NewTask(writer())
        return await WaitTask(tid)

    assert run(main(), timeout=5) == b"ping"


def test_readwait_times_out(pair):
    a, _ = pair

    async def main():
        await ReadWait(a, timeout=0.01)

    with pytest.raises(TimeoutError, match="ReadWait"):
        run(main(), timeout=5)


def test_writewait_waits_for_writability_not_readability(pair):
    a, _ = pair        # nothing to read on a, but it is writable: the seed registered for reading

    async def main():
        await WriteWait(a, timeout=1)
        return "writable"

    assert run(main(), timeout=5) == "writable"


def test_writewait_times_out_when_the_peer_does_not_read(full_pair):
    a, _ = full_pair

    async def main():
        await WriteWait(a, timeout=0.01)

    with pytest.raises(TimeoutError, match="WriteWait"):
        run(main(), timeout=5)


def test_killing_a_writer_withdraws_its_fd_wait(full_pair):
    a, _ = full_pair

    async def writer():
        await WriteWait(a)

    async def main():
        tid = await NewTask(writer())
        await Sleep(0)
        assert await KillTask(tid) is True
        with pytest.raises(TimeoutError):         # no FdBusy: the first wait is gone
            await WriteWait(a, timeout=0.01)
        return "fd free"

    assert run(main(), timeout=5) == "fd free"


def test_two_readers_on_one_fd_is_a_clear_error(pair):
    a, _ = pair

    async def reader():
        await ReadWait(a, timeout=1)

    async def main():
        await NewTask(reader(), daemon=True)
        await Sleep(0)
        await ReadWait(a)

    with pytest.raises(FdBusy, match="already waits to read"):
        run(main(), timeout=5)


def test_one_reader_and_one_writer_may_share_an_fd(pair):
    a, b = pair

    async def reader():
        await ReadWait(a)
        return a.recv(10)

    async def main():
        tid = await NewTask(reader())
        await Sleep(0)
        await WriteWait(a)
        b.send(b"both")
        return await WaitTask(tid)

    assert run(main(), timeout=5) == b"both"


# -- run() ----------------------------------------------------------------------------

def test_run_kills_tasks_left_alive_when_main_ends_and_runs_their_cleanup():
    cleaned = []

    async def forever():
        try:
            await Sleep(60)
        finally:
            cleaned.append(True)

    async def main():
        await NewTask(forever())
        await NewTask(forever(), daemon=True)
        await Sleep(0)              # both start and reach their Sleep(60)
        return "main result"

    assert run(main(), timeout=5) == "main result"
    assert cleaned == [True, True]


def test_run_past_its_timeout_kills_everything_and_raises_timeouterror():
    cleaned = []

    async def main():
        try:
            await Sleep(60)
        finally:
            cleaned.append(True)

    start = time.monotonic()
    with pytest.raises(TimeoutError, match="gave up after 0.05 s"):
        run(main(), timeout=0.05)
    assert time.monotonic() - start < 2
    assert cleaned == [True]


def test_a_deadlock_is_reported_not_hung():
    async def main():
        await WaitTask(await NewTask(waits_for_parent(await GetTid())))

    async def waits_for_parent(tid):
        await WaitTask(tid)

    with pytest.raises(Deadlock, match="TASK_WAIT"):
        run(main())


def test_task_repr_says_where_it_waits():
    async def sleeper():
        await Sleep(10)

    sched = Scheduler()
    sleeper_tid = sched.new(sleeper())
    seen = []

    async def inspect():
        await Sleep(0)
        seen.append(repr(sched.tasks()[0]))
        await KillTask(sleeper_tid)

    sched.new(inspect())
    sched.run()
    assert seen and f"Task(tid={sleeper_tid}, state=SLEEP) at test_kernel.py:" in seen[0]


# -- memory and scale ------------------------------------------------------------------

def _traced(work):
    gc.collect()
    tracemalloc.start()
    try:
        work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()


def test_ten_thousand_ended_tasks_leave_no_memory_behind():
    async def child(i):
        await Sleep(0)
        return i

    async def main():
        for _ in range(10):
            tids = [await NewTask(child(i)) for i in range(1000)]
            for tid in tids:
                await WaitTask(tid)
        for _ in range(10_000):
            await NewTask(child(0), daemon=True)
        await Sleep(0)
        await Sleep(0)

    sched = Scheduler()

    def work():
        sched.new(main())
        sched.run()

    held = _traced(work)
    assert held < 2_000_000, f"{held} bytes held after 20,000 tasks ended"
    sched.close()


def test_ten_thousand_uncollected_outcomes_stay_small():
    async def child(i):
        return None

    sched = Scheduler()

    def work():
        for i in range(10_000):
            sched.new(child(i))
        sched.run()

    held = _traced(work)
    assert held < 2_000_000, f"{held} bytes for 10,000 uncollected outcomes"
    sched.close()


# -- edges -------------------------------------------------------------------------------

def test_keyboardinterrupt_in_a_task_stops_run_and_is_raised():
    async def main():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(main(), timeout=5)


class _OutsideInterruption(BaseException):
    """Stands for what a test runner's timeout raises into the running code (pytest-timeout
    raises pytest.fail's exception, a BaseException, wherever the main thread is)."""


def test_any_baseexception_raised_in_a_task_stops_run_instead_of_ending_the_task_quietly():
    async def busy_server():          # the interruption lands in whichever task runs
        await Sleep(0)
        raise _OutsideInterruption("the test runner's timeout")

    async def main():
        await NewTask(busy_server(), daemon=True)
        await Sleep(30)

    with pytest.raises(_OutsideInterruption):
        run(main(), timeout=2)


def test_a_negative_wait_timeout_is_a_valueerror_and_leaves_no_wait_behind(pair):
    a, _ = pair

    async def main():
        with pytest.raises(ValueError, match="timeout must be a number >= 0"):
            await ReadWait(a, timeout=-1)
        with pytest.raises(TimeoutError):           # not FdBusy: the bad wait was withdrawn
            await ReadWait(a, timeout=0.01)
        return "clean"

    assert run(main(), timeout=5) == "clean"


def test_waittask_raises_the_exception_of_a_task_that_already_ended():
    async def child():
        raise LookupError("ended before anyone waited")

    async def parent():
        tid = await NewTask(child())
        await Sleep(0)
        await Sleep(0)
        await WaitTask(tid)

    with pytest.raises(LookupError, match="ended before anyone waited"):
        run(parent(), timeout=5)


def test_two_writers_on_one_fd_is_a_clear_error(full_pair):
    a, _ = full_pair

    async def writer():
        await WriteWait(a, timeout=1)

    async def main():
        await NewTask(writer(), daemon=True)
        await Sleep(0)
        await WriteWait(a)

    with pytest.raises(FdBusy, match="already waits to write"):
        run(main(), timeout=5)


def test_a_main_task_that_kills_itself_makes_run_raise_taskkilled():
    async def main():
        await KillTask(await GetTid())

    with pytest.raises(TaskKilled, match="main task"):
        run(main(), timeout=5)


def test_killing_ready_tasks_in_the_middle_of_a_batch_is_safe():
    """A regression: the run phase counted a batch of ready tasks, then a kill took
    tasks of that batch out of the ready queue and the count ran past its end."""
    victims = []

    async def spinner():
        while True:
            await Sleep(0)

    async def killer():
        return [await KillTask(tid) for tid in victims]

    async def main():
        tid = await NewTask(killer())                   # ready: killer
        victims.append(await NewTask(spinner()))        # ready: killer, a
        victims.append(await NewTask(spinner()))        # ready: killer, a, b
        return await WaitTask(tid)                      # one batch: killer kills a and b

    assert run(main(), timeout=5) == [True, True]
