"""The pool of uuids a program's actors share, and the two destinations beyond it.

Steps name uuids by pool index (or UNKNOWN, or SELF); ``Uuids`` turns them into
strings for one run, fresh for every program.
"""

from __future__ import annotations

from dataclasses import dataclass, field

POOL = 3                    # uuids shared by every actor of a program
UNKNOWN = POOL              # a destination nobody holds
SELF = POOL + 1             # the sender's own uuid


@dataclass
class Uuids:
    """The pool's uuids for one program: fresh per program, the same for the model
    and the server under test (relays carry them and are compared byte for byte)."""

    prefix: str
    pool: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.pool = [f"{self.prefix}-u{index}" for index in range(POOL)]

    @property
    def unknown(self) -> str:
        return f"{self.prefix}-nobody"

    def dest(self, index: int, own: str) -> str:
        if index == UNKNOWN:
            return self.unknown
        if index == SELF:
            return own
        return self.pool[index]
