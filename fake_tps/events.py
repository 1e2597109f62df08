"""What the fake saw: its counters, and the notable things that happened, newest last.

Tests read both (the pytest plugin attaches the events of a test to its report);
``python -m fake_tps`` prints the counters when it stops. Events quote a peer's
text by a short prefix and are few (MAX_EVENTS), so a peer cannot make them grow.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import asdict, dataclass

log = logging.getLogger("fake_tps")

MAX_EVENTS = 200            # events kept
MAX_EVENT = 300             # characters of one event text kept (peers choose what it quotes)


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
