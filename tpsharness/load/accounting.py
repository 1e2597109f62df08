"""What a load run counts: streams of (client, device) pairs, errors by reason.

Deliveries are counted at the devices, never by acks (field servers coalesce them).
Each (client, device) pair is a stream of sequence numbers. A message that arrives
intact is ``delivered`` at its own device (``reordered`` too when a later one of its
stream arrived there first), ``misrouted`` at any other device, ``misattributed`` at
its own device under another SrcUuid than its sender's, and ``duplicated`` when it
had arrived before; one whose bytes are not a payload this run sent is
``corrupted``. ``lost`` is what was sent and never arrived anywhere, nor was refused
by the TPS, once the run drained: a corrupted arrival offsets it only when its bytes
were damaged and its header still names a message sent that had not arrived (once
per message); a forgery, a copy, or bytes at a client never do.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..text import printable
from .histograms import Latencies

if TYPE_CHECKING:
    from ..errors import TPSError
    from ..protocol import RegisterReply, Reply

INTEGRITY = ("misrouted", "misattributed", "lost", "corrupted", "duplicated", "reordered")
"""The ways a message can go wrong at the devices, in the order a verdict names them."""
JUDGED = (*INTEGRITY, "rejected", "unanswered", "unregistered")
"""What a run is held to by default: every way a message did not reach its device
intact, once and in order, a refusal by the TPS included; every device's answer
back at its client; every device registered."""

MAX_MISSING = 65536         # gaps remembered per pair; a later arrival past them counts as duplicate
MAX_MISSING_TOTAL = 1 << 18     # and in all (a set entry costs ~60 bytes: 16 MB at most)
MAX_EXAMPLES = 5            # witnesses kept per kind of anomaly
MAX_REASONS = 32            # distinct error reasons; the rest count as OTHER
OTHER = "other"
EXAMPLE_LIMIT = 200         # characters of an error's example
REASON_TEXT_LIMIT = 40      # characters of a peer's reason phrase in a reason's name


def clip(text: str, limit: int = EXAMPLE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


class Errors:
    """Counts by reason, each with its first example (SIPp's failure counters).

    Bounded whatever the TPS sends: at most MAX_REASONS reasons (the rest count as
    ``other``), each example cut to EXAMPLE_LIMIT characters.
    """

    __slots__ = ("counts", "examples")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, str] = {}

    def add(self, reason: str, example: str, count: int = 1) -> None:
        counts = self.counts
        if reason not in counts:
            if len(counts) >= MAX_REASONS - (OTHER not in counts):
                reason = OTHER
            if reason not in counts:
                counts[reason] = 0
                self.examples[reason] = clip(example)
        counts[reason] += count

    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, dict[str, int | str]]:
        return {reason: {"count": count, "example": self.examples[reason]}
                for reason, count in self.counts.items()}


def status_reason(status: int, reason: str) -> str:
    """'404 Not Found': the reason a refusal counts under (the peer's phrase made
    printable and short, so that a TPS cannot make a reason per message)."""
    return f"{status} {printable(reason, REASON_TEXT_LIMIT)}".strip()


# How the sentences of endpoint.py and device.py that are not timeouts (those carry
# ``timed_out``, checked first) begin after "TPS <address> ": what each one means. A
# peer's own text (a reason phrase, quoted bytes) only ever comes after these words.
_SENTENCES = (
    ("refused the connection", "refused"),
    ("reset the connection", "reset"),
    ("closed the connection", "closed by the TPS"),
    ("answered bytes that are not a TPS message", "protocol error"),
    ("sent bytes that are not a reply", "protocol error"),
    ("sent a request", "protocol error"),
)
_FLOOD = re.compile(r"sent [\d,]+ messages \(")       # an UnreadOverflow: messages nobody asked for
_STATUS = re.compile(r"answered (?:status )?([1-5]\d\d)\b(.*?)(?: after \d|$)", re.S)
_REFUSED_SERIAL = re.compile(r"refused .* with ErrorNum ")


def cause_of(error: TPSError, label: str) -> str:
    """The reason a failed connect or register counts under, by what happened: the
    timeout flag, else which of endpoint.py's sentences it is (read from its start,
    before any text a peer put in it)."""
    if error.timed_out:
        return "timeout"
    text = str(error.args[0]) if error.args else ""
    prefix = f"TPS {label} "
    if not text.startswith(prefix):
        if text.startswith("cannot resolve"):
            return "unresolved"
        return "connect failed" if text.startswith("cannot connect") else OTHER
    sentence = text[len(prefix):]
    for start, cause in _SENTENCES:
        if sentence.startswith(start):
            return cause
    status = _STATUS.match(sentence)
    if status:
        code = int(status.group(1))
        if code == 200:             # device.py's only 200 refusal: a reply that is not a register's
            return "200 without register JSON"
        return status_reason(code, status.group(2).strip())
    if _FLOOD.match(sentence):
        return "protocol error"
    if _REFUSED_SERIAL.match(sentence):
        return "register refused"
    return OTHER


class Streams:
    """Per-pair sequence state: the sender's next number, what arrived where.

    ``highest``/``missing`` say which numbers arrived anywhere (new or duplicated);
    ``at_destination`` is the highest that arrived at the pair's own device, against
    which a late arrival there is reordered. Arrivals at different devices come on
    different connections, so only the destination's order means anything.
    """

    __slots__ = ("next_seq", "highest", "at_destination", "missing", "missing_total", "device_of",
                 "client_of", "delivered", "arrived", "damaged", "reordered", "duplicated", "corrupted",
                 "misrouted", "misattributed", "examples")

    def __init__(self, client_of: list[int], device_of: list[int]) -> None:
        pairs = len(client_of)
        self.client_of = client_of          # pair -> client index
        self.device_of = device_of          # pair -> device index
        self.next_seq = [0] * pairs
        self.highest = [-1] * pairs
        self.at_destination = [-1] * pairs
        self.missing: dict[int, set[int]] = {}      # pair -> numbers skipped over, not arrived yet
        self.missing_total = 0
        self.delivered = 0                  # unique messages received intact at their device
        self.arrived = 0                    # unique messages received intact anywhere
        self.damaged = 0                    # unique messages that arrived only with damaged bytes
        self.reordered = 0
        self.duplicated = 0
        self.corrupted = 0
        self.misrouted = 0
        self.misattributed = 0
        # kind -> [(pair, seq, device index that got it, detail)], the first few
        self.examples: dict[str, list[tuple[int, int, int, int]]] = {kind: [] for kind in INTEGRITY}

    def _first_arrival(self, pair: int, seq: int) -> bool:
        """Note that message ``seq`` of ``pair`` arrived somewhere; True the first time."""
        highest = self.highest[pair]
        if seq > highest:
            if seq > highest + 1:
                self._skip(pair, highest + 1, seq)
            self.highest[pair] = seq
            return True
        gap = self.missing.get(pair)
        if gap is None or seq not in gap:
            return False
        gap.discard(seq)
        self.missing_total -= 1
        if not gap:
            del self.missing[pair]
        return True

    def _skip(self, pair: int, start: int, stop: int) -> None:
        gap = self.missing.get(pair)
        if gap is None:
            gap = self.missing[pair] = set()
        room = min(MAX_MISSING - len(gap), MAX_MISSING_TOTAL - self.missing_total)
        if room > 0:
            numbers = range(start, min(stop, start + room))
            gap.update(numbers)
            self.missing_total += len(numbers)
        elif not gap:
            del self.missing[pair]

    def receive(self, pair: int, seq: int) -> bool:
        """Account one intact message at its own device; True if it is delivered for
        the first time (in order or reordered)."""
        highest = self.highest[pair]
        if seq == highest + 1:              # the usual case, inline
            self.highest[pair] = seq
            self.at_destination[pair] = seq
        elif not self._first_arrival(pair, seq):
            self.duplicated += 1
            self._example("duplicated", pair, seq, self.device_of[pair])
            return False
        elif seq < self.at_destination[pair]:
            self.reordered += 1
            self._example("reordered", pair, seq, self.device_of[pair], self.at_destination[pair])
        else:
            self.at_destination[pair] = seq
        self.delivered += 1
        self.arrived += 1
        return True

    def misroute(self, pair: int, seq: int, device: int) -> bool:
        """Account one intact message of ``pair`` that arrived at ``device``, not its own;
        True the first time it arrived anywhere (then its sender may send again)."""
        self.misrouted += 1
        return self._arrived_wrong("misrouted", pair, seq, device)

    def misattribute(self, pair: int, seq: int, device: int) -> bool:
        """Account one intact message of ``pair`` at its own ``device`` under a SrcUuid
        that is not its sender's; True the first time it arrived anywhere."""
        self.misattributed += 1
        return self._arrived_wrong("misattributed", pair, seq, device)

    def _arrived_wrong(self, kind: str, pair: int, seq: int, device: int) -> bool:
        first = self._first_arrival(pair, seq)
        if first:
            self.arrived += 1
        self._example(kind, pair, seq, device)
        return first

    def damage(self, pair: int, seq: int) -> None:
        """Account a damaged payload at a device whose header names message ``seq`` of
        ``pair``: it arrived (not lost), once, however many damaged copies come."""
        if self._first_arrival(pair, seq):
            self.damaged += 1

    def _example(self, kind: str, pair: int, seq: int, device: int, detail: int = -1) -> None:
        examples = self.examples[kind]
        if len(examples) < MAX_EXAMPLES:
            examples.append((pair, seq, device, detail))

    def never_arrived(self, limit: int = MAX_EXAMPLES) -> list[tuple[int, int]]:
        """(pair, seq) of the first few messages sent that arrived nowhere."""
        found: list[tuple[int, int]] = []
        for pair, sent in enumerate(self.next_seq):
            gap = self.missing.get(pair, ())
            numbers = sorted(gap)[:limit] + list(range(self.highest[pair] + 1, min(sent, self.highest[pair] + 1 + limit)))
            found.extend((pair, seq) for seq in numbers[:limit - len(found)])
            if len(found) >= limit:
                break
        return found


class Counters:
    """Everything one worker counts during a run (added across workers)."""

    def __init__(self) -> None:
        self.latency = {phase: Latencies() for phase in ("register", "ack", "relay", "reply")}
        self.errors = Errors()
        self.acked = 0
        self.rejected = 0           # messages the TPS answered with a non-200 status
        self.replies = 0            # devices' answers back at their clients
        self.answers = 0            # answers the devices wrote
        self.unregistered = 0       # devices whose register failed
        self.heartbeats = 0
        self.devices = 0            # registered
        self.clients = 0            # connected


def reply_status(message: Reply | RegisterReply) -> str:
    """The reason a reply with a status other than 200 counts under."""
    return status_reason(message.status, message.reason)
