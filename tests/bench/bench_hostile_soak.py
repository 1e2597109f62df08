"""Soak: the engines against hostile peers, bounded; prints peak RSS and file sizes.

    python tests/bench/bench_hostile_soak.py --part exporter [--idle 1000] [--burst 300]

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
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import _common  # noqa: F401  (puts the repo on sys.path)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from http_burst import burst  # noqa: E402  (tests/http_burst.py, shared with the tests)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
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


PARTS = {"exporter": exporter_part}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=sorted(PARTS), action="append",
                        help="which soak to run (repeatable; default: all)")
    parser.add_argument("--idle", type=int, default=1000, help="exporter: connections held idle")
    parser.add_argument("--burst", type=int, default=300, help="exporter: scrapes at once")
    parser.add_argument("--request-timeout", type=float, default=3.0,
                        help="exporter: its --request-timeout, by which the held connections end")
    parser.add_argument("--rss-limit", type=float, default=100.0,
                        help="exporter: MB its peak RSS may exceed its baseline by")
    args = parser.parse_args()
    failures = []
    for part in args.part or sorted(PARTS):
        print(f"-- {part}")
        failures += PARTS[part](args)
    for failure in failures:
        print(f"FAIL      {failure}")
    print("FAILED" if failures else "OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
