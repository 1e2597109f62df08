"""Soak: tpsharness run against hostile peers, with everything it keeps bounded.

    python tests/bench/bench_hostile_soak.py [--part load|all] [--seconds 10]

Each scenario runs in a process of its own, and prints its time, exit status, peak
RSS and the size of what it wrote (stdout, the JSON result, the CSV files), against
the bound each must stay within; the script exits 1 if one did not.

load:   ``tpsharness load`` against a TPS (tests/hostile_tps.py) that answers each
        private data with its own 12 kB reason phrase; that relays each message
        and a forged copy (a valid checksum, an impossible sender, pair, sequence
        number or send time), and forges the devices' answers; and that resets
        connections all through the run (a reset storm).

Further parts (the exporter's) are functions in PARTS, run by ``--part NAME`` or
``--part all``.
"""

import argparse
import json
import math
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

import _common  # noqa: F401  (puts the repo on sys.path)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))     # tests/

from hostile_tps import HostileTPS, forged  # noqa: E402
from tpsharness.protocol import reply  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
    done = subprocess.run([sys.executable, "-c", MEASURED, *args], cwd=ROOT, capture_output=True,
                          timeout=timeout, env=dict(os.environ, PYTHONPATH=ROOT))
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
    held = True
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
        held &= report(name, (*figures, json_size, csv_size), args.seconds)
    return held


PARTS = {"load": load_part}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--seconds", type=float, default=10.0, help="each scenario's run (10)")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args(argv)
    parts = PARTS.values() if args.part == "all" else [PARTS[args.part]]
    held = all([part(args) for part in parts])
    print("everything bounded" if held else "A BOUND WAS EXCEEDED")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
