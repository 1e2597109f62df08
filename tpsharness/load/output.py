"""What a person sees: a live progress line, and the summary at the end."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

from .histograms import LATENCIES, decode, summary_ms
from .verdict import anomalies, measured, what_happened

if TYPE_CHECKING:
    from .result import LoadResult

PLAIN_EVERY = 5         # seconds between progress lines when the output is not a terminal
                        # (and one after the first second: the run has started)


def tick_figures(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The figures of one second: rate, totals (messages that went wrong so far among
    them), the second's relay p99, CPU."""
    span = snapshot.get("span") or 1.0
    histogram = decode(snapshot["relay"])
    return {"second": snapshot["t"], "rate": snapshot["sent"] / span,
            "delivered_rate": snapshot["delivered"] / span,
            "delivered": snapshot["total_delivered"], "errors": snapshot["total_errors"],
            "wrong": snapshot.get("total_wrong", 0),
            "p99": summary_ms(histogram)["p99"], "cpu": snapshot.get("cpu", 0.0)}


class Progress:
    """On a terminal one line rewritten each second; otherwise a line after the first
    second and then every 5 s. ``WRONG n`` counts the messages misrouted, corrupted,
    duplicated or reordered so far (lost ones are known only at the end)."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.shown = False

    def __call__(self, snapshot: dict[str, Any]) -> None:
        figures = tick_figures(snapshot)
        if not self.tty and figures["second"] % PLAIN_EVERY and figures["second"] != 1:
            return
        p99 = "-" if figures["p99"] is None else f"{figures['p99']:.2f} ms"
        wrong = f"  WRONG {figures['wrong']:,}" if figures["wrong"] else ""
        line = (f"{figures['second']:>4}s  sent {figures['rate']:>9,.0f}/s  delivered "
                f"{figures['delivered_rate']:>9,.0f}/s ({figures['delivered']:,})  errors "
                f"{figures['errors']:,}{wrong}  relay p99 {p99}  generator CPU {figures['cpu'] * 100:.0f}%")
        if self.tty:
            self.stream.write("\r" + line.ljust(130)[:130])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def configuration(result: LoadResult) -> str:
    """What the run was: '1000 devices, 100 clients, closed loop, window 8, 64 B payloads'."""
    config = result.config or {}
    mode = (f"open loop {config['rate']:g} messages/s" if config.get("rate") is not None
            else f"closed loop, window {config.get('window')}")
    return (f"{config.get('devices')} devices, {config.get('clients')} clients, {mode}, "
            f"{config.get('payload_size')} B payloads")


def _example(kind: str, example: dict[str, Any], refusals: bool = False) -> str:
    """One witness as a sentence; with ``refusals``, a message that never arrived may
    be one the TPS refused (a refusal does not say which message it was)."""
    if kind == "corrupted":
        return f"{example.get('at')} got a message from {example.get('src')}: {example.get('why')}"
    message = f"{example.get('sender')}'s message #{example.get('message')} for {example.get('to')}"
    if kind == "misrouted":
        return f"{message} reached {example.get('at')}"
    if kind == "misattributed":
        return f"{message} reached it under another SrcUuid"
    if kind == "lost":
        return f"{message} never arrived" + (" (lost, or one of those refused)" if refusals else "")
    if kind == "duplicated":
        return f"{message} arrived again"
    return f"{message} arrived after #{example.get('after')}"


SHOWN_EXAMPLES = 3


def summary_text(result: LoadResult) -> str:
    """The end-of-run summary: counts, rates, latencies per phase, what went wrong
    (each kind with its first witnesses, and the patterns), acks, errors, thresholds,
    the generator's CPU, and the verdict as its last line."""
    counters = result.counters
    lines = []
    workers = len(result.workers)
    lines.append(f"tpsharness load: {result.target or '?'}: {configuration(result)}, "
                 f"{result.duration:.1f} s, {workers} worker{'s' if workers != 1 else ''}")
    if result.interrupted:
        lines.append("interrupted (Ctrl-C): the figures below are partial")
    if result.aborted:
        lines.append(f"the run could not be carried out: {result.aborted}")
    lines.append("")
    lines.append(f"{'messages':<12}{'count':>12}{'per second':>14}")
    for name in ("sent", "acked", "delivered", "misrouted", "misattributed", "lost", "duplicated",
                 "reordered", "corrupted", "rejected", "answers", "replies", "unanswered"):
        if name in ("misattributed", "answers", "unanswered") and not counters.get(name):
            continue
        lines.append(f"{name:<12}{counters.get(name, 0):>12,}{result.rate(name):>14,.1f}")
    lines.append(f"{'devices':<12}{counters.get('devices', 0):>12,}   registered"
                 + (f", {counters['unregistered']:,} could not" if counters.get("unregistered") else "")
                 + (f", {counters.get('heartbeats', 0):,} heartbeats" if counters.get("heartbeats") else ""))
    lines.append(f"{'clients':<12}{counters.get('clients', 0):>12,}   connected")
    if counters.get("unsent"):
        lines.append(f"{'unsent':<12}{counters['unsent']:>12,}   due at the rate asked for, never sent: "
                     "the generator fell behind (add workers)")
    lines.append("")
    lines.append(f"{'latency ms':<12}{'count':>10}{'p50':>10}{'p90':>10}{'p99':>10}{'p99.9':>10}{'max':>10}")
    for phase in LATENCIES:
        why = result.unmeasurable(phase)
        if why:
            lines.append(f"{phase:<12}{'-':>10}   not measurable: acks cannot be matched to messages")
            continue
        f = result.latency(phase)
        lines.append(f"{phase:<12}{f['count']:>10,}{_ms(f['p50']):>10}{_ms(f['p90']):>10}"
                     f"{_ms(f['p99']):>10}{_ms(f['p99.9']):>10}{_ms(f['max']):>10}")
    if result.ack_note:
        lines.append(f"acks: {result.ack_note}")
    lines.append("")
    wrong = anomalies(result)
    if wrong:
        lines.append(f"what went wrong ({result.anomaly_count:,} messages):")
        for kind, count in wrong:
            examples = result.integrity.get(kind, [])[:SHOWN_EXAMPLES]
            lines.append(f"  {kind:<12}{count:>10,}   {what_happened(kind, result)}"
                         + (", e.g.:" if examples else " (see the errors)" if kind == "rejected" else ""))
            lines.extend(f"      {_example(kind, example, bool(counters.get('rejected')))}"
                         for example in examples)
        for line in result.diagnosis:
            lines.append(f"  pattern: {line}")
    if result.errors:
        lines.append(f"errors by reason ({result.error_count:,}):")
        for reason, entry in sorted(result.errors.items(), key=lambda item: -item[1]["count"]):
            lines.append(f"  {reason:<24}{entry['count']:>10,}   first: {entry['example']}")
    elif wrong:
        lines.append("no connection or status errors")
    else:
        lines.append("errors: none")
    if result.thresholds:
        lines.append("thresholds:")
        defaults = set(result.default_thresholds)
        held_defaults = [e for e, held, _ in result.thresholds if held and e in defaults]
        if held_defaults:
            lines.append(f"  ok    {', '.join(held_defaults)}   (integrity, by default)")
        for expression, held, observed in result.thresholds:
            if held and expression in defaults:
                continue
            note = ", by default" if expression in defaults else ""
            lines.append(f"  {'ok  ' if held else 'FAIL'}  {expression}   ({measured(observed)}{note})")
    lines.append("")
    for worker in result.workers:
        share = worker["cpu_seconds"] / worker["wall_seconds"] if worker["wall_seconds"] else 0.0
        per = (f", {worker['cpu_seconds'] / worker['delivered'] * 1e6:.1f} us per delivered relay"
               if worker.get("delivered") else "")
        lines.append(f"generator CPU, worker {worker['name']}: {share * 100:.0f}% of a core "
                     f"({worker['cpu_seconds']:.2f} s){per}")
    for worker in result.busy_workers():
        lines.append(f"WARNING: worker {worker['name']} used over 90% of a core: these figures "
                     "measure the generator, not the TPS; add workers (--workers, --tx)")
    lines.append(result.verdict)
    return "\n".join(lines)
