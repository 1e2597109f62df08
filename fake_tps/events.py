"""What the fake saw: its counters, its structured events, and the notable things
that happened as text, newest last.

Tests read the counters and the texts (the pytest plugin attaches the texts of a test
to its report); ``python -m fake_tps`` prints the counters when it stops. The texts
quote a peer's text by a short prefix and are few (MAX_EVENTS), so a peer cannot make
them grow. An ``Event`` is one structured record of each connect, register,
heartbeat, relay, reply, close (with its reason) and fault fired, handed to the
``on_event`` callable a FakeTPS was given, in the server's thread, as it happens;
its fields are short (a peer's text is quoted by a prefix of FIELD_LIMIT characters).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType


log = logging.getLogger("fake_tps")

MAX_EVENTS = 200            # events kept
MAX_EVENT = 300             # characters of one event text kept (peers choose what it quotes)
FIELD_LIMIT = 64            # characters of a peer's text an Event field keeps
KINDS = ("connect", "register", "heartbeat", "relay", "reply", "close", "fault")


@dataclass
class Stats:
    """What the fake saw, for tests and for the counters printed at exit."""

    connections: int = 0        # accepted, in all
    open_connections: int = 0
    registrations: int = 0      # first registrations of a serial on a connection
    heartbeats: int = 0         # the same serial again on the same connection
    replaced: int = 0           # older connections closed by a newer registration or takeover
    relays: int = 0
    not_found: int = 0
    bad_requests: int = 0       # 400 for unrecognised input; the connection stays
    protocol_errors: int = 0    # oversized (413) or, with strict_http, not HTTP (400): closed
    auth_failures: int = 0
    idle_closed: int = 0
    slow_closed: int = 0        # closed: a request not whole within request_timeout
    dropped: int = 0            # closed by us: output queue overflow, requests piling up
                                # under reply_delay, serial change

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class EventLog:
    """The last MAX_EVENTS event texts, each with a sequence number."""

    def __init__(self) -> None:
        self.events: deque[tuple[int, str]] = deque(maxlen=MAX_EVENTS)
        self.seq = 0

    def note(self, text: str) -> None:
        """Record ``text``, cut to MAX_EVENT characters (200 events of a peer's megabyte would stay)."""
        if len(text) > MAX_EVENT:
            text = f"{text[:MAX_EVENT]}... ({len(text)} characters)"
        self.seq += 1
        self.events.append((self.seq, text))
        log.info("%s", text)

    def since(self, seq: int) -> list[str]:
        """Event texts after sequence number ``seq``."""
        return [text for number, text in list(self.events) if number > seq]


@dataclass(frozen=True, slots=True)
class Event:
    """One thing the fake did or saw: ``kind`` (one of KINDS), the peer's 'host:port',
    and a few short fields (a serial, a status, a reason...), at ``time`` (epoch s)."""

    kind: str
    peer: str
    fields: Mapping[str, str | int] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, str | int | float]:
        """The event as one flat JSON-ready object: time, kind, peer, then the fields."""
        return {"time": round(self.time, 6), "kind": self.kind, "peer": self.peer, **self.fields}

    def __str__(self) -> str:
        return " ".join([self.kind, self.peer, *(f"{name}={value}" for name, value in self.fields.items())])


OnEvent = Callable[[Event], None]


def make_event(kind: str, peer: str, fields: Mapping[str, object]) -> Event:
    """An Event whose text fields are cut to FIELD_LIMIT characters (numbers stay)."""
    return Event(kind, peer, MappingProxyType({name: _short(value) for name, value in fields.items()}))


def _short(value: object) -> str | int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= FIELD_LIMIT else f"{text[:FIELD_LIMIT]}... ({len(text)} characters)"
