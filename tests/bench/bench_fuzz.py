"""tpsharness fuzz: false positives, exploring speed, where the time goes, time to find each planted bug.

    python tests/bench/bench_fuzz.py              # 60 s self-tests, 5 seeds per fault
    python tests/bench/bench_fuzz.py --quick      # seconds: that it still runs

1. The fake (a process) against the model for --seconds: must find nothing; again
   with every core kept busy by spinning processes (a slow server must not look
   like a wrong one). Prints steps/s: each step runs on the server and the model.
2. Exploring steps/s, side by side, against an out-of-process fake: the default
   fake with --model strict, and a field-like fake with --model field.
3. The time share of each phase (exploring, shrinking, confirming, restarting, and
   the settle waits within them) in a run against a fake that crashes often (both
   planted crashes, through a server command).
4. Each planted fault, fuzzed through --server-cmd until the first finding, over
   --seeds seeds: the median time until the first difference was seen and until it
   was shrunk and confirmed, and the minimal program's length (goal: <= 30 s,
   <= 6 steps; the planted crashes <= 3).
5. With --field-profile: the fake's field profile (a process, python -m fake_tps
   --profile field) against --model field for --seconds, seeds 1 to --seeds: must
   find nothing (issue 17), and nothing else runs.
"""

import argparse
import os
import statistics
import subprocess
import sys
from typing import Any

from _common import best_of  # noqa: F401  (puts the worktree on sys.path)

from tpsharness.fuzz.process import ServerProcess
from tpsharness.fuzz.runner import Fuzzer, Options, Report
from tpsharness.fuzz.summary import phases_line

FAKE = f"exec {sys.executable} -m fake_tps --port {{port}}"
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
PLANTED = ["forget-after-heartbeat", "misroute-relays", "drop-relays-after-3", "takeover-closes-newer",
           "die-on-dangling-entry", "die-on-auth-code-type", "die-on-long-header"]
CRASHES = ["die-on-auth-code-type", "die-on-long-header"]


def fuzz(command: str, **options: Any) -> Report:
    server = ServerProcess(command)
    server.start()
    try:
        return Fuzzer(Options(target=server.address, server=server, **options)).run()
    finally:
        server.close()


def spinners(count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` processes that keep a core busy each."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def self_test(seconds: float, label: str, seed: int) -> Report:
    report = fuzz(FAKE, budget=seconds, seed=seed)
    print(f"self-test {label:16} {report.programs:6} programs {report.steps:7} steps in "
          f"{report.elapsed:5.1f} s: {report.steps_per_second:6.0f} steps/s (each also run on the model), "
          f"{len(report.findings)} findings, {len(report.unrepeatable)} unrepeatable", flush=True)
    for finding in report.findings.values():
        print(f"    FALSE POSITIVE {finding.difference.describe()}")
    return report


def exploring(seconds: float, seed: int) -> None:
    """Exploring steps/s against the default fake (strict) and a field-like one (field)."""
    rates = []
    for label, command, model in (("strict", FAKE, "strict"), ("field", f"{FAKE} --profile field", "field")):
        report = fuzz(command, budget=seconds, seed=seed, model=model)
        rates.append(f"--model {label}: {report.exploring_steps_per_second:4.0f} steps/s "
                     f"({len(report.findings)} findings)")
    print(f"exploring (out-of-process fake)  {'   '.join(rates)}   (goal for field: >= 300)", flush=True)


def crash_heavy(seconds: float, seed: int) -> None:
    """Where the time goes when the server crashes often."""
    command = f"{FAKE} " + " ".join(f"--fault {fault}" for fault in CRASHES)
    report = fuzz(command, budget=seconds, seed=seed)
    print(f"phases, crashing fake {report.elapsed:5.1f} s: {phases_line(report)}; {report.crashes} crashes, "
          f"{report.distinct_crashes} distinct; exploring {report.exploring_steps_per_second:.0f} steps/s",
          flush=True)


def time_to_find(fault: str, seeds: int, budget: float) -> None:
    seen, done, lengths, missed = [], [], [], 0
    for seed in range(1, seeds + 1):
        report = fuzz(f"{FAKE} --fault {fault}", budget=budget, seed=seed, max_findings=1)
        if not report.findings:
            missed += 1
            continue
        finding, = report.findings.values()
        seen.append(finding.found_after)
        done.append(report.elapsed)
        lengths.append(sum(1 for _, ran in finding.listing() if ran))
    if not seen:
        print(f"find {fault:28} not found in {seeds} runs of {budget:g} s", flush=True)
        return
    print(f"find {fault:28} median first seen {statistics.median(seen):5.1f} s, shrunk and confirmed "
          f"{statistics.median(done):5.1f} s (max {max(done):5.1f} s), minimal program "
          f"{min(lengths)}-{max(lengths)} steps, {missed} of {seeds} runs missed it", flush=True)


def field_profile(seconds: float, seeds: int) -> None:
    """The field profile against the field model, one run per seed: no finding."""
    for seed in range(1, seeds + 1):
        report = fuzz(f"{FAKE} --profile field", budget=seconds, seed=seed, model="field")
        print(f"field profile seed {seed}: {report.programs:6} programs {report.steps:7} steps in "
              f"{report.elapsed:5.1f} s: {report.steps_per_second:6.0f} steps/s, "
              f"{len(report.findings)} findings, {len(report.unrepeatable)} unrepeatable", flush=True)
        for finding in report.findings.values():
            print(f"    FALSE POSITIVE {finding.difference.describe()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each self-test run")
    parser.add_argument("--seeds", type=int, default=5, help="runs per planted fault")
    parser.add_argument("--budget", type=float, default=90.0, help="budget of each fault run")
    parser.add_argument("--quick", action="store_true", help="a few seconds of everything")
    parser.add_argument("--skip-load", action="store_true", help="no run under CPU load")
    parser.add_argument("--field-profile", action="store_true",
                        help="only the field profile against --model field, seeds 1 to --seeds")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.seeds, args.budget = 3.0, 1, 60.0
    if args.field_profile:
        field_profile(args.seconds, args.seeds)
        return
    self_test(args.seconds, "idle", seed=1)
    if not args.skip_load:
        busy = spinners(os.cpu_count() or 2)
        try:
            self_test(args.seconds, "under CPU load", seed=2)
        finally:
            for process in busy:
                process.kill()
                process.wait()
    exploring(args.seconds, seed=3)
    crash_heavy(args.seconds, seed=4)
    for fault in (["takeover-closes-newer", "die-on-long-header"] if args.quick else PLANTED):
        time_to_find(fault, args.seeds, args.budget)


if __name__ == "__main__":
    main()
