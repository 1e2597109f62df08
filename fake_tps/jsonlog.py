"""``python -m fake_tps --log FILE|-``: each Event as one JSON line, for a person who
runs the fake by hand against a camera's firmware and wants to see what happened.

A line is ``Event.to_dict()`` (time, kind, peer, then the event's fields), written and
flushed as the event happens. JSON escapes every control character, so ``--log -``
cannot drive a terminal; a line is at most MAX_LINE bytes whatever a peer sent (its
text is already cut in the Event; a line still too long keeps its time, kind and peer
and says how long it was). A log that cannot be written any more (a full disk, a
closed pipe) says so once on stderr and stops; the fake goes on serving.
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO

from .events import Event

MAX_LINE = 1024         # bytes of one line, its newline included


def event_line(event: Event) -> str:
    """The JSON line of ``event``, newline included, at most MAX_LINE bytes."""
    record = event.to_dict()
    line = json.dumps(record, ensure_ascii=True) + "\n"
    if len(line) <= MAX_LINE:
        return line
    cut = {"time": record["time"], "kind": record["kind"], "peer": str(record["peer"])[:100],
           "cut": f"a line of {len(line)} bytes, over {MAX_LINE}"}
    return json.dumps(cut, ensure_ascii=True) + "\n"


class JsonLines:
    """An ``on_event`` callable for FakeTPS that writes each Event to ``stream``."""

    def __init__(self, stream: IO[str], name: str, owned: bool) -> None:
        self.stream = stream
        self.name = name                # for the one line that says the log stopped
        self._owned = owned             # a file we opened (closed by close()), not stdout
        self.broken = False

    @classmethod
    def open(cls, target: str) -> JsonLines:
        """A log to the file ``target`` (appended to) or, for ``-``, standard output.
        OSError when the file cannot be opened."""
        if target == "-":
            return cls(sys.stdout, "standard output", owned=False)
        return cls(open(target, "a", encoding="ascii"), target, owned=True)

    def __call__(self, event: Event) -> None:
        if self.broken:
            return
        try:
            self.stream.write(event_line(event))
            self.stream.flush()
        except OSError as error:
            self.broken = True
            print(f"fake TPS: --log: cannot write to {self.name} ({error.strerror or error}); "
                  f"no more events are logged", file=sys.stderr, flush=True)
            if not self._owned:     # what is left in stdout's buffer must not fail at exit
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, self.stream.fileno())
                os.close(null)

    def close(self) -> None:
        if self._owned:
            try:
                self.stream.close()
            except OSError:
                pass
