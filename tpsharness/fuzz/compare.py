"""Comparing the server's observation points with the oracle's (the model's, or a
reference server's); classes and signatures.

A difference has a class (CLASSES), the step where it showed, and the abstract state
that matters there (``feature``: a heartbeat, a takeover, a send to an unknown uuid,
a split write...). Its signature is ``class/step kind/feature[/detail]``: findings
are deduplicated by it, ``--ignore`` names it, and the fixture file is named after it.
A crash with evidence (triage) is known by its cause instead: ``crash/<label>@<digest>``.
Against a reference server, replies are compared by their bytes too ("reply bytes").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from ..protocol import quote
from .observations import Garbage, Point, Relay, Reply, Seen
from .programs import Step
from .uuids import SELF, UNKNOWN
from .triage import Evidence, signature_of

if TYPE_CHECKING:
    from .executor import Run

Found = tuple[int, str, str, str, str, str]     # point number, actor, class, expected, got, detail

FIELD_READ = 4096      # what a field server reads at once: the most one relay of it carries

CLASSES = ("crash", "no answer", "wrong status", "reply bytes", "missing relay", "corrupted relay",
           "extra relay", "missing close", "unexpected close")


@dataclass
class Difference:
    """Where and how the server's behaviour left the model's."""

    cls: str
    step: int                   # index into the program's steps
    do: str
    feature: str
    actor: str | None           # whose connection showed it (None for a crash)
    expected: str               # what the model did there
    got: str                    # what the server did
    detail: str = ""            # in the signature too (the two statuses, for wrong status)
    point: int = 0              # which write of the step (1 for the second half of a split)
    evidence: Evidence | None = None    # a crash's, when the fuzzer owns the server (triage)
    oracle: str = "model"       # what the server was compared with: the model, or the reference
    side: str = "server"        # who crashed: the server, or the reference

    @property
    def signature(self) -> str:
        side = "reference-" if self.side == "reference" else ""
        if self.cls == "crash" and self.evidence is not None:
            return side + signature_of(self.evidence)
        parts = [side + self.cls.replace(" ", "-"), self.do, self.feature or "-"]
        return "/".join(parts + ([self.detail] if self.detail else []))

    @property
    def target(self) -> tuple[str, str]:
        """What a round shrinks towards: the class and step kind, or a crash's cause."""
        if self.cls == "crash" and self.evidence is not None:
            return (self.side + " crash", self.signature)
        return (self.cls if self.side == "server" else f"{self.side} {self.cls}", self.do)

    def describe(self) -> str:
        where = f"step {self.step + 1} ({self.do}, {self.feature})"
        if self.cls == "crash":
            who = "the reference crashed" if self.side == "reference" else "crash"
            if self.evidence is None:
                return f"{who} after {where}: {self.got}"
            how = self.got.split(" (")[0]       # the refusal's errno adds nothing to the evidence
            return f"{who} after {where}: {how}: {self.evidence.describe()}"
        return (f"{self.cls} at {where}{', second write' if self.point else ''}: "
                f"on {self.actor}'s connection the {self.oracle} showed {self.expected}, "
                f"the server {self.got}")


def slug(signature: str) -> str:
    """A file-name-safe form of a signature: ``wrong_status_register_first_split_200_400``."""
    return re.sub(r"[^a-z0-9]+", "_", signature.lower()).strip("_")


def first_difference(model_points: Sequence[Point], server_points: Sequence[Point],
                     acting: str | None, *, exact_tails: bool = True,
                     exact_replies: bool = False) -> Found | None:
    """The first difference between two lists of points, or None: per point, the acting
    actor's connection first, then the others by class order.

    ``exact_tails=False`` (the field model) compares an unfinished message by its
    presence only: where a field server cuts a large write depends on how TCP split it
    into reads, which differs between the in-process model and a server elsewhere, so
    its bytes would make timing a finding. For the same reason a relay longer than
    one field read is compared by its first FIELD_READ bytes: the rest is whatever
    that connection received next (a register reply's UtcTime, say). ``exact_replies``
    (two servers) compares replies by their bytes too, UtcTime aside."""
    for number, (expected, got) in enumerate(zip(model_points, server_points)):
        found = []
        for actor in sorted(set(expected) | set(got)):
            difference = _compare_seen(expected.get(actor, Seen()), got.get(actor, Seen()), exact_tails,
                                       exact_replies)
            if difference is not None:
                found.append((actor != acting, CLASSES.index(difference[0]), actor, difference))
        if found:
            _, _, actor, (cls, wanted, saw, detail) = min(found)
            return number, actor, cls, wanted, saw, detail
    return None


def _compare_seen(expected: Seen, got: Seen, exact_tails: bool = True,
                  exact_replies: bool = False) -> tuple[str, str, str, str] | None:
    """(class, expected text, got text, detail) for the first difference, or None."""
    for index in range(max(len(expected.messages), len(got.messages))):
        want = expected.messages[index] if index < len(expected.messages) else None
        have = got.messages[index] if index < len(got.messages) else None
        if want == have or (not exact_tails and _cut_alike(want, have)):
            if exact_replies and isinstance(want, Reply) and isinstance(have, Reply) and want.form != have.form:
                return ("reply bytes", *_where_apart(want.form, have.form), f"{want.status}")
            continue
        wanted = str(want) if want is not None else "nothing more"
        saw = str(have) if have is not None else ("a close" if got.closed else "nothing")
        if isinstance(want, Relay):
            if isinstance(have, Relay):
                return "corrupted relay", _relay_bytes(want), _relay_bytes(have), ""
            return "missing relay", wanted, saw, ""
        if isinstance(want, Reply):
            if have is None or isinstance(have, Relay):
                if got.closed and not expected.closed:
                    return "unexpected close", wanted, saw, ""
                return "no answer", wanted, saw, f"{want.status}"
            return "wrong status", wanted, saw, f"{_code(want)}:{_code(have)}"
        if isinstance(have, Relay):
            return "extra relay", wanted, saw, ""
        return "wrong status", wanted, saw, f"{_code(want)}:{_code(have)}"
    if expected.tail != got.tail if exact_tails else bool(expected.tail) != bool(got.tail):
        return ("corrupted relay", f"{len(expected.tail)} bytes of an incomplete message "
                f"({quote(expected.tail, 40)})", f"{len(got.tail)} bytes of one ({quote(got.tail, 40)})", "")
    if expected.closed != got.closed:
        if expected.closed:
            return "missing close", "a close", "the connection still open", ""
        return "unexpected close", "the connection kept open", "a close", ""
    return None


def _cut_alike(want: Relay | Reply | Garbage | None, have: Relay | Reply | Garbage | None) -> bool:
    """Two relays of one cut field read, completed by bytes that arrived later."""
    return (isinstance(want, Relay) and isinstance(have, Relay) and len(want.raw) == len(have.raw)
            and len(want.raw) > FIELD_READ and want.raw[:FIELD_READ] == have.raw[:FIELD_READ])


def _code(message: Reply | Relay | Garbage | None) -> str:
    if isinstance(message, Garbage):
        return "garbage"
    if isinstance(message, Relay):
        return "relay"
    if message is None:         # the model said something the server did not
        return "none"
    if message.error_num is not None and message.error_num != "200":
        return f"{message.status}-{message.error_num}"
    return str(message.status)


def _where_apart(expected: bytes, got: bytes, before: int = 16, after: int = 48) -> tuple[str, str]:
    """The two byte strings around their first difference, as "<n> B, from byte <i>: ..."."""
    at = next((index for index, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    start = max(0, at - before)

    def around(data: bytes) -> str:
        return f"a reply of {len(data)} B, from byte {start}: {data[start:at + after]!r}"
    return around(expected), around(got)


def _relay_bytes(relay: Relay) -> str:
    return f"relay {relay.raw[:120]!r}{'...' if len(relay.raw) > 120 else ''} ({len(relay.raw)} B)"


# -- the state that matters ----------------------------------------------------------------

class Holders:
    """Which actor holds which uuid, as the model's answers show (for signatures)."""

    def __init__(self) -> None:
        self.holder: dict[str, str] = {}            # uuid -> actor

    def held_by(self, actor: str | None) -> list[str]:
        return [uuid for uuid, who in self.holder.items() if who == actor]

    def update(self, run: Run, step: Step, points: Sequence[Point]) -> None:
        """Learn from a step's points: a 200 to a register or send claims a uuid; a close
        frees an actor's uuids."""
        for point in points:
            for actor, seen in point.items():
                if seen.closed:
                    self._forget(actor)
            if step.actor is None:
                continue
            answer = point.get(step.actor)
            if answer is None or not any(isinstance(m, Reply) and m.status == 200 and
                                         m.error_num in (None, "200") for m in answer.messages):
                continue
            if step.do == "register":
                serial = run.uuid_of(step.actor) if step.get("serial") is None else \
                    run.uuids.pool[step.get("serial")]
                self.holder[serial] = step.actor
            elif step.do == "send":
                self.holder[run.uuid_of(step.actor)] = step.actor
        if step.do == "close":
            self._forget(step.actor)

    def _forget(self, actor: str | None) -> None:
        for uuid in self.held_by(actor):
            del self.holder[uuid]


def feature(run: Run, holders: Holders, step: Step, kinds: Mapping[str, str]) -> str:
    """The abstract state of ``step`` that a signature names."""
    variant = step.get("variant")
    suffix = f"+{variant}" if variant not in (None, "plain") else ""
    if step.do == "connect":
        return "again" if step.actor in run.connected_before else "first"
    if step.do == "register":
        own = run.uuid_of(step.actor)
        serial = own if step.get("serial") is None else run.uuids.pool[step.get("serial")]
        holder = holders.holder.get(serial)
        mine = holders.held_by(step.actor)
        if holder == step.actor:
            state = "heartbeat"
        elif mine:
            state = "second-serial-" + ("held" if holder else "unknown")
        elif holder:
            state = "takeover"
        else:
            state = "first" if serial == own else "other-serial"
        return state + suffix
    if step.do == "send":
        own = run.uuid_of(step.actor)
        to = step.get("to")
        dest = run.uuids.dest(to, own)
        holder = holders.holder.get(dest)
        if to == SELF or dest == own:
            state = "to-self"
        elif to == UNKNOWN or holder is None:
            state = "to-unknown"
        else:
            state = f"to-{kinds[holder]}"
        other = holders.holder.get(own)
        if other is not None and other != step.actor:
            state += "+src-taken"
        if len(step.get("payload")) > 4096:
            state += "+large"
        return state + suffix
    if step.do == "send_raw":
        return str(step.get("raw").feature)
    return ""
