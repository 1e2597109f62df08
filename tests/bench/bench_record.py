"""Recording: what the proxy adds to a relay, what it carries, how fast a capture
imports, and what an exact replay costs; each against a baseline in the same run.

    python tests/bench/bench_record.py                 # goals: added p50 <= 100 us, >= 20,000
                                                       # relays/s per proxy core, >= 50 MB/s import
    python tests/bench/bench_record.py --quick         # small workloads (the test suite runs this)

Latency: one device and one client relay one payload at a time, straight to the fake
TPS and through the proxy, in alternating rounds; the added latency is the difference
of the medians. Throughput: tpsharness load (closed loop) through the proxy; the
proxy's own CPU time (from /proc) per relay gives relays/s on one core. Import: a
generated pcap of N relays, imported by the importer, against dpkt decoding every
packet of the same file (the baseline a dpkt-only importer would start from).
Replay: a recorded session of N relays among many actors, written as an exact
scenario and played against the fake, against the same scenario without "exact"
(no look at every connection before each move), in alternating rounds; the
player's CPU time per play.
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import _common                    # noqa: F401  (puts the repository on sys.path)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import capture_writer                                       # noqa: E402
from tpsharness import kernel                               # noqa: E402
from tpsharness.client import Client                        # noqa: E402
from tpsharness.device import Device                        # noqa: E402
from tpsharness.protocol import private_data_request, register_reply, register_request, reply  # noqa: E402
from tpsharness.record.capture import import_capture        # noqa: E402
from tpsharness.record.conversation import OPEN, RECEIVED, SENT, Conversation  # noqa: E402
from tpsharness.record.writer import write_scenarios        # noqa: E402
from tpsharness.scenario import Scenario, play, validate    # noqa: E402


def start(command, pattern):
    """Start ``command``; its process and the port from the first line matching ``pattern``."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        match = re.search(pattern, line)
        if match:
            return process, int(match.group(1))
    raise RuntimeError(f"{command[2:4]} did not start")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def relay_latencies(address, relays):
    async def run():
        device, client = Device(address), Client(address)
        await device.connect()
        await device.register()
        await client.connect()
        times = []
        for _ in range(relays):
            started = time.perf_counter()
            await client.send(device.uuid, b"p" * 64)
            await device.receive()
            times.append(time.perf_counter() - started)
        device.close()
        client.close()
        return times
    return kernel.run(run(), timeout=120)


def bench_proxy(args):
    fake, tps_port = start([sys.executable, "-m", "fake_tps", "--port", "0"], r"listening on [\d.]+:(\d+)")
    out = tempfile.mkdtemp()
    proxy, proxy_port = start([sys.executable, "-m", "tpsharness", "record", "--proxy", "0", "--upstream",
                               f"127.0.0.1:{tps_port}", "-o", out, "--max-bytes", str(1 << 30)],
                              r"relaying [\d.]+:(\d+)")
    try:
        direct, proxied = [], []
        for _ in range(args.rounds):
            direct += relay_latencies(("127.0.0.1", tps_port), args.relays)
            proxied += relay_latencies(("127.0.0.1", proxy_port), args.relays)
        d50, p50 = statistics.median(direct), statistics.median(proxied)
        print(f"latency, {len(direct)} relays each: direct p50 {d50 * 1e6:.0f} us, through the proxy "
              f"p50 {p50 * 1e6:.0f} us: added {(p50 - d50) * 1e6:.0f} us (goal <= 100 us)")
        cpu_before = cpu_seconds(proxy.pid)
        load = subprocess.run([sys.executable, "-m", "tpsharness", "load", "127.0.0.1", str(proxy_port),
                               "--devices", str(args.devices), "--clients", str(args.clients),
                               "--duration", str(args.seconds), "--window", "8", "--quiet"],
                              capture_output=True, text=True, timeout=120)
        cpu = cpu_seconds(proxy.pid) - cpu_before
        delivered = int(re.search(r"delivered\s+([\d,]+)", load.stdout).group(1).replace(",", ""))
        print(f"throughput: {delivered} relays through the proxy in {args.seconds:g} s "
              f"({delivered / args.seconds:,.0f}/s wall); the proxy used {cpu:.2f} s of CPU: "
              f"{delivered / cpu:,.0f} relays/s on one core (goal >= 20,000)")
    finally:
        proxy.send_signal(signal.SIGINT)
        proxy.wait(120)
        fake.terminate()
        fake.wait(10)


def generated_conversation(relays, devices=100, clients=10, payload_size=64):
    conversation = Conversation()
    ack = reply(200)
    for number in range(1, devices + clients + 1):
        conversation.open(0.0, number, f"10.0.0.2:{40000 + number}")
    time_ = 0.0
    for n in range(relays):
        device, client = 1 + n % devices, devices + 1 + n % clients
        request = private_data_request(f"app-{client}", f"cam-{device}", os.urandom(payload_size))
        time_ += 0.0001
        conversation.add(time_, client, SENT, request)
        conversation.add(time_, client, RECEIVED, ack)
        conversation.add(time_, device, RECEIVED, request)
    return conversation


def dpkt_decoding(path):
    import dpkt
    with open(path, "rb") as handle:
        for _, packet in dpkt.pcap.Reader(handle):
            segment = dpkt.ethernet.Ethernet(packet).data.data
            segment.data


def bench_import(args):
    directory = tempfile.mkdtemp()
    path = os.path.join(directory, "relays.pcap")
    frames = capture_writer.packets(generated_conversation(args.import_relays, payload_size=args.payload_size))
    capture_writer.write(path, frames)
    del frames
    size = os.path.getsize(path)
    imported = []
    ours, reading, baseline = best_cpu_of(
        args.rounds, lambda: imported.append(import_capture(path, 6604, max_bytes=1 << 31)),
        lambda: dpkt_reading(path), lambda: dpkt_decoding(path))
    result = imported[-1]
    assert not result.skipped and not result.stopped, result.report()
    print(f"import: {args.import_relays} relays of {args.payload_size} B, {result.packets} packets, "
          f"{size / 1e6:.1f} MB: {size / 1e6 / ours:.0f} MB/s ({ours:.2f} s of CPU; goal >= 50 MB/s); "
          f"dpkt reading the packets alone {size / 1e6 / reading:.0f} MB/s, dpkt decoding every "
          f"packet {size / 1e6 / baseline:.0f} MB/s ({baseline / ours:.1f}x slower than the importer)")


def registered_conversation(relays, devices, clients, payload_size):
    """generated_conversation's relays, after each device's register and its reply."""
    relayed = generated_conversation(relays, devices, clients, payload_size)
    conversation = Conversation()
    for number in range(1, devices + clients + 1):
        conversation.open(0.0, number, f"10.0.0.2:{40000 + number}")
        if number <= devices:
            conversation.add(0.0, number, SENT, register_request(f"cam-{number}"))
            conversation.add(0.0, number, RECEIVED, register_reply(utc_time=0))
    for event in relayed.events:
        if event[2] != OPEN:
            conversation.add(*event)
    return conversation


def bench_replay(args):
    conversation = registered_conversation(args.replay_relays, args.devices, args.clients, args.payload_size)
    exact = write_scenarios(conversation)[0].data
    assert exact["exact"] and not [step for step in exact["steps"] if "pending" in step]
    plain = {key: value for key, value in exact.items() if key != "exact"}
    scenarios = [Scenario(f"<{name}>", validate(data)) for name, data in (("exact", exact), ("plain", plain))]
    fake, port = start([sys.executable, "-m", "fake_tps", "--port", "0"], r"listening on [\d.]+:(\d+)")
    try:
        exact_cpu, plain_cpu = best_cpu_of(args.rounds, *[
            lambda scenario=scenario: play(scenario, ("127.0.0.1", port)) for scenario in scenarios])
    finally:
        fake.terminate()
        fake.wait(10)
    moves = sum(1 for step in exact["steps"] if step["do"] in ("connect", "send", "close"))
    print(f"replay: {args.replay_relays} relays among {len(exact['actors'])} actors, "
          f"{len(exact['steps'])} steps ({moves} moves): exact {exact_cpu * 1e3:.0f} ms of CPU, without "
          f"exact {plain_cpu * 1e3:.0f} ms: ratio {exact_cpu / plain_cpu:.2f}x "
          f"({(exact_cpu - plain_cpu) / moves * 1e6:.1f} us per move)")


def best_cpu_of(rounds, *workloads):
    """As _common.best_of, in CPU seconds: an import is CPU-bound, and CPU time is what
    a busy machine disturbs least."""
    best = [float("inf")] * len(workloads)
    for _ in range(rounds):
        for i, workload in enumerate(workloads):
            started = time.process_time()
            workload()
            best[i] = min(best[i], time.process_time() - started)
    return best


def dpkt_reading(path):
    import dpkt
    with open(path, "rb") as handle:
        for _ in dpkt.pcap.Reader(handle):
            pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small workloads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--relays", type=int, default=2000, help="latency relays per round")
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput run")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--import-relays", type=int, default=100_000)
    parser.add_argument("--payload-size", type=int, default=64, help="bytes of each relay's payload")
    parser.add_argument("--replay-relays", type=int, default=2000, help="relays of the replayed scenario")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.relays, args.seconds, args.devices, args.clients, args.import_relays = 1, 50, 0.5, 4, 2, 500
        args.replay_relays = 50
    bench_proxy(args)
    bench_import(args)
    bench_replay(args)


if __name__ == "__main__":
    main()
