"""Kernel benchmarks, each a ratio against asyncio run side by side in this process.

    python tests/bench/bench_kernel.py [--quick]

Machines here are noisy, so each workload alternates ours and asyncio's for a few
rounds and reports the best of each; the ratio is what to read, not the rates.
"""

import argparse
import asyncio
import gc
import resource
import socket
import time

from _common import best_of, rss_bytes  # noqa: E402  (puts the repo on sys.path)

from tpsharness import net  # noqa: E402
from tpsharness.examples.echo import echo_server  # noqa: E402
from tpsharness.kernel import Scheduler, run  # noqa: E402
from tpsharness.syscalls import KillTask, NewTask, Sleep, WaitTask  # noqa: E402


# -- task switching ----------------------------------------------------------------

def switching(tasks, switches):
    async def ours_task():
        for _ in range(switches):
            await Sleep(0)

    async def asyncio_task():
        for _ in range(switches):
            await asyncio.sleep(0)

    def ours():
        sched = Scheduler()
        for _ in range(tasks):
            sched.new(ours_task())
        sched.run()
        sched.close()

    async def asyncio_main():
        await asyncio.gather(*(asyncio_task() for _ in range(tasks)))

    def theirs():
        asyncio.run(asyncio_main())

    t_ours, t_asyncio = best_of(3, ours, theirs)
    total = tasks * switches
    print(f"switching  {tasks} tasks x {switches} Sleep(0): ours {total / t_ours:,.0f}/s, "
          f"asyncio {total / t_asyncio:,.0f}/s, ratio {t_asyncio / t_ours:.2f}x (goal >= 3x)")
    return t_asyncio / t_ours


# -- echo ----------------------------------------------------------------------------

MESSAGE = b"x" * 64


def echo(clients, round_trips):
    async def ours_client(port):
        sock = await net.connect(("127.0.0.1", port), timeout=10)
        try:
            for _ in range(round_trips):
                await sock.sendall(MESSAGE)
                received = 0
                while received < len(MESSAGE):
                    received += len(await sock.recv())
        finally:
            sock.close()

    async def ours_main():
        listener = net.listen()
        server = await NewTask(echo_server(listener))
        port = listener.sock.getsockname()[1]
        for tid in [await NewTask(ours_client(port)) for _ in range(clients)]:
            await WaitTask(tid)
        await KillTask(server)
        listener.close()

    async def asyncio_handler(reader, writer):
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.close()

    async def asyncio_client(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(round_trips):
            writer.write(MESSAGE)
            await writer.drain()
            await reader.readexactly(len(MESSAGE))
        writer.close()

    async def asyncio_main():
        server = await asyncio.start_server(asyncio_handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        await asyncio.gather(*(asyncio_client(port) for _ in range(clients)))
        server.close()

    def floor():
        """The same round trips as bare system calls: no scheduler, no event loop."""
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(clients * round_trips):
            client.send(MESSAGE)
            server.send(server.recv(65536))
            client.recv(65536)
        for sock in (client, server, listener):
            sock.close()

    t_ours, t_asyncio, t_floor = best_of(5, lambda: run(ours_main(), timeout=120),
                                         lambda: asyncio.run(asyncio_main()), floor)
    total = clients * round_trips
    print(f"echo       {clients} clients x {round_trips} round trips of 64 B: ours "
          f"{total / t_ours:,.0f}/s, asyncio streams {total / t_asyncio:,.0f}/s, "
          f"ratio {t_asyncio / t_ours:.2f}x (goal >= 1.5x); the same round trips as bare "
          f"send/recv on one connection, no scheduler: {total / t_floor:,.0f}/s (ours reaches "
          f"{t_floor / t_ours:.0%} of that)")
    return t_asyncio / t_ours


# -- scale -----------------------------------------------------------------------------

def scale(tasks):
    woke = []

    async def sleeper():
        await Sleep(1.0)
        woke.append(1)

    gc.collect()
    rss_before = rss_bytes()
    sched = Scheduler()
    start = time.perf_counter()
    for _ in range(tasks):
        sched.new(sleeper())
    sched.run()
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sched.close()
    per_task = max(0, peak - rss_before) / tasks
    print(f"scale      {tasks:,} tasks sleeping 1 s: all {len(woke):,} woke {elapsed:.2f} s after "
          f"the first was created (goal <= 1.5 s); ~{per_task:,.0f} bytes of RSS per task")
    return elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        switching(1000, 100)
        echo(20, 200)
        scale(10_000)
    else:
        switching(10_000, 100)
        echo(100, 1000)
        scale(100_000)


if __name__ == "__main__":
    main()
