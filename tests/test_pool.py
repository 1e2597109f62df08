"""EndpointPool and ReadGroup: one task reads many connections."""

import socket

import pytest

from fake_tps import FakeTPS
from tpsharness.device import Device
from tpsharness.client import Client
from tpsharness.errors import FdBusy
from tpsharness.kernel import ReadGroup, run
from tpsharness.pool import EndpointPool
from tpsharness.syscalls import KillTask, NewTask, ReadWait, Sleep, WaitReadable, WaitTask


def test_one_pool_task_delivers_each_devices_data():
    server = FakeTPS()
    received = {}

    async def main():
        await NewTask(server.serve())
        pool = EndpointPool(on_message=lambda device, message: received.setdefault(
            device.uuid, []).append(message.body))
        devices = [Device(server.address, f"pooled-{i}", timeout=5) for i in range(50)]
        for device in devices:
            await device.connect()
            await device.register()
            pool.add(device)
        reader = await NewTask(pool.run())
        client = Client(server.address, "pool-client", timeout=5)
        await client.connect()
        for i in range(50):
            await client.send(f"pooled-{i}", b"for %d" % i)
        for _ in range(500):
            if sum(len(v) for v in received.values()) == 50:
                break
            await Sleep(0.01)
        client.close()
        await KillTask(reader)
        return len(pool)

    try:
        assert run(main(), timeout=20) == 50
    finally:
        server.close()
    assert received == {f"pooled-{i}": [b"for %d" % i] for i in range(50)}


def test_a_pooled_device_the_tps_closes_is_reported_and_dropped():
    server = FakeTPS()
    closed = []

    async def main():
        await NewTask(server.serve())
        pool = EndpointPool(on_close=lambda device, reason: closed.append((device.uuid, reason)))
        old = Device(server.address, "pooled-dup", timeout=5)
        await old.connect()
        await old.register()
        pool.add(old)
        reader = await NewTask(pool.run())
        new = Device(server.address, "pooled-dup", timeout=5)
        await new.connect()
        await new.register()            # replaces the pooled one: the TPS closes it
        await WaitTask(reader)          # the pool ends when it is empty
        new.close()
        return len(pool)

    try:
        assert run(main(), timeout=20) == 0
    finally:
        server.close()
    assert closed and closed[0][0] == "pooled-dup" and "closed the connection" in closed[0][1]


def test_waitreadable_returns_the_ready_fds_and_times_out():
    a1, b1 = socket.socketpair()
    a2, b2 = socket.socketpair()
    group = ReadGroup()

    async def main():
        group.add(a1.fileno())
        group.add(a2.fileno())
        with pytest.raises(TimeoutError):
            await WaitReadable(group, timeout=0.01)
        b2.send(b"x")
        first = await WaitReadable(group, timeout=1)
        with pytest.raises(FdBusy, match="ReadGroup"):
            await ReadWait(a1)                  # the group reads a1 now
        group.discard(a1.fileno())
        with pytest.raises(TimeoutError):       # a1 is free again for a task of its own
            await ReadWait(a1, timeout=0.01)
        return first

    try:
        assert run(main(), timeout=5) == {a2.fileno()}
    finally:
        for s in (a1, b1, a2, b2):
            s.close()


def test_killing_the_group_waiter_withdraws_it():
    a, b = socket.socketpair()
    group = ReadGroup()

    async def waiter():
        await WaitReadable(group)

    async def main():
        group.add(a.fileno())
        tid = await NewTask(waiter())
        await Sleep(0)
        await KillTask(tid)
        b.send(b"x")
        return await WaitReadable(group, timeout=1)     # not FdBusy: the first wait is gone

    try:
        assert run(main(), timeout=5) == {a.fileno()}
    finally:
        a.close()
        b.close()


def test_adding_to_a_group_outside_a_task_says_so():
    from tpsharness.errors import TaskError
    with pytest.raises(TaskError, match="call it from a task"):
        ReadGroup().add(0)


def test_pooling_an_endpoint_that_is_not_connected_says_so() -> None:
    device = Device(("127.0.0.1", 6604))        # never connected: no socket to read
    with pytest.raises(ValueError, match="not connected"):
        EndpointPool().add(device)
