"""fake_tps under load, in one process on our kernel: many devices, many cycles."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from fake_tps import FakeTPS
from tpsharness import net
from tpsharness.kernel import Scheduler, run
from tpsharness.protocol import NEED_DATA, Reader, register_request
from tpsharness.syscalls import NewTask, Sleep, WaitTask


async def register_once(address: tuple[str, int], serial: str,
                        keep_open: list[net.Socket] | None = None) -> None:
    """Connect, register, check the reply; close unless ``keep_open`` collects the socket."""
    sock = await net.connect(address, timeout=10)
    try:
        await sock.sendall(register_request(serial), timeout=10)
        reader = Reader()
        while (message := reader.next()) is NEED_DATA:
            data = await sock.recv(65536, timeout=10)
            assert data, f"{serial}: closed before the register reply"
            reader.feed(data)
        assert message.ok, message
    finally:
        if keep_open is None:
            sock.close()
        else:
            keep_open.append(sock)


@pytest.mark.slow
def test_a_thousand_devices_register_at_once() -> None:
    server = FakeTPS()
    held: list[net.Socket] = []

    async def main() -> tuple[int, int]:
        await NewTask(server.serve())
        devices = [await NewTask(register_once(server.address, f"cam-{i}", held)) for i in range(1000)]
        for tid in devices:
            await WaitTask(tid)
        return len(server.registered()), server.stats.open_connections

    try:
        assert run(main(), timeout=60) == (1000, 1000)
        assert server.stats.registrations == 1000
    finally:
        for sock in held:
            sock.close()
        server.close()


@pytest.mark.slow
@pytest.mark.timeout(120)      # ~18 s on an idle 2-core machine, ~45 s with both cores busy
def test_ten_thousand_connect_register_close_cycles_leave_memory_and_tasks_flat() -> None:
    server = FakeTPS()
    scheduler = Scheduler()
    samples: dict[str, tuple[int, int]] = {}

    async def cycles(count: int) -> None:
        for i in range(count):
            await register_once(server.address, f"cam-{i % 50}")

    async def settle() -> None:
        # let the server's handlers see the closes and end
        for _ in range(50):
            if server.stats.open_connections == 0:
                return
            await Sleep(0.01)

    async def main() -> None:
        await NewTask(server.serve())
        await WaitTask(await NewTask(cycles(1000)))       # warm up: caches, free lists
        await settle()
        gc.collect()
        samples["before"] = (tracemalloc.get_traced_memory()[0], len(scheduler.tasks()))
        await WaitTask(await NewTask(cycles(9000)))
        await settle()
        gc.collect()
        samples["after"] = (tracemalloc.get_traced_memory()[0], len(scheduler.tasks()))
        server.request_stop()

    tracemalloc.start()
    try:
        scheduler.new(main())
        scheduler.run()
    finally:
        tracemalloc.stop()
        scheduler.close()
        server.close()
    (memory_before, tasks_before), (memory_after, tasks_after) = samples["before"], samples["after"]
    assert server.stats.connections == 10_000
    assert tasks_after == tasks_before
    assert memory_after - memory_before < 200_000, f"grew {memory_after - memory_before} bytes"
