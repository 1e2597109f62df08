"""What the benchmarks share: alternate runs, best of each; RSS."""

import gc
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))


def best_of(rounds, *workloads):
    """Run the workloads alternately ``rounds`` times; the best time of each.

    Alternating in one process puts ours and the baseline under the same noise.
    """
    best = [float("inf")] * len(workloads)
    for _ in range(rounds):
        for i, workload in enumerate(workloads):
            gc.collect()
            start = time.perf_counter()
            workload()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def rss_bytes():
    """This process's resident set size now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes():
    """This process's peak resident set size (VmHWM). Not ``ru_maxrss``: Linux carries
    that over from the parent through fork and exec, so a child of a large parent
    would report the parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
