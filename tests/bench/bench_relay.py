"""Relay throughput and memory: fake TPS + devices + clients in ONE process.

    python tests/bench/bench_relay.py [--pairs 100] [--relays 100] [--devices N] [--varied-sizes]

Throughput: each of ``pairs`` clients runs a closed loop (send a unique payload,
read the ack, wait until its device received the identical payload). Ours (kernel,
tolerant reader, FakeTPS, Device, Client) against the same workload written with
asyncio streams and h11, alternately, best of each; the ratio is the figure.
``--varied-sizes`` gives every payload a size between 16 and 1,015 bytes, so that
header blocks seldom repeat (the reader's cache of parsed blocks mostly misses).

Memory: ``devices`` devices connected and registered, both ends of every connection
in one process, each device waiting for data (ours: one EndpointPool task reads them
all, and 100 deliveries prove them live); RSS measured in a fresh subprocess for ours
and for asyncio+h11.
"""

import argparse
import gc
import json
import resource
import subprocess
import sys
import time

import h11

from _common import best_of, rss_bytes  # noqa: E402  (puts the repo on sys.path)

from fake_tps import FakeTPS  # noqa: E402
from tpsharness.client import Client  # noqa: E402
from tpsharness.device import Device  # noqa: E402
from tpsharness.kernel import run  # noqa: E402
from tpsharness.pool import EndpointPool  # noqa: E402
from tpsharness.syscalls import KillTask, NewTask, Sleep, WaitTask  # noqa: E402


def payload_for(index, n, varied):
    """The n-th payload of pair ``index``: unique; its size fixed or varied (16-1015 B)."""
    payload = b"payload %d %d " % (index, n)
    if not varied:
        return payload
    return payload.ljust(16 + (index * 7919 + n * 104729) % 1000, b".")


# -- ours ---------------------------------------------------------------------------------

async def ours_pair(address, index, relays, varied):
    device = Device(address, f"bench-cam-{index}", timeout=30)
    client = Client(address, f"bench-app-{index}", timeout=30)
    await device.connect()
    await device.register()
    await client.connect()
    try:
        for n in range(relays):
            payload = payload_for(index, n, varied)
            await client.send(device.uuid, payload)
            received = await device.receive()
            assert received.body == payload, (received.body, payload)
    finally:
        device.close()
        client.close()


async def ours_main(pairs, relays, varied):
    server = FakeTPS()
    serve = await NewTask(server.serve())
    tids = [await NewTask(ours_pair(server.address, i, relays, varied)) for i in range(pairs)]
    for tid in tids:
        await WaitTask(tid)
    assert server.stats.relays == pairs * relays
    server.request_stop()
    await WaitTask(serve)
    server.close()


# -- the baseline: asyncio streams and h11 -------------------------------------------------------

REGISTER_BODY = (b'{"TransProxy": {"Header": {"CSeq": "1", "MessageType": "MSG_TRANSPROXY_REGISTER_REQ", '
                 b'"TerminalType": "Camera", "Version": "1.0"}, "Body": {"AuthCode": "0000", '
                 b'"SerialNumber": "%s"}}}')


class AsyncioH11Server:
    """A fake TPS as one would write it with asyncio streams and h11 (strict acks)."""

    def __init__(self):
        self.table = {}
        self.relays = 0

    async def handle(self, reader, writer):
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    request, body = event, b""
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    self.respond(conn, writer, request, body)
                    conn.start_next_cycle()
                else:
                    return
        finally:
            writer.close()

    def respond(self, conn, writer, request, body):
        headers = dict(request.headers)
        if request.target == b"/TransProxy":
            serial = json.loads(body)["TransProxy"]["Body"]["SerialNumber"]
            self.table[serial] = writer
            reply = json.dumps({"TransProxy": {"Body": {"KeepAliveIntervel": "120", "UtcTime": str(int(time.time()))},
                                               "Header": {"ErrorNum": "200", "ErrorString": "Success OK",
                                                          "MessageType": "MSG_TRANSPROXY_REGISTER_RSP", "Version": "1.0"}}},
                               indent=3, sort_keys=True).encode()
            writer.write(conn.send(h11.Response(status_code=200, headers=[("Content-Length", str(len(reply)))])))
            writer.write(conn.send(h11.Data(data=reply)) + conn.send(h11.EndOfMessage()))
            return
        target = self.table.get(headers[b"destuuid"].decode())
        self.table[headers[b"srcuuid"].decode()] = writer
        status = 200 if target else 404
        writer.write(conn.send(h11.Response(status_code=status, headers=[("Content-Length", "0")]))
                     + conn.send(h11.EndOfMessage()))
        if target:
            relay = h11.Connection(h11.CLIENT)
            target.write(relay.send(h11.Request(method="POST", target="/PrivateData", headers=request.headers))
                         + relay.send(h11.Data(data=body)) + relay.send(h11.EndOfMessage()))
            self.relays += 1


async def h11_exchange(conn, reader, writer, request, body):
    """Send a request with h11 and read its response; the body."""
    writer.write(conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
    received = await h11_read_body(conn, reader)
    conn.start_next_cycle()
    return received


async def h11_read_body(conn, reader):
    """The body of the next message h11 reads (a response or a request)."""
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return body


async def asyncio_pair(port, index, relays, varied):
    import asyncio
    serial, src = f"bench-cam-{index}", f"bench-app-{index}"
    d_reader, d_writer = await asyncio.open_connection("127.0.0.1", port)
    body = REGISTER_BODY % serial.encode()
    await h11_exchange(h11.Connection(h11.CLIENT), d_reader, d_writer,
                       h11.Request(method="POST", target="/TransProxy",
                                   headers=[("Host", "tps"), ("Content-Length", str(len(body)))]), body)
    device_conn = h11.Connection(h11.SERVER)      # from now on the device reads relayed requests
    c_reader, c_writer = await asyncio.open_connection("127.0.0.1", port)
    client_conn = h11.Connection(h11.CLIENT)
    for n in range(relays):
        payload = payload_for(index, n, varied)
        await h11_exchange(client_conn, c_reader, c_writer, h11.Request(
            method="POST", target="/PrivateData",
            headers=[("Host", "tps"), ("AuthCode", "0000"), ("SrcUuid", src), ("DestUuid", serial),
                     ("Content-Length", str(len(payload)))]), payload)
        received = await h11_read_body(device_conn, d_reader)
        assert received == payload
        device_conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
        device_conn.send(h11.EndOfMessage())        # h11 needs a response to go on; not sent
        device_conn.start_next_cycle()
    d_writer.close()
    c_writer.close()


async def asyncio_main(pairs, relays, varied):
    import asyncio
    fake = AsyncioH11Server()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await asyncio.gather(*(asyncio_pair(port, i, relays, varied) for i in range(pairs)))
    assert fake.relays == pairs * relays
    server.close()


def throughput(pairs, relays, varied):
    import asyncio
    t_ours, t_asyncio = best_of(2, lambda: run(ours_main(pairs, relays, varied), timeout=300),
                                lambda: asyncio.run(asyncio_main(pairs, relays, varied)))
    total = pairs * relays
    sizes = ", payloads of 16-1015 B" if varied else ""
    print(f"relay      fake TPS + {pairs} devices + {pairs} clients, {total:,} relays{sizes}: ours "
          f"{total / t_ours:,.0f} relays/s, asyncio+h11 {total / t_asyncio:,.0f} relays/s, "
          f"ratio {t_asyncio / t_ours:.2f}x (goal >= 5x)")


# -- memory ----------------------------------------------------------------------------------

async def ours_hold(count):
    """Devices registered and held by one EndpointPool task; 100 deliveries prove them live."""
    server = FakeTPS()
    await NewTask(server.serve())
    delivered = []
    pool = EndpointPool(on_message=lambda device, message: delivered.append(message.body))
    for i in range(count):
        device = Device(server.address, f"held-{i}", timeout=60)
        await device.connect()
        await device.register()
        pool.add(device)
    reader = await NewTask(pool.run())
    client = Client(server.address, "held-client", timeout=60)
    await client.connect()
    for i in range(0, count, max(1, count // 100)):
        await client.send(f"held-{i}", b"live %d" % i)
    client.close()
    for _ in range(1000):
        if len(delivered) == len(range(0, count, max(1, count // 100))):
            break
        await Sleep(0.01)
    assert len(delivered) == len(range(0, count, max(1, count // 100))), len(delivered)
    await WaitTask(await NewTask(_settle()))
    gc.collect()
    result = len(server.registered()), rss_bytes()      # the client has left the table
    await KillTask(reader)
    return result


async def _settle():
    await Sleep(0.2)


async def asyncio_hold(count):
    import asyncio
    fake = AsyncioH11Server()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    held = []
    for i in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = REGISTER_BODY % f"held-{i}".encode()
        await h11_exchange(h11.Connection(h11.CLIENT), reader, writer,
                           h11.Request(method="POST", target="/TransProxy",
                                       headers=[("Host", "tps"), ("Content-Length", str(len(body)))]), body)
        held.append((reader, writer, h11.Connection(h11.SERVER)))
        held[-1] = held[-1] + (asyncio.ensure_future(reader.read(65536)),)
    await asyncio.sleep(0.2)
    gc.collect()
    return len(fake.table), rss_bytes()


def memory_child(kind, count):
    base = rss_bytes()
    if kind == "ours":
        registered, rss = run(ours_hold(count), timeout=600)
    else:
        import asyncio          # only here: the "ours" process does not load it
        registered, rss = asyncio.run(asyncio_hold(count))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"registered": registered, "rss": rss, "base": base, "peak": peak}))


def memory(count):
    results = {}
    for kind in ("ours", "asyncio"):
        out = subprocess.run([sys.executable, __file__, "--memory-child", kind, "--devices", str(count)],
                             capture_output=True, text=True, timeout=900)
        if out.returncode:
            print(f"memory     {kind}: failed: {out.stderr.strip()[-500:]}")
            continue
        results[kind] = json.loads(out.stdout)
    for kind, r in results.items():
        per = (r["rss"] - r["base"]) / r["registered"]
        print(f"memory     {kind:8} {r['registered']:,} registered devices, both ends in one process: "
              f"RSS {r['rss'] / 2**20:.1f} MB ({r['base'] / 2**20:.1f} MB before the first; "
              f"{per / 1024:.2f} KiB per device; x10,000 = {(r['base'] + per * 10_000) / 2**20:.1f} MB)"
              + (" (goal <= 40 MB)" if kind == "ours" else ""))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--relays", type=int, default=100, help="relays per pair")
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    default_devices = min(10_000, (soft - 64) // 2)
    parser.add_argument("--devices", type=int, default=default_devices,
                        help=f"devices for the memory run (default {default_devices}: 10,000 or as "
                             "many as the open-file limit allows, two fds each)")
    parser.add_argument("--varied-sizes", action="store_true",
                        help="payloads of 16-1015 bytes, so that header blocks seldom repeat")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", choices=["ours", "asyncio"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child, args.devices)
        return
    throughput(args.pairs, args.relays, args.varied_sizes)
    if not args.skip_memory:
        memory(args.devices)


if __name__ == "__main__":
    main()
