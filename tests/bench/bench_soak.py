"""Soak: hostile input against the fake TPS while 50 device/client pairs keep relaying.

    python tests/bench/bench_soak.py [--seconds 60] [--pairs 50] [--attackers 40]

The fake runs in a process of its own (``python -m fake_tps``), so that its RSS and
open file descriptors can be read from /proc. Three kinds of attacker connect over
and over, ``attackers`` at a time:

- random: random bytes, in one or a few writes, then a close or a reset;
- mutated: valid registers and private data (to the attackers' own uuids) with
  bytes flipped, inserted, deleted, duplicated, a Content-Length made absurd, or
  the request cut short, in random segments;
- slow: a request trickled a byte at a time, a request begun then left hanging
  (half-open), a connection that sends nothing, a request begun then reset.

Meanwhile each pair runs a paced closed loop on our kernel (client sends a unique
payload, reads the ack, its device receives it; the device re-registers now and
then as a heartbeat). Asserted and printed: every payload the pairs sent arrived,
with no error; once the attackers have closed their connections the fake's open fd
count is back to the baseline (measured with the pairs connected, before any
attack) and its RSS within ``--rss-slack`` MB of it; the fake logged no traceback.
"""

import argparse
import asyncio
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import _common  # noqa: F401  (puts the repo on sys.path)

from tpsharness.client import Client  # noqa: E402
from tpsharness.device import Device  # noqa: E402
from tpsharness.kernel import run  # noqa: E402
from tpsharness.protocol import private_data_request, register_request  # noqa: E402
from tpsharness.syscalls import NewTask, Sleep, WaitTask  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REQUEST_TIMEOUT = 2.0       # the fake's --request-timeout: slow attackers are closed by it
RELAY_PACE = 0.05           # seconds between one pair's relays (pacing, not synchronisation)
HEARTBEAT_EVERY = 20.0


# -- the fake, in a process of its own ---------------------------------------------------------

class FakeProcess:
    """``python -m fake_tps`` on a free port; its RSS and fds read from /proc."""

    def __init__(self):
        self.stderr = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fake_tps", "--port", "0", "--request-timeout", str(REQUEST_TIMEOUT)],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env, cwd=REPO)
        line = self.process.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not match:
            self.process.kill()
            raise SystemExit(f"the fake did not start: {line!r}")
        self.address = ("127.0.0.1", int(match.group(1)))

    def rss_mb(self):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def fds(self):
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def stop(self):
        """SIGTERM; (its counters line, its stderr)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            out, _ = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        self.stderr.seek(0)
        return out, self.stderr.read()


# -- the relaying pairs, on our kernel ---------------------------------------------------------

class PairCounts:
    def __init__(self):
        self.sent = 0
        self.arrived = 0
        self.errors = []


async def pair(address, index, stop, counts, connected):
    device = Device(address, f"soak-cam-{index}", timeout=10)
    client = Client(address, f"soak-app-{index}", timeout=10)
    try:
        await device.connect()
        await device.register()
        await client.connect()
        connected.append(index)
        next_heartbeat = time.monotonic() + HEARTBEAT_EVERY
        n = 0
        while not stop.is_set():
            payload = b"soak %d %d" % (index, n)
            counts.sent += 1
            await client.send(device.uuid, payload)
            received = await device.receive()
            if received.body != payload:
                counts.errors.append(f"pair {index}: {received.body!r} arrived for {payload!r}")
                return
            counts.arrived += 1
            n += 1
            if time.monotonic() >= next_heartbeat:
                await device.register()
                next_heartbeat = time.monotonic() + HEARTBEAT_EVERY
            await Sleep(RELAY_PACE)
    except Exception as error:         # reported as the pair's error, never lost
        counts.errors.append(f"pair {index}: {type(error).__name__}: {error}")
    finally:
        device.close()
        client.close()


async def pairs_main(address, pairs, stop, counts, connected):
    tids = [await NewTask(pair(address, i, stop, counts, connected)) for i in range(pairs)]
    for tid in tids:
        await WaitTask(tid)


# -- the attackers, on asyncio in a thread of their own ---------------------------------------

class AttackCounts:
    def __init__(self):
        self.connections = {"random": 0, "mutated": 0, "slow": 0}
        self.bytes_sent = 0
        self.replies = {}
        self.closed_by_server = 0
        self.refused = 0


def valid_requests(rng):
    """Requests the attackers mutate: only to and from their own uuids."""
    evil = f"evil-{rng.randrange(1000)}"
    return [
        register_request(evil, trailing_crlf=rng.random() < 0.5),
        private_data_request(f"evil-app-{rng.randrange(1000)}", evil, rng.randbytes(rng.randrange(200))),
        private_data_request(evil, evil, b"to itself"),
    ]


def mutate(data, rng):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(7)
        at = rng.randrange(len(data) + 1)
        if choice == 0 and data:                                  # flip bits
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1:                                         # insert bytes
            data[at:at] = rng.randbytes(rng.randint(1, 20))
        elif choice == 2:                                         # delete a range
            del data[at:at + rng.randint(1, 30)]
        elif choice == 3:                                         # cut short
            del data[at:]
        elif choice == 4:                                         # duplicate a chunk
            data[at:at] = data[max(0, at - 40):at]
        elif choice == 5:                                         # an absurd Content-Length
            value = rng.choice([b"-1", b"9" * 4400, b"99999999999", b"1e3", b"0x10", b" ", b"12 34"])
            data = bytearray(re.sub(rb"Content-Length: *\d*", b"Content-Length: " + value, bytes(data)))
        else:                                                     # an oversized header
            data[at:at] = b"\r\nX-Pad: " + b"p" * rng.choice([100, 17000])
    return bytes(data)


def segments(data, rng):
    if len(data) < 2 or rng.random() < 0.5:
        return [data]
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 3))))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


async def drain(reader, counts, seconds):
    """Read what the server answers for ``seconds``; count statuses and a close."""
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            data = await asyncio.wait_for(reader.read(65536), remaining)
        except asyncio.TimeoutError:
            return False
        except OSError:
            counts.closed_by_server += 1
            return True
        if not data:
            counts.closed_by_server += 1
            return True
        for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", data):
            counts.replies[status.decode()] = counts.replies.get(status.decode(), 0) + 1


def reset(writer):
    sock = writer.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


async def attack_once(address, rng, counts):
    kind = rng.choice(("random", "mutated", "slow"))
    try:
        reader, writer = await asyncio.open_connection(*address)
    except OSError:
        counts.refused += 1
        return
    counts.connections[kind] += 1
    try:
        if kind == "random":
            chunks = [rng.randbytes(rng.randint(1, 4096)) for _ in range(rng.randint(1, 3))]
        elif kind == "mutated":
            chunks = segments(b"".join(mutate(r, rng) for r in rng.sample(valid_requests(rng), 2)), rng)
        else:
            chunks = []
            await slow(reader, writer, rng, counts)
        for chunk in chunks:
            writer.write(chunk)
            counts.bytes_sent += len(chunk)
            await writer.drain()
            if await drain(reader, counts, 0.05):
                return
        await drain(reader, counts, 0.2)
    except OSError:
        counts.closed_by_server += 1
    finally:
        if rng.random() < 0.3:
            reset(writer)
        else:
            writer.close()


async def slow(reader, writer, rng, counts):
    request = rng.choice(valid_requests(rng))
    how = rng.choice(("trickle", "half-open", "silent", "reset"))
    if how == "trickle":            # a byte at a time: the request deadline closes it
        for byte in request:
            writer.write(bytes([byte]))
            counts.bytes_sent += 1
            await writer.drain()
            if await drain(reader, counts, 0.25):
                return
    elif how == "half-open":        # begun, then left hanging
        writer.write(request[:len(request) // 2])
        counts.bytes_sent += len(request) // 2
        await drain(reader, counts, REQUEST_TIMEOUT + 2)
    elif how == "silent":           # connected, says nothing (the idle timeout is 300 s)
        await drain(reader, counts, rng.uniform(0.5, 3))
    else:
        writer.write(request[:rng.randrange(1, len(request))])
        counts.bytes_sent += 1
        await drain(reader, counts, 0.1)
        reset(writer)


async def attackers_main(address, attackers, stop, counts, seed):
    async def attacker(number):
        rng = random.Random(seed * 1000 + number)
        while not stop.is_set():
            await attack_once(address, rng, counts)

    await asyncio.gather(*(attacker(n) for n in range(attackers)))


# -- the soak --------------------------------------------------------------------------------

def wait_for(predicate, seconds):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)         # polling /proc: nothing to wait on
    return predicate()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the attack lasts (default 60)")
    parser.add_argument("--pairs", type=int, default=50, help="device/client pairs relaying (default 50)")
    parser.add_argument("--attackers", type=int, default=40, help="attacking connections at a time (default 40)")
    parser.add_argument("--rss-slack", type=float, default=16.0, metavar="MB",
                        help="RSS allowed above the baseline after the attack (default 16 MB: the "
                             "parsed-header cache and allocator pools)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    fake = FakeProcess()
    pair_counts, attack_counts = PairCounts(), AttackCounts()
    connected = []
    warmup = 1.0
    pairs_stop = threading.Event()
    pairs_thread = threading.Thread(
        target=lambda: run(pairs_main(fake.address, args.pairs, pairs_stop, pair_counts, connected)),
        name="pairs")
    try:
        pairs_started = time.monotonic()
        pairs_thread.start()
        if not wait_for(lambda: len(connected) == args.pairs, 20):
            raise SystemExit(f"only {len(connected)} of {args.pairs} pairs connected: {pair_counts.errors[:3]}")
        time.sleep(warmup)      # the pairs relay for a while before the baseline is read
        base_rss, base_fds = fake.rss_mb(), fake.fds()

        stop = threading.Event()
        attack_thread = threading.Thread(
            target=lambda: asyncio.run(attackers_main(fake.address, args.attackers, stop,
                                                      attack_counts, args.seed)), name="attackers")
        attack_thread.start()
        peak_rss, peak_fds = base_rss, base_fds
        attack_end = time.monotonic() + args.seconds
        while time.monotonic() < attack_end:
            time.sleep(min(0.5, max(0.0, attack_end - time.monotonic())))      # sampling /proc
            peak_rss, peak_fds = max(peak_rss, fake.rss_mb()), max(peak_fds, fake.fds())
        stop.set()
        attack_thread.join(REQUEST_TIMEOUT + 10)
        # Every attacker connection is closed on our side now; the fake notices at once.
        fds_back = wait_for(lambda: fake.fds() <= base_fds, 10)
        after_rss, after_fds = fake.rss_mb(), fake.fds()
    finally:
        pairs_stop.set()
        pairs_thread.join(30)
        pairs_seconds = time.monotonic() - pairs_started
        out, err = fake.stop()

    seconds = args.seconds
    counters = dict(re.findall(r"(\w+)=(\d+)", out))
    tracebacks = err.count("Traceback")
    print(f"soak {seconds:g} s, {args.pairs} pairs relaying, {args.attackers} attackers at a time "
          f"(fake: python -m fake_tps --request-timeout {REQUEST_TIMEOUT:g})")
    print(f"relays   {pair_counts.arrived:,} of {pair_counts.sent:,} payloads arrived "
          f"({pair_counts.arrived / pairs_seconds:,.0f}/s), {len(pair_counts.errors)} errors")
    hostile = attack_counts.connections
    replies = ", ".join(f"{status}: {n:,}" for status, n in sorted(attack_counts.replies.items()))
    print(f"hostile  {sum(hostile.values()):,} connections (random {hostile['random']:,}, mutated "
          f"{hostile['mutated']:,}, slow {hostile['slow']:,}), {attack_counts.bytes_sent:,} bytes; "
          f"replies {replies or 'none'}; closed by the fake {attack_counts.closed_by_server:,}; "
          f"refused {attack_counts.refused}")
    print("fake     " + " ".join(f"{name}={counters.get(name, '?')}" for name in (
        "connections", "bad_requests", "protocol_errors", "slow_closed", "idle_closed", "relays")))
    print(f"memory   fake RSS {base_rss:.1f} MB baseline, {peak_rss:.1f} MB peak, {after_rss:.1f} MB after")
    print(f"fds      fake {base_fds} baseline, {peak_fds} peak, {after_fds} after")
    print(f"tracebacks {tracebacks}")

    problems = []
    if pair_counts.errors or pair_counts.arrived != pair_counts.sent:
        problems.append(f"relays affected: {pair_counts.errors[:5]}")
    if not fds_back:
        problems.append(f"fds did not return to baseline: {after_fds} > {base_fds}")
    if after_rss > base_rss + args.rss_slack:
        problems.append(f"RSS did not return to baseline: {after_rss:.1f} MB > {base_rss:.1f} + {args.rss_slack:g}")
    if tracebacks or fake.process.returncode != 0:
        problems.append(f"the fake logged {tracebacks} tracebacks, exit {fake.process.returncode}: {err[-2000:]}")
    if problems:
        print("FAILED: " + "; ".join(problems))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
