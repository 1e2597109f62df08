"""What a fuzzing run found and where its time went: findings, counters, phase times.

``Finding`` is the smallest program seen for one signature; ``Report`` is the run so
far. Every moment of a run belongs to one phase of PHASES (``Clock``), so the report
says how long exploring, shrinking, confirming and restarting took.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field

from .compare import Difference
from .differential import Outcome
from .programs import Program, Step
from .triage import Evidence

PHASES = ("explore", "shrink", "confirm", "restart")


@dataclass
class Finding:
    """The smallest program seen for one signature, and what it showed."""

    signature: str
    outcome: Outcome            # the differential run of that program
    confirmed: bool = False
    found_after: float = 0.0    # seconds into the run

    @property
    def difference(self) -> Difference:
        """What the server and the oracle disagreed on."""
        assert self.outcome.difference is not None     # a Finding is made of a difference
        return self.outcome.difference

    @property
    def evidence(self) -> Evidence | None:
        """A crash's evidence (with a server command), else None."""
        return self.difference.evidence

    @property
    def program(self) -> Program:
        """The smallest program seen showing it."""
        return self.outcome.program

    def listing(self) -> list[tuple[Step, bool]]:
        """(step, whether it ran) for the program's steps up to the one that diverged."""
        last = self.difference.step
        return [(step, index in self.outcome.model_points)
                for index, step in enumerate(self.program.steps[:last + 1])]

    def size(self) -> tuple[int, int, int]:
        """How big the program is (steps run, steps, characters): smaller is simpler."""
        return (len(self.outcome.model_points), len(self.program.steps), len(str(self.program)))


@dataclass
class Report:
    """The run so far: counters, findings, the differences that did not repeat, and
    where the time went."""

    findings: dict[str, Finding] = field(default_factory=dict)      # signature -> Finding (confirmed)
    unrepeatable: list[str] = field(default_factory=list)          # signatures seen once, not again
    programs: int = 0
    steps: int = 0              # steps run on the server (each also ran on the model)
    elapsed: float = 0.0
    crashes: int = 0            # programs that crashed the server (or the reference)
    bins: Counter[str] = field(default_factory=Counter)            # crash signature -> times seen
    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))  # seconds
    phase_steps: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    settle_waits: float = 0.0   # seconds spent waiting out settle windows and graces (within phases)
    stopped_by: str = ""
    ignored: set[str] = field(default_factory=set)     # the --ignore signatures the run met
    trace: hashlib._Hash = field(default_factory=hashlib.sha256, repr=False)    # every program and outcome

    @property
    def digest(self) -> str:
        """A fingerprint of the programs run and what each showed: equal runs, equal digests."""
        return self.trace.hexdigest()

    @property
    def steps_per_second(self) -> float:
        """Steps run on the server per second of the run (each also ran on the model)."""
        return self.steps / self.elapsed if self.elapsed else 0.0

    @property
    def exploring_steps_per_second(self) -> float:
        """Steps per second while exploring (generating and running new programs)."""
        seconds = self.phases["explore"]
        return self.phase_steps["explore"] / seconds if seconds else 0.0

    @property
    def distinct_crashes(self) -> int:
        """Crash findings: one per root cause."""
        return sum(1 for finding in self.findings.values() if finding.difference.cls == "crash")

    def shares(self) -> dict[str, float]:
        """Each phase's share of the run (0..1), and the settle waits' (part of the others)."""
        total = sum(self.phases.values()) or 1.0
        shares = {name: seconds / total for name, seconds in self.phases.items()}
        shares["settle"] = self.settle_waits / total
        return shares


class Clock:
    """The phase each moment of the run belongs to."""

    def __init__(self, phases: dict[str, float]) -> None:
        self.phases = phases
        self.current: str | None = None
        self.since = 0.0

    def switch(self, name: str | None) -> str | None:
        """Charge the time since the last switch to the current phase; the previous one."""
        now = time.monotonic()
        previous = self.current
        if previous is not None:
            self.phases[previous] += now - self.since
        self.current, self.since = name, now
        return previous
