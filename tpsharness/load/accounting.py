"""What a load run counts: streams of (client, device) pairs, errors by reason.

Deliveries are counted at the device, never by acks (field servers coalesce them):
each (client, device) pair is a stream of sequence numbers, and the receiving side
tells a message in order, reordered (it arrived after a later one), duplicated (seen
before) or corrupted (its checksum fails). Lost is what was sent, not delivered and
not refused by the TPS, once the run drained.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .histograms import Latencies

if TYPE_CHECKING:
    from ..protocol import RegisterReply, Reply

MAX_MISSING = 65536         # gaps remembered per pair; a later arrival past them counts as duplicate


class Errors:
    """Counts by reason, each with its first example (SIPp's failure counters)."""

    __slots__ = ("counts", "examples")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, str] = {}

    def add(self, reason: str, example: str, count: int = 1) -> None:
        if reason not in self.counts:
            self.counts[reason] = 0
            self.examples[reason] = example
        self.counts[reason] += count

    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, dict[str, int | str]]:
        return {reason: {"count": count, "example": self.examples[reason]}
                for reason, count in self.counts.items()}


STATUS_IN_TEXT = re.compile(r"answered (?:status )?([1-5]\d\d)(?: ([A-Z][A-Za-z ]*?))?(?= after| without| to|$)")


def status_reason(reply_or_error: Reply | RegisterReply | Exception | str) -> str:
    """'404 Not Found': the reason a refusal counts under (from a Reply or an error)."""
    status = getattr(reply_or_error, "status", None)
    if status is not None:
        return f"{status} {getattr(reply_or_error, 'reason', '')}".strip()
    match = STATUS_IN_TEXT.search(str(reply_or_error))
    return f"{match.group(1)} {match.group(2) or ''}".strip() if match else "other"


def reason_of(message: str, timed_out: bool = False) -> str:
    """The reason an error counts under, from the sentence describing it."""
    if STATUS_IN_TEXT.search(message):
        return status_reason(message)
    if timed_out or "within" in message or "timed out" in message:
        return "timeout"
    if "refused" in message:
        return "refused"
    if "reset" in message:
        return "reset"
    if "not a TPS message" in message or "partial message" in message:
        return "protocol error"
    if "closed" in message:
        return "closed by the TPS"
    return "other"


class Streams:
    """Per-pair sequence state: the sender's next number, the receiver's view."""

    __slots__ = ("next_seq", "highest", "missing", "device_of", "client_of",
                 "delivered", "reordered", "duplicated", "corrupted")

    def __init__(self, client_of: list[int], device_of: list[int]) -> None:
        pairs = len(client_of)
        self.client_of = client_of          # pair -> client index
        self.device_of = device_of          # pair -> device index
        self.next_seq = [0] * pairs
        self.highest = [-1] * pairs
        self.missing: dict[int, set[int]] = {}                   # pair -> set of sequence numbers skipped over
        self.delivered = 0                  # unique messages received intact
        self.reordered = 0
        self.duplicated = 0
        self.corrupted = 0

    def receive(self, pair: int, seq: int) -> bool:
        """Account one intact message; True if it is delivered for the first time."""
        highest = self.highest[pair]
        if seq == highest + 1:
            self.highest[pair] = seq
        elif seq > highest:
            gap = self.missing.get(pair)
            if gap is None:
                gap = self.missing[pair] = set()
            if len(gap) + seq - highest - 1 <= MAX_MISSING:
                gap.update(range(highest + 1, seq))
            self.highest[pair] = seq
        else:
            gap = self.missing.get(pair)
            if gap is not None and seq in gap:
                gap.discard(seq)
                self.reordered += 1
            else:
                self.duplicated += 1
                return False
        self.delivered += 1
        return True

    def sent(self) -> int:
        return sum(self.next_seq)


class Counters:
    """Everything one worker counts during a run (added across workers)."""

    def __init__(self) -> None:
        self.latency = {phase: Latencies() for phase in ("register", "ack", "relay", "reply")}
        self.errors = Errors()
        self.acked = 0
        self.rejected = 0           # messages the TPS answered with a non-200 status
        self.replies = 0
        self.heartbeats = 0
        self.devices = 0            # registered
        self.clients = 0            # connected
