"""What a run says in one line, and the patterns its evidence shows.

The verdict follows the exit status: ``PASSED`` (0), ``FAILED: ...`` (1: a threshold,
by default an integrity one, failed), ``FAILED: the run could not be carried out:
...`` (2). A message that went wrong is named in it whatever the status: a pass
says which anomalies a user's threshold allowed, or that integrity was not judged.
"""

from __future__ import annotations

from typing import Any, Protocol

from .accounting import JUDGED


class LoadResult(Protocol):
    """What a verdict reads of a result (result.LoadResult has it)."""

    counters: dict[str, int]
    evidence: dict[str, Any]
    thresholds: list[tuple[str, bool, str]]
    aborted: str | None
    interrupted: bool

PROTOCOL_DOCS = "docs/protocol.md section 3"
LOAD_DOCS = "docs/load.md, 'Misrouted messages'"
PATTERN_SHARE = 0.9         # a pattern is named when it explains this share of its kind


def what_happened(kind: str, result: LoadResult) -> str:
    """The words after a count: '... reached the wrong device', '... lost'."""
    if kind == "misrouted":
        to_clients = result.evidence.get("misrouted_to_clients", 0)
        if to_clients and to_clients == result.counters.get("misrouted", 0):
            return "reached the wrong client"
        return "reached the wrong device or client" if to_clients else "reached the wrong device"
    return {"misattributed": "reached their device naming the wrong sender (SrcUuid)", "lost": "lost",
            "corrupted": "arrived corrupted", "duplicated": "arrived more than once",
            "reordered": "arrived out of order", "rejected": "refused by the TPS",
            "unanswered": "never reached their client", "unregistered": "could not register"}[kind]


OF_WHAT = {"unanswered": ("answers", "devices' answers"), "unregistered": ("", "devices")}
"""The kinds that count something else than messages: (the count of them all, if
not devices + unregistered, and what they are)."""


def _share(count: int, total: int) -> str:
    share = 100 * count / total if total else 0.0
    return f"{share:.1f}%" if share >= 0.1 or share == 0 else f"{share:.2g}%"


def anomalies(result: LoadResult) -> list[tuple[str, int]]:
    """(kind, count) of each kind of anomaly the run counted, in JUDGED order."""
    return [(kind, result.counters.get(kind, 0)) for kind in JUDGED if result.counters.get(kind, 0)]


def verdict(result: LoadResult) -> str:
    """The run in one line: 'PASSED', or 'FAILED: 163,677 of 353,112 messages
    (46.4%) reached the wrong device; 10 lost'."""
    sent = result.counters.get("sent", 0)
    failed = {expression for expression, held, _ in result.thresholds if not held}
    about: dict[str, list[tuple[str, bool, str]]] = {}
    for entry in result.thresholds:
        about.setdefault(_count_of(entry[0]), []).append(entry)
    parts: list[str] = []
    notes: list[str] = []
    if result.aborted:
        parts.append(f"the run could not be carried out: {result.aborted}")
    elif result.interrupted:
        parts.append("the run was interrupted (Ctrl-C) before its end")

    def counted(kind: str, count: int, first: bool) -> str:
        if kind in OF_WHAT:
            total_name, things = OF_WHAT[kind]
            total = (result.counters.get(total_name, 0) if total_name
                     else result.counters.get("devices", 0) + count)
            return f"{count:,} of {total:,} {things} {what_happened(kind, result)}"
        if first and count <= sent:
            return f"{count:,} of {sent:,} messages ({_share(count, sent)}) {what_happened(kind, result)}"
        if first:           # copies and forgeries can outnumber what was sent
            return f"{count:,} {what_happened(kind, result)}, for {sent:,} messages sent"
        return f"{count:,} {what_happened(kind, result)}"

    for index, (kind, count) in enumerate(anomalies(result)):
        said = counted(kind, count, index == 0)
        judged = about.get(kind, [])
        if any(expression in failed for expression, _, _ in judged):
            parts.append(said)
        elif judged:
            notes.append(f"{said}, within {judged[0][0]}")
        else:
            notes.append(f"{said}, not judged (integrity thresholds off)")
    for expression, held, observed in result.thresholds:
        if not held and _count_of(expression) not in JUDGED and not result.aborted:
            parts.append(f"{expression} ({measured(observed)})")
    if parts:
        return "FAILED: " + "; ".join(parts + notes)
    return "PASSED" + (f" ({'; '.join(notes)})" if notes else "")


def measured(observed: str) -> str:
    """'measured 12.5ms', or what was not measured: 'nothing measured'."""
    return observed if observed.startswith(("nothing", "not ")) else f"measured {observed}"


def _count_of(expression: str) -> str:
    head = ""
    for char in expression.strip():
        if not (char.isalnum() or char == "_"):
            break
        head += char
    return head


def diagnosis(result: LoadResult) -> list[str]:
    """One line per pattern the evidence shows, each pointing to the docs that explain it."""
    counters, evidence = result.counters, result.evidence
    lines: list[str] = []
    misrouted = counters.get("misrouted", 0)
    at_devices = misrouted - evidence.get("misrouted_to_clients", 0)
    same_read = evidence.get("misrouted_same_read", 0)
    if at_devices and same_read >= PATTERN_SHARE * at_devices:
        share = "every" if same_read == at_devices else f"{_share(same_read, at_devices)} of the"
        lines.append(f"{share} misrouted message{'s' if share != 'every' else ''} arrived in the same read "
                     "as, and after, a message for the device that got it: the TPS forwards a whole TCP read to the "
                     f"first DestUuid in it, so pipelined requests for several devices all reach the first "
                     f"({PROTOCOL_DOCS}; {LOAD_DOCS})")
    top = evidence.get("misrouted_top_receiver")
    if misrouted > 1 and evidence.get("misrouted_receivers") == 1 and top:
        lines.append(f"every misrouted message went to one {'client' if at_devices == 0 else 'device'}, "
                     f"{top[0]}")
    lost = counters.get("lost", 0)
    if lost and counters.get("acked", 0) >= counters.get("sent", 0) - counters.get("rejected", 0) > 0:
        lines.append("the TPS acknowledged every message it was sent, lost ones included: it accepted "
                     f"{lost:,} messages and never relayed them")
    return lines
