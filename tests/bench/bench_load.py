"""Load mode: generator CPU, memory, workers and accuracy, against ``python -m fake_tps``.

    python tests/bench/bench_load.py [--quick] [--rounds 2] [--skip-memory] [--skip-workers]
    python tests/bench/bench_load.py --tps HOST:PORT --skip-memory --skip-workers --skip-accuracy

cpu:       one worker drives 1,000 devices, 100 clients, window 8, 64 B for 10 s; the
           generator's CPU-seconds per delivered relay, ours (the kernel, EndpointPool)
           against a lean asyncio Protocol generator doing the same work with the same
           accounting (the same reader, payloads, sequence streams and histograms),
           alternately, each in a fresh process; the fake TPS in a process of its own
           (started afresh for each run), or the TPS at --tps HOST:PORT (a field server,
           which is not the bottleneck the Python fake is). Each round's ratio is printed
           (the two runs of a round are side by side), then the best of each.
memory:    10,000 held devices (or what the open-file limit allows) in one worker: RSS.
workers:   delivered relays/s with --workers 2 against 1.
accuracy:  the fake's --reply-delay 0.05: relay p50 should read 50-55 ms; then an open
           loop above capacity, whose per-second p99 should grow (coordinated omission
           is not hidden).
"""

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
from collections import deque
from time import monotonic
from zlib import crc32

from _common import peak_rss_bytes, rss_bytes  # noqa: E402  (puts the repo on sys.path)

from tpsharness.load.accounting import Streams  # noqa: E402
from tpsharness.load.config import LoadConfig  # noqa: E402
from tpsharness.load.fake import FakeProcess  # noqa: E402
from tpsharness.load.histograms import Latencies, summary_ms  # noqa: E402
from tpsharness.load.local import run_worker  # noqa: E402
from tpsharness.load.payload import HEADER_SIZE, PayloadMaker, unpack_header  # noqa: E402
from tpsharness.load.result import LoadResult  # noqa: E402
from tpsharness.protocol import (PrivateData, PrivateDataTemplate, Reader,  # noqa: E402
                                 RegisterReply, register_request)


def cpu_seconds():
    times = os.times()
    return times.user + times.system


# -- the baseline: the same generator on asyncio Protocols ------------------------------------------

class Baseline:
    """Closed loop with ``window`` in flight per client, asyncio Protocols, our accounting."""

    def __init__(self, address, devices, clients, window, payload_size, duration):
        self.address, self.duration, self.window = address, duration, window
        self.label = f"{address[0]}:{address[1]}"
        self.device_count, self.client_count = devices, clients
        self.make = PayloadMaker(payload_size).make
        self.relay, self.ack = Latencies(), Latencies()
        self.sending = False
        self.sent = 0

    async def run(self):
        import asyncio
        loop = asyncio.get_running_loop()
        prefix = f"asyncio-{os.urandom(3).hex()}-"
        self.devices = await self._open([DeviceProtocol(self, i, f"{prefix}cam-{i}", loop.create_future())
                                         for i in range(self.device_count)])
        self.clients = await self._open([ClientProtocol(self, i, f"{prefix}app-{i}", loop.create_future())
                                         for i in range(self.client_count)])
        pairs = max(len(self.devices), len(self.clients))
        client_of, device_of, self.builds = [], [], []
        for pair in range(pairs):
            client, device = self.clients[pair % len(self.clients)], self.devices[pair % len(self.devices)]
            client.pairs.append(pair)
            client_of.append(client.index)
            device_of.append(device.index)
            self.builds.append(PrivateDataTemplate(client.uuid, device.uuid, host=self.label).build)
        self.streams = Streams(client_of, device_of)
        start = self.start = monotonic()
        cpu = cpu_seconds()
        ticker = loop.create_task(self._tick())
        self.sending = True
        for client in self.clients:
            for _ in range(self.window):
                self.send(client)
        await asyncio.sleep(self.duration)
        self.sending = False
        drain = monotonic() + 1.0
        while monotonic() < drain and self.sent > self.streams.delivered:
            await asyncio.sleep(0.01)
        ticker.cancel()
        self.relay.flush()
        self.ack.flush()
        result = {"delivered": self.streams.delivered, "sent": self.sent, "cpu": cpu_seconds() - cpu,
                  "wall": monotonic() - start, "relay_p50": summary_ms(self.relay.total)["p50"]}
        for protocol in self.devices + self.clients:
            protocol.transport.close()
        return result

    async def _open(self, protocols):
        import asyncio
        loop = asyncio.get_running_loop()
        for start in range(0, len(protocols), 256):
            batch = protocols[start:start + 256]
            await asyncio.gather(*(loop.create_connection(lambda p=p: p, *self.address) for p in batch))
            await asyncio.gather(*(p.ready for p in batch))
        return protocols

    async def _tick(self):
        import asyncio
        while True:
            await asyncio.sleep(1.0)
            self.relay.flush()
            self.ack.flush()

    def send(self, client):
        pairs = client.pairs
        pair = pairs[client.turn]
        client.turn = (client.turn + 1) % len(pairs)
        seq = self.streams.next_seq[pair]
        self.streams.next_seq[pair] = seq + 1
        self.sent += 1
        due = monotonic()
        client.due_times.append(due)
        client.transport.write(self.builds[pair](self.make(client.index, pair, seq, due, 0)))


class Protocol:
    """asyncio's Protocol interface (not imported: the memory run must not load asyncio)."""

    def __init__(self, generator, index, uuid, ready):
        self.generator, self.index, self.uuid, self.ready = generator, index, uuid, ready
        self.reader = Reader()

    def connection_lost(self, exc):
        pass

    def eof_received(self):
        return False

    def pause_writing(self):
        pass

    def resume_writing(self):
        pass


class DeviceProtocol(Protocol):

    def connection_made(self, transport):
        self.transport = transport
        transport.write(register_request(self.uuid, host=self.generator.label))

    def data_received(self, data):
        generator = self.generator
        self.reader.feed(data)
        now = monotonic()
        for message in self.reader:
            if message.__class__ is PrivateData:      # the same checks as tpsharness.load.arrivals
                streams = generator.streams
                body = message.body
                if len(body) >= HEADER_SIZE:
                    check, sender, pair, seq, due, _ = unpack_header(body)
                    if (check == crc32(body[4:]) and pair < len(streams.device_of)
                            and streams.client_of[pair] == sender and seq < streams.next_seq[pair]
                            and generator.start <= due <= now):
                        if streams.device_of[pair] != self.index:
                            streams.misroute(pair, seq, self.index)
                        elif streams.receive(pair, seq):
                            generator.relay.buffer.append(int((now - due) * 1e6))
                            if generator.sending:
                                generator.send(generator.clients[sender])
                        continue
                streams.corrupted += 1
            elif message.__class__ is RegisterReply and not self.ready.done():
                self.ready.set_result(None)


class ClientProtocol(Protocol):
    def __init__(self, *args):
        super().__init__(*args)
        self.pairs, self.turn, self.due_times = [], 0, deque()

    def connection_made(self, transport):
        self.transport = transport
        self.ready.set_result(None)

    def data_received(self, data):
        self.reader.feed(data)
        ack = self.generator.ack.buffer
        for message in self.reader:
            if message.__class__ is not PrivateData and self.due_times:
                ack.append(int((monotonic() - self.due_times.popleft()) * 1e6))


# -- one generator run, in a fresh process ---------------------------------------------------------

def child(kind, host, port, devices, clients, window, size, duration):
    address = (host, port)
    before = os.times()
    if kind == "asyncio":
        import asyncio
        figures = asyncio.run(Baseline(address, devices, clients, window, size, duration).run())
    else:
        config = LoadConfig(address, devices=devices, clients=clients, window=window,
                            payload_size=size, duration=duration)
        part = run_worker(config)
        result = LoadResult([part])
        worker = part["workers"][0]
        figures = {"delivered": result.delivered, "sent": result.sent, "cpu": worker["cpu_seconds"],
                   "wall": worker["wall_seconds"], "relay_p50": result.latency("relay")["p50"]}
    after = os.times()
    user, system = after.user - before.user, after.system - before.system
    figures["system_share"] = system / (user + system) if user + system else 0.0     # connects included
    print(json.dumps(figures))


def run_child(kind, address, args):
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--host", address[0],
                          "--port", str(address[1]), "--devices", str(args.devices), "--clients",
                          str(args.clients), "--window", str(args.window), "--payload-size",
                          str(args.payload_size), "--duration", str(args.duration)],
                         capture_output=True, text=True, timeout=args.duration * 3 + 120)
    if out.returncode:
        raise RuntimeError(f"{kind} generator failed: {out.stderr.strip()[-800:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def tps_under_test(args):
    """A fresh fake TPS process per run, or the server the user named with --tps."""
    if args.tps is None:
        with FakeProcess() as address:
            yield address
    else:
        host, _, port = args.tps.rpartition(":")
        yield (host, int(port))


def cpu_per_relay(args):
    runs = {"ours": [], "asyncio": []}
    for _ in range(args.rounds):
        for kind in ("ours", "asyncio"):
            with tps_under_test(args) as address:
                figures = run_child(kind, address, args)
            runs[kind].append(figures["cpu"] / figures["delivered"] * 1e6)
            system = runs[kind][-1] * figures["system_share"]
            print(f"cpu        {kind:8} {figures['delivered']:,} relays in {figures['wall']:.1f} s "
                  f"({figures['delivered'] / figures['wall']:,.0f}/s), generator CPU {figures['cpu']:.2f} s: "
                  f"{runs[kind][-1]:.1f} us per relay (about {runs[kind][-1] - system:.1f} us user, "
                  f"{system:.1f} us system)", flush=True)
        print(f"cpu        round {len(runs['ours'])}: ratio "
              f"{runs['asyncio'][-1] / runs['ours'][-1]:.2f}x", flush=True)
    ours, baseline = min(runs["ours"]), min(runs["asyncio"])
    args.per_relay_us = ours
    print(f"cpu        {args.devices:,} devices, {args.clients} clients, window {args.window}, "
          f"{args.payload_size} B, {args.duration:g} s: ours {ours:.1f} us per relay (range "
          f"{min(runs['ours']):.1f}-{max(runs['ours']):.1f}), asyncio {baseline:.1f} us (range "
          f"{min(runs['asyncio']):.1f}-{max(runs['asyncio']):.1f}), ratio {baseline / ours:.2f}x "
          f"(goals: >= 1.5x, <= 20 us)")


def accounting_cost(args, per_relay_us):
    """What integrity costs per relay: the checks a payload passes before it counts
    (checksum, pair, sender, sequence number, send time), the destination compared
    and its stream advanced; timed in-process on prebuilt payloads against reading
    their header alone, and shown against the per-relay figure. The whole reading
    callback (framing, latency, refilling the sender) is timed beside it, on
    prebuilt reads."""
    from time import process_time

    from tpsharness.load.accounting import Counters
    from tpsharness.load.arrivals import Evidence, make_on_read
    from tpsharness.load.endpoints import LoadClient, LoadDevice

    class Idle:
        sending = False         # nothing is sent again

    devices = [LoadDevice(("127.0.0.1", 1), f"cam-{i}", i) for i in range(args.devices)]
    clients = [LoadClient(("127.0.0.1", 1), f"app-{i}", i) for i in range(args.clients)]
    pairs = max(len(devices), len(clients))
    client_of = [pair % len(clients) for pair in range(pairs)]
    device_of = [pair % len(devices) for pair in range(pairs)]
    streams = Streams(client_of, device_of)
    make = PayloadMaker(args.payload_size).make
    known = {}
    for device in devices:
        device.relay_heads = known
    start = monotonic()
    reads, bodies = [], []
    for i in range(200_000):
        pair = i % pairs
        head = PrivateDataTemplate(clients[client_of[pair]].uuid, devices[device_of[pair]].uuid).build(
            bytes(args.payload_size))[:-args.payload_size]
        known[head] = (clients[client_of[pair]].uuid, args.payload_size)
        seq = streams.next_seq[pair]
        streams.next_seq[pair] += 1
        body = make(client_of[pair], pair, seq, start, 0)
        reads.append((devices[device_of[pair]], head + body))
        bodies.append((device_of[pair], body))
    now = monotonic()
    next_seq, highest, at_destination = streams.next_seq, streams.highest, streams.at_destination

    def header_only():
        for index, body in bodies:
            unpack_header(body)

    def checked():
        highest[:] = at_destination[:] = [-1] * pairs
        for index, body in bodies:              # arrivals.make_on_read's relayed(), its integrity part
            check, sender, pair, seq, due, flags = unpack_header(body)
            if (check == crc32(body[4:]) and pair < pairs and client_of[pair] == sender
                    and seq < next_seq[pair] and start <= due <= now):
                if device_of[pair] != index:
                    continue
                if seq == highest[pair] + 1:
                    highest[pair] = at_destination[pair] = seq
                    streams.delivered += 1
                    streams.arrived += 1

    def reading():
        highest[:] = at_destination[:] = [-1] * pairs
        on_read = make_on_read(Idle(), streams, Counters(), Evidence(), clients, [], lambda c, d: True,
                               lambda e, d: None, start, closed_loop=True)
        for device, data in reads:
            on_read(device, data)
        assert not streams.corrupted and not streams.misrouted

    def best(run):
        times = []
        for _ in range(5):
            began = process_time()
            run()
            times.append(process_time() - began)
        return min(times) / len(reads) * 1e6

    cost = best(checked) - best(header_only)
    share = f", {cost / per_relay_us * 100:.1f}% of the {per_relay_us:.1f} us per relay" if per_relay_us else ""
    print(f"accounting integrity and misrouting checks {cost:.2f} us per relay{share} (goal <= 5%); "
          f"the whole reading callback {best(reading):.2f} us")


def memory_child(host, port, devices):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    base = rss_bytes()
    config = LoadConfig((host, port), devices=devices, clients=10, rate=100.0, duration=2.0,
                        timeout=30.0)
    part = run_worker(config)
    peak = peak_rss_bytes()
    print(json.dumps({"base": base, "peak": peak, "devices": part["counters"]["devices"],
                      "delivered": part["counters"]["delivered"], "sent": part["counters"]["sent"]}))


def memory(args):
    with FakeProcess() as address:
        out = subprocess.run([sys.executable, __file__, "--memory-child", "--host", address[0],
                              "--port", str(address[1]), "--devices", str(args.memory_devices)],
                             capture_output=True, text=True, timeout=600)
    if out.returncode:
        print(f"memory     failed: {out.stderr.strip()[-500:]}")
        return
    r = json.loads(out.stdout.strip().splitlines()[-1])
    per = (r["peak"] - r["base"]) / max(1, r["devices"])
    print(f"memory     one worker holding {r['devices']:,} registered devices (10 clients, "
          f"{r['delivered']:,} of {r['sent']:,} delivered): peak RSS {r['peak'] / 2**20:.1f} MB "
          f"({r['base'] / 2**20:.1f} MB before; {per / 1024:.2f} KiB per device) (goal <= 40 MB at 10,000)")


def workers(args):
    from tpsharness.load.api import load
    rates = {}
    for count in (1, 2, 1, 2)[:2 * args.rounds]:
        result = load(devices=args.devices, clients=args.clients, window=args.window,
                      payload_size=args.payload_size, duration=args.duration, workers=count)
        rates.setdefault(count, []).append(result.delivered / result.duration)
    one, two = max(rates[1]), max(rates[2])
    print(f"workers    1 worker {one:,.0f} relays/s, 2 workers {two:,.0f} relays/s, ratio "
          f"{two / one:.2f}x (goal >= 1.7x when the TPS is not the bottleneck; here the fake TPS "
          "is one Python process on the same 2 cores)")


def accuracy(args):
    from tpsharness.load.api import load
    delayed = load(devices=20, clients=10, window=1, duration=args.duration / 2,
                   fake_args=["--reply-delay=0.05"])
    relay = delayed.latency("relay")
    print(f"accuracy   fake --reply-delay 0.05: relay p50 {relay['p50']:.2f} ms, p99 {relay['p99']:.2f} ms "
          f"(goal: p50 50-55 ms)")
    short = 1.0 if args.quick else 2.0
    capacity = load(devices=100, clients=10, window=8, duration=short)
    rate = 2 * capacity.delivered / capacity.duration
    over = load(devices=100, clients=10, rate=rate, duration=max(2.0, args.duration / 2), drain=short)
    p99s = [row["relay_p99_ms"] for row in over.series_rows() if row["span"] >= 0.999]
    shown = ", ".join(f"{p:.0f}" for p in p99s if p is not None)
    print(f"accuracy   open loop at {rate:,.0f}/s, twice the measured capacity of "
          f"{rate / 2:,.0f}/s: relay p99 per second {shown} ms "
          f"({'growing' if len(p99s) >= 2 and p99s[-1] > 2 * p99s[0] else 'NOT growing'})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--payload-size", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    parser.add_argument("--memory-devices", type=int, default=min(10_000, hard - 100))
    parser.add_argument("--tps", metavar="HOST:PORT",
                        help="run the cpu comparison against this TPS instead of a fresh fake")
    parser.add_argument("--quick", action="store_true", help="small workloads (the test suite's smoke run)")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-accounting", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--child", choices=["ours", "asyncio"], help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.host, args.port, args.devices, args.clients, args.window,
                     args.payload_size, args.duration)
    if args.memory_child:
        return memory_child(args.host, args.port, args.devices)
    if args.quick:
        args.devices, args.clients, args.duration, args.rounds = 40, 8, 1.0, 1
        args.memory_devices = 200
    args.per_relay_us = None
    if not args.skip_cpu:
        cpu_per_relay(args)
    if not args.skip_accounting:
        accounting_cost(args, args.per_relay_us)
    if not args.skip_memory:
        memory(args)
    if not args.skip_workers:
        workers(args)
    if not args.skip_accuracy:
        accuracy(args)


if __name__ == "__main__":
    main()
