"""Every deadline holds: one absolute Deadline from the check down to the kernel."""

import math
import re
import socket
import time

import pytest

from tpsharness import check
from tpsharness.checker import check_async
from tpsharness.deadline import GRACE, MAX_TIMEOUT, Deadline, validate_timeout
from tpsharness.harness import Harness
from tpsharness.kernel import run
from tpsharness.syscalls import ReadWait


def test_a_deadline_counts_down_from_when_it_was_made():
    deadline = Deadline(10)
    assert 9 < deadline.remaining() <= 10 and not deadline.expired
    assert 0 <= deadline.elapsed < 1 and deadline.seconds == pytest.approx(10)
    assert deadline.sooner(1).when < deadline.when and deadline.sooner(100) is deadline
    assert Deadline.at(time.monotonic() - 1).expired and Deadline.at(time.monotonic() - 1).remaining() == 0.0


@pytest.mark.parametrize("seconds", [-1, math.nan])
def test_a_deadline_refuses_negative_or_nan_seconds(seconds):
    with pytest.raises(ValueError):
        Deadline(seconds)


@pytest.mark.parametrize("timeout", [math.inf, 1e9, MAX_TIMEOUT + 1, -1, 0, math.nan, "soon"])
def test_check_refuses_a_timeout_it_cannot_keep(timeout):
    with pytest.raises(ValueError, match="timeout"):
        check("127.0.0.1", 6604, timeout=timeout)


def test_the_cap_itself_is_accepted():
    assert validate_timeout(MAX_TIMEOUT) == MAX_TIMEOUT


def test_the_kernel_times_a_wait_out_at_the_deadline_passed_down():
    left, right = socket.socketpair()
    deadline = Deadline(0.05)

    async def main():
        try:
            await ReadWait(left.fileno(), deadline)
        except TimeoutError as error:
            return time.monotonic(), str(error)

    try:
        ended, message = run(main(), timeout=5)
    finally:
        left.close()
        right.close()
    assert deadline.when <= ended < deadline.when + GRACE
    assert "its deadline of 0.05 s passed" in message


def test_a_check_that_took_longer_than_its_timeout_is_not_ok(fake):
    # Each reply waits 5 ms, so no check can end within 1 ms (a warm fake could otherwise
    # answer a whole check in less, and the test would fail by luck).
    fake.configure(reply_delay=0.005)
    result = check(*fake.address, timeout=0.001)
    assert not result.ok, result.message
    # Which way 1 ms runs out depends on where the clock is: inside a wait (that wait
    # times out) or between waits (the stage that ended late fails). Both say so.
    assert re.search(r"the check's deadline of 1\.0 ms passed after| within \d", result.message), \
        result.message
    assert result.timings["total"] < 1000
    assert result.message.startswith(f"{result.stage}: ")


def test_check_async_keeps_to_the_deadline_it_is_given_not_its_timeout(fake):
    fake.configure(faults={"silent"})
    deadline = Deadline(0.3)
    result = run(check_async(*fake.address, timeout=5, deadline=deadline), timeout=10)
    assert not result.ok and result.stage == "register"
    assert time.monotonic() < deadline.when + GRACE


def test_a_harness_refuses_an_unbounded_timeout(fake):
    with pytest.raises(ValueError, match="finite"):
        Harness(fake.address, timeout=math.inf)


def test_one_grace_for_the_project():
    import tpsharness.checker as check_module
    import tpsharness.harness as harness_module
    assert GRACE == 0.5
    assert not hasattr(check_module, "GRACE") or check_module.GRACE is GRACE
    assert not hasattr(harness_module, "GRACE") or harness_module.GRACE is GRACE
