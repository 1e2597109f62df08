"""What a fuzzing run prints: the live progress line, the summary, its JSON form.

Both say where the time went (the phases of ``report.PHASES``), how many crashes
there were and how many distinct ones, and for each finding its program and, for a
crash, the evidence the server left.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable, TextIO

if TYPE_CHECKING:
    from .report import Finding, Report

Address = tuple[str, int]
PHASE_WORDS = {"explore": "exploring", "shrink": "shrinking", "confirm": "confirming", "restart": "restarting"}
OUTPUT_LINES = 4            # lines of a crashed server's last output in the summary


def phases_line(report: Report) -> str:
    """``explore 71% shrink 18% confirm 3% restart 8%, settle waits 4%``."""
    shares = report.shares()
    parts = " ".join(f"{name} {shares[name]:.0%}" for name in PHASE_WORDS)
    return f"{parts}, settle waits {shares['settle']:.0%}"


def progress_printer(stream: TextIO | None = None) -> Callable[[Report], None]:
    """The progress line, about once a second: rewritten on a terminal, else every 10 s."""
    stream = stream or sys.stderr
    live = stream.isatty()

    def show(report: Report) -> None:
        crashes = f" ({report.distinct_crashes} distinct crashes)" if report.distinct_crashes else ""
        line = (f"fuzz: {report.elapsed:5.0f} s  {report.programs} programs  {report.steps} steps  "
                f"{report.steps_per_second:.0f} steps/s (exploring {report.exploring_steps_per_second:.0f}/s)  "
                f"{len(report.findings)} findings{crashes}  {phases_line(report)}")
        if live:
            print(f"\r{line}", end="", file=stream, flush=True)
        elif int(report.elapsed) % 10 == 0:
            print(line, file=stream, flush=True)
    return show


def summary(report: Report, target: Address, model: str, paths: dict[str, str] | None = None,
            reference: Address | None = None, restarts: int = 0) -> dict[str, Any]:
    """The run as a JSON-able dict."""
    paths = paths or {}
    return {
        "target": f"{target[0]}:{target[1]}", "model": model,
        "reference": None if reference is None else f"{reference[0]}:{reference[1]}",
        "programs": report.programs, "steps": report.steps, "seconds": round(report.elapsed, 3),
        "steps_per_second": round(report.steps_per_second, 1),
        "exploring_steps_per_second": round(report.exploring_steps_per_second, 1),
        "phases": {name: round(seconds, 3) for name, seconds in report.phases.items()},
        "settle_waits": round(report.settle_waits, 3), "restarts": restarts,
        "crashes": report.crashes, "distinct_crashes": report.distinct_crashes,
        "crash_bins": dict(report.bins), "stopped_by": report.stopped_by, "unrepeatable": report.unrepeatable,
        "findings": [_finding(signature, finding, report, paths.get(signature))
                     for signature, finding in report.findings.items()],
    }


def _finding(signature: str, finding: Finding, report: Report, path: str | None) -> dict[str, Any]:
    evidence = finding.evidence
    return {"signature": signature, "class": finding.difference.cls, "description": finding.difference.describe(),
            "program": [str(step) + ("" if ran else "  (skipped)") for step, ran in finding.listing()],
            "found_after": round(finding.found_after, 3), "seen": report.bins.get(signature, 1),
            "evidence": None if evidence is None else evidence.as_dict(), "fixture": path}


def print_summary(report: Report, target: Address, model: str, paths: dict[str, str] | None = None,
                  self_test: bool = False, stream: TextIO | None = None, reference: Address | None = None,
                  restarts: int = 0) -> None:
    stream = stream or sys.stdout
    paths = paths or {}
    if sys.stderr.isatty():
        print(file=sys.stderr)
    what = "the bundled fake" if self_test else f"{target[0]}:{target[1]}"
    if reference is not None:
        what += f" against the reference {reference[0]}:{reference[1]}"
    elif self_test:
        what += " against itself"
    print(f"tpsharness fuzz: {what}, model {model}: {report.programs} programs, {report.steps} steps "
          f"in {report.elapsed:.1f} s ({report.steps_per_second:.0f} steps/s, each also run on the "
          f"model), stopped by {report.stopped_by}", file=stream)
    print(f"  time: {_times(report, restarts)}", file=stream)
    if report.crashes:
        print(f"  {report.crashes} program(s) crashed it: {report.distinct_crashes} distinct crashes", file=stream)
    if report.unrepeatable:
        print(f"  {len(report.unrepeatable)} difference(s) did not repeat with a patient settle "
              f"window and were dropped: {', '.join(report.unrepeatable)}", file=stream)
    if not report.findings:
        print("  found nothing", file=stream)
        return
    print(f"  {len(report.findings)} finding(s):", file=stream)
    for signature, finding in report.findings.items():
        seen = report.bins.get(signature, 0)
        again = f", seen {seen} times" if seen > 1 else ""
        print(f"\n  {signature}  (after {finding.found_after:.1f} s{again})", file=stream)
        print(f"    {finding.difference.describe()}", file=stream)
        for number, (step, ran) in enumerate(finding.listing(), 1):
            print(f"    {number:3}. {step}{'' if ran else '  (skipped: its connection was closed)'}",
                  file=stream)
        evidence = finding.evidence
        if evidence is not None:
            print(f"    evidence: {evidence.status}; {evidence.kind}", file=stream)
            if evidence.line and evidence.line != evidence.kind:
                print(f"      {evidence.line}", file=stream)
            for number, frame in enumerate(evidence.frames):
                print(f"      #{number} {frame}", file=stream)
            from .triage import hint
            advice = hint(evidence)
            if advice:
                print(f"    hint: {advice}", file=stream)
            if evidence.tail:
                print("    its last output:", file=stream)
                for line in evidence.tail[-OUTPUT_LINES:]:
                    print(f"      {line}", file=stream)
        if signature in paths:
            print(f"    written to {paths[signature]}", file=stream)


def _times(report: Report, restarts: int) -> str:
    shares = report.shares()
    parts = []
    for name, word in PHASE_WORDS.items():
        seconds = report.phases[name]
        text = f"{word} {seconds:.1f} s ({shares[name]:.0%}"
        if name == "explore":
            text += f", {report.exploring_steps_per_second:.0f} steps/s"
        if name == "restart" and restarts:
            text += f", {restarts} restarts"
        parts.append(text + ")")
    return ", ".join(parts) + f"\n        of which waiting out settle windows {report.settle_waits:.1f} s " \
                              f"({shares['settle']:.0%})"
