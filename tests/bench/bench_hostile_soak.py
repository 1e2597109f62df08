"""Soak: the engines against hostile peers, bounded; prints peak RSS and file sizes.

    python tests/bench/bench_hostile_soak.py [--part load] [--part exporter] [options]

Each part runs what it soaks in a process of its own and asserts its bounds; with no
``--part``, both run. The script prints FAILED and exits 1 if a bound was exceeded.

``--part load``: ``tpsharness load`` against a TPS (tests/hostile_tps.py) that answers
each private data with its own 12 kB reason phrase; that relays each message and a
forged copy (a valid checksum, an impossible sender, pair, sequence number or send
time), and forges the devices' answers; and that resets connections all through the
run (a reset storm). Each prints its time, exit status, peak RSS and the size of what
it wrote (stdout, the JSON result, the CSV files), against the bound each must stay
within.

``--part exporter``: ``tpsharness exporter`` runs as a process of its own (its peak
RSS is VmHWM in /proc, its threads and fds are counted there), in front of a fake
TPS. Then:

1. ``idle`` connections are opened and held: half send nothing, half send the start
   of a request and no more (a slow sender);
2. a burst of ``burst`` scrapes arrives at once, each a real probe of the fake: at
   most 8 run (--max-concurrent), the others must get 503 at once; idle connections
   past --max-connections are evicted for them;
3. the held connections must be answered 408 and closed by the request timeout.

Asserted and printed: every scrape of the burst answered, no thread per connection,
every held connection closed within the request timeout and a second, the
exporter's fds back to where they were, its peak RSS within ``--rss-limit`` MB of
its baseline, its stdout and stderr (the only files it writes) a few lines.
"""

import argparse
import json
import math
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import _common  # noqa: F401  (puts the repo on sys.path)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from hostile_tps import HostileTPS, forged  # noqa: E402  (tests/hostile_tps.py)
from http_burst import burst  # noqa: E402  (tests/http_burst.py, shared with the tests)
from tpsharness.protocol import reply  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MEASURED = ("import sys\n"
            "from tpsharness.cli import main\n"
            "code = main(sys.argv[1:])\n"
            "sys.stdout.flush()\n"
            "peak = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')]\n"
            "print('maxrss-kb', peak[0], file=sys.stderr)\n"
            "sys.exit(code)\n")
BOUNDS = {"rss_mb": 200, "stdout_kb": 64, "json_kb": 2048, "csv_kb": 2048, "overrun_s": 30}


def measured_run(args, timeout):
    """``tpsharness ARGS`` in a process of its own: (exit, seconds, peak RSS MB, stdout bytes)."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", MEASURED, *args], cwd=REPO, capture_output=True,
                          timeout=timeout, env=dict(os.environ, PYTHONPATH=REPO))
    lines = done.stderr.decode("utf-8", "replace").splitlines()
    rss = next((int(line.split()[1]) / 1024 for line in reversed(lines) if line.startswith("maxrss-kb")), math.nan)
    return done.returncode, time.monotonic() - started, rss, len(done.stdout)


def report(name, figures, seconds):
    """Print one scenario's figures against the bounds; True if all held."""
    code, elapsed, rss, stdout, json_size, csv_size = figures
    held = (rss <= BOUNDS["rss_mb"] and stdout <= BOUNDS["stdout_kb"] * 1024
            and json_size <= BOUNDS["json_kb"] * 1024 and csv_size <= BOUNDS["csv_kb"] * 1024
            and elapsed <= seconds + BOUNDS["overrun_s"])
    print(f"soak load  {name:<24} {elapsed:5.1f} s (run {seconds:g} s), exit {code}, peak RSS {rss:6.1f} MB, "
          f"stdout {stdout / 1024:6.1f} kB, JSON {json_size / 1024:7.1f} kB, CSV {csv_size / 1024:6.1f} kB: "
          f"{'bounded' if held else 'NOT BOUNDED'}", flush=True)
    return held


# -- what the hostile TPS does ------------------------------------------------------------------------

def refuse_with_a_unique_phrase(tps, conn, message):
    conn.sendall(b"HTTP/1.1 400 " + f"{tps.count:010d}".encode() + b"R" * 12_000 + b"\r\n\r\n")


FORGERIES = ({"sender": 0xFFFFFFFF}, {"pair": 0xFFFFFFFF}, {"seq": 2 ** 63}, {"due": math.nan})


def relay_and_forge(tps, conn, message):
    """Relay, then a forged copy to the device and a forged answer to the client."""
    device = HostileTPS.relay_as_field(tps, conn, message)
    if device is not None:
        copy = forged(message.body, **FORGERIES[tps.count % len(FORGERIES)])
        device.sendall(message.raw.replace(message.body, copy))
        answer = forged(message.body, **FORGERIES[(tps.count + 1) % len(FORGERIES)])
        conn.sendall(message.raw.replace(message.body, answer))


def reset_storm(tps, conn, message):
    """Relay, resetting a device's connection every 1,999th message and a client's
    every 4,999th: connections die all through the run (a message for a device that
    is gone gets 404, as from a field server)."""
    device = tps.devices.get(message.dest)
    if device is None:
        conn.sendall(reply(404))
        return
    victim = conn if tps.count % 4999 == 0 else device if tps.count % 1999 == 0 else None
    if victim is not None:
        victim.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        victim.close()
        if victim is device:
            tps.devices.pop(message.dest, None)
        return
    conn.sendall(reply(200))
    device.sendall(message.raw)


LOAD_SCENARIOS = {
    "unique 12 kB reasons": dict(relay=refuse_with_a_unique_phrase),
    "forged payloads": dict(relay=relay_and_forge),
    "reset storm": dict(relay=reset_storm),
}


def load_part(args):
    failures = []
    for name, hooks in LOAD_SCENARIOS.items():
        with tempfile.TemporaryDirectory() as scratch, HostileTPS(**hooks) as tps:
            result = os.path.join(scratch, "result.json")
            figures = measured_run(["load", *map(str, tps.address), "--devices", str(args.devices),
                                    "--clients", str(args.clients), "--window", "4", "--duration",
                                    str(args.seconds), "--reply-every", "5", "--timeout", "2", "--quiet",
                                    "--json", result, "--csv", os.path.join(scratch, "run")],
                                   timeout=args.seconds + 120)
            json_size = os.path.getsize(result) if os.path.exists(result) else 0
            csv_size = sum(os.path.getsize(os.path.join(scratch, f)) for f in os.listdir(scratch)
                           if f.endswith(".csv"))
            if json_size:
                data = json.load(open(result))
                print(f"           {'':<24} reasons {len(data['errors'])}: "
                      + ", ".join(f"{reason} {entry['count']:,}" for reason, entry in
                                  sorted(data["errors"].items(), key=lambda item: -item[1]["count"])[:4])
                      + f"; {data['verdict'][:90]}")
        if not report(name, (*figures, json_size, csv_size), args.seconds):
            failures.append(f"load {name}: a bound was exceeded")
    return failures


# -- the exporter ---------------------------------------------------------------------------------------

HALF_SENT = b"GET /probe?target=127.0.0.1:1 HTTP/1.1\r\nHost: soak\r\nX-Slow: "


class ExporterProcess:
    """``tpsharness exporter`` on a free port, its stdout and stderr in files; its
    memory, threads and fds read from /proc."""

    def __init__(self, *options):
        self.out = tempfile.TemporaryFile()
        self.err = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tpsharness", "exporter", "--listen", "127.0.0.1:0", *options],
            stdout=subprocess.PIPE, stderr=self.err, env=env, cwd=REPO)
        line = self.process.stdout.readline().decode()
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
        if not match:
            self.process.kill()
            raise SystemExit(f"the exporter did not start: {line!r}")
        self.address = ("127.0.0.1", int(match.group(1)))
        self.base = f"http://127.0.0.1:{self.address[1]}"
        self.first_line = len(line)
        self._copier = threading.Thread(target=self._copy_stdout, daemon=True)
        self._copier.start()

    def _copy_stdout(self):
        for chunk in iter(lambda: self.process.stdout.read(4096), b""):
            self.out.write(chunk)

    def status(self, field):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise SystemExit(f"no {field} in /proc/{self.process.pid}/status")

    def rss_mb(self):
        return self.status("VmRSS") / 1024

    def peak_rss_mb(self):
        return self.status("VmHWM") / 1024

    def threads(self):
        return self.status("Threads")

    def fds(self):
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def metric(self, name):
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=10) as response:
            text = response.read().decode()
        return sum(float(value) for value in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))

    def stop(self):
        """SIGTERM; the exit status and the sizes of its stdout and stderr."""
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        self._copier.join(5)
        return status, self.first_line + self.out.tell(), self.err.tell()


def exporter_part(args):
    from fake_tps import FakeTPS

    failures = []
    fake = FakeTPS()
    with fake.start_in_thread():
        exporter = ExporterProcess("--allow-target", "127.0.0.0/8", "--request-timeout", str(args.request_timeout))
        try:
            baseline_rss, baseline_fds, baseline_threads = exporter.rss_mb(), exporter.fds(), exporter.threads()

            held = []
            for number in range(args.idle):
                sock = socket.create_connection(exporter.address, timeout=10)
                if number % 2:
                    sock.sendall(HALF_SENT)
                held.append(sock)
            held_at = time.monotonic()
            time.sleep(0.2)     # pacing: let the exporter take them in before counting
            idle_threads, idle_fds, idle_rss = exporter.threads(), exporter.fds(), exporter.rss_mb()
            print(f"idle      {args.idle:,} connections held ({args.idle - args.idle // 2:,} silent, "
                  f"{args.idle // 2:,} half-sent): exporter threads {baseline_threads} -> {idle_threads}, "
                  f"fds {baseline_fds} -> {idle_fds}, RSS {baseline_rss:.1f} -> {idle_rss:.1f} MB")
            if idle_threads > baseline_threads + 2:
                failures.append(f"idle connections cost threads: {baseline_threads} -> {idle_threads}")

            request = (b"GET /probe?target=%s:%d&timeout=5 HTTP/1.1\r\nHost: soak\r\n\r\n" % (
                fake.address[0].encode(), fake.address[1]))
            statuses, elapsed = burst(exporter.address, request, args.burst, seconds=15)
            counts = {status: statuses.count(status) for status in sorted(set(statuses), key=str)}
            shown = ", ".join(f"{count:,} {status}" for status, count in counts.items())
            print(f"burst     {args.burst:,} scrapes at once: {shown} in {elapsed:.2f} s; "
                  f"{exporter.threads()} threads after")
            if "unanswered" in counts:
                failures.append(f"{counts['unanswered']} scrapes of the burst got no answer")
            if counts.get(200, 0) < 1:
                failures.append("no probe of the burst ran")

            closed, answers = 0, []
            for sock in held:
                sock.settimeout(max(0.1, held_at + args.request_timeout + 1 - time.monotonic()) + 5)
                try:
                    answer = sock.recv(4096)
                    while answer and sock.recv(4096):
                        pass
                    closed += 1
                    answers.append(answer[:12])
                except (TimeoutError, OSError):
                    pass
                sock.close()
            took = time.monotonic() - held_at
            timed_out = sum(answer.startswith(b"HTTP/1.1 408") for answer in answers)
            evicted = exporter.metric('tps_exporter_connections_dropped_total{reason="evicted"}')
            print(f"held      {closed:,} of {args.idle:,} closed by the exporter within {took:.1f} s "
                  f"({timed_out:,} with 408 Request Timeout, {evicted:.0f} evicted at --max-connections)")
            if closed != args.idle:
                failures.append(f"{args.idle - closed} held connections were never closed")
            if took > args.request_timeout + 1 + 1:
                failures.append(f"the held connections took {took:.1f} s to close")

            time.sleep(0.2)     # pacing: the exporter's last closes
            after_fds, after_rss, peak_rss = exporter.fds(), exporter.rss_mb(), exporter.peak_rss_mb()
            print(f"memory    exporter RSS {baseline_rss:.1f} MB baseline, {peak_rss:.1f} MB peak (VmHWM), "
                  f"{after_rss:.1f} MB after")
            print(f"fds       exporter {baseline_fds} baseline, {after_fds} after")
            if after_fds > baseline_fds + 2:
                failures.append(f"fds did not come back: {baseline_fds} -> {after_fds}")
            if peak_rss - baseline_rss > args.rss_limit:
                failures.append(f"peak RSS grew {peak_rss - baseline_rss:.1f} MB (limit {args.rss_limit} MB)")
        finally:
            status, out_size, err_size = exporter.stop()
    print(f"files     exporter stdout {out_size:,} bytes, stderr {err_size:,} bytes; exit status {status}")
    if status != 0:
        failures.append(f"the exporter exited {status}")
    if err_size > 4096:
        failures.append(f"the exporter wrote {err_size} bytes to stderr")
    return failures


PARTS = {"load": load_part, "exporter": exporter_part}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=sorted(PARTS), action="append",
                        help="which soak to run (repeatable; default: all)")
    parser.add_argument("--seconds", type=float, default=10.0, help="load: each scenario's run (10)")
    parser.add_argument("--devices", type=int, default=50, help="load: held devices (50)")
    parser.add_argument("--clients", type=int, default=10, help="load: clients (10)")
    parser.add_argument("--idle", type=int, default=1000, help="exporter: connections held idle")
    parser.add_argument("--burst", type=int, default=300, help="exporter: scrapes at once")
    parser.add_argument("--request-timeout", type=float, default=3.0,
                        help="exporter: its --request-timeout, by which the held connections end")
    parser.add_argument("--rss-limit", type=float, default=100.0,
                        help="exporter: MB its peak RSS may exceed its baseline by")
    args = parser.parse_args()
    failures = []
    for part in args.part or PARTS:
        print(f"-- {part}")
        failures += PARTS[part](args)
    for failure in failures:
        print(f"FAIL      {failure}")
    print("FAILED" if failures else "OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
