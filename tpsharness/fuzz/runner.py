"""The fuzzing loop: hypothesis generates and shrinks programs; we keep the findings.

Each round is one hypothesis search with its own seed: it runs programs until one
shows a difference whose signature is new, and shrinks it with hypothesis's own
shrinker. The round's target is that difference's class and step kind (a crash's
cause, when triage knows it): while it shrinks, a candidate that shows another
counts as passing, so the target shrinks on its own (the other turns up as a later
round's target), but the state that matters (a split write, a takeover) may
simplify; the finding gets the signature of the smallest program. The smallest
failing program seen is kept, so a search cut short by the budget still leaves
one. After the round it is run once more with a patient settle window: only a
difference that repeats is a finding (timing alone never makes one). Found
signatures are ignored by the next rounds (a crash already binned is not shrunk
again), until the budget, the program count or the finding count runs out.

With a server command, each crash is triaged (``triage``): the server's exit status
and last output name its cause, which bins it. Every moment of the run belongs to
one phase (``PHASES``), so the report says where the time went.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import dataclass, replace
from typing import Callable

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisWarning

from ..errors import Divergence, Interrupted, InvalidArgument
from .compare import Difference, slug
from .differential import Address, Outcome, crash, differential
from .executor import ServerSettle
from .process import ServerProcess
from .programs import Program, Step, programs
from .report import Clock, Finding, Report
from .seeds import seeded
from .stopping import SWITCH
from .triage import Evidence, dying, triage
from .values import Hostile

__all__ = ["Fuzzer", "Options", "Finding", "Report"]

PATIENT_FACTOR = 10             # the confirming run waits this many times longer
OVERRUN = 5.0                   # seconds a program or a confirmation may run past the budget
TRIAGE_WAIT = 5.0               # seconds a crashed server may take to exit (a sanitizer symbolizes)
OUTPUT_WAIT = 0.5               # then for its output to end
SHRINK_RUNS = 400               # programs one round may run shrinking its target
CRASH_SHRINK_RUNS = 15          # ... when each costs a restart (a crash of a server we run)


class _Stop(BaseException):
    """Ends a hypothesis search at once (budget spent, or a crash that cannot be
    shrunk): a BaseException, so that hypothesis does not count it as a failure."""


_DIVERGENCE_TYPES: dict[str, type[Divergence]] = {}


def _divergence_type(signature: str) -> type[Divergence]:
    if signature not in _DIVERGENCE_TYPES:
        _DIVERGENCE_TYPES[signature] = type(f"Divergence_{slug(signature)}", (Divergence,), {})
    return _DIVERGENCE_TYPES[signature]


@dataclass
class Options:
    """What to fuzz and how long; ``target`` is (host, port)."""

    target: Address
    model: str = "strict"
    budget: float = 60.0
    max_programs: int | None = None
    max_findings: int | None = None
    max_steps: int = 10
    seed: int = 0
    ignore: tuple[str, ...] = ()
    settle: float = 0.25        # seconds to wait for what the model produced
    grace: float = 0.002        # then at most this long for anything extra
    server: ServerProcess | None = None     # restarted after a crash, its crashes triaged
    reference: Address | None = None        # a second server: the server is compared with it
    reference_server: ServerProcess | None = None     # the reference's command, restarted too
    seeds: tuple[Program, ...] = ()         # programs to start from (--seeds)
    progress: Callable[[Report], None] | None = None    # called about once a second

    def __post_init__(self) -> None:
        from .model import MODELS
        if self.model not in MODELS:
            raise InvalidArgument(f"model must be one of {', '.join(MODELS)}, not {self.model!r}")
        if not (math.isfinite(self.budget) and self.budget > 0):
            raise InvalidArgument(f"the budget must be a finite number of seconds above 0, "
                                  f"not {self.budget!r}")
        if not (math.isfinite(self.settle) and self.settle > 0):
            raise InvalidArgument(f"the settle window must be a finite number of seconds above 0, "
                                  f"not {self.settle!r}")


class Fuzzer:
    """Runs rounds of hypothesis searches against ``options.target``."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.report = Report()
        self.ignored = set(options.ignore)
        self.target: tuple[str, str] | None = None     # this round's (class, step kind)
        self.best: Finding | None = None                # the smallest program showing it
        self.shrink_runs = 0                            # programs this round ran shrinking it
        self.rng = random.Random(options.seed)
        self.started = 0.0
        self.deadline = 0.0
        self.clock = Clock(self.report.phases)
        self.settle = ServerSettle(options.settle, options.grace)
        self.patient = ServerSettle(options.settle * PATIENT_FACTOR, options.grace * PATIENT_FACTOR,
                                    patient=True)
        self.reference_settles = (ServerSettle(options.settle, options.grace),
                                  ServerSettle(options.settle * PATIENT_FACTOR,
                                               options.grace * PATIENT_FACTOR, patient=True))
        self._last_progress = 0.0
        self._stop_reason: str | None = None
        self._fatal: Exception | None = None       # what made the run fail, raised at its end
        self._survived: set[tuple[str, ...]] = set()    # (side, report) a server printed and outlived
        self._clean: dict[str, int] = {}                # side -> its output's mark (see _clean_mark)

    def run(self) -> Report:
        """Fuzz until the budget, the program count or the finding count runs out; the Report."""
        self.started = time.monotonic()
        self.deadline = self.started + self.options.budget
        round_number = 0
        try:
            while self._stop_reason is None and not self._signalled():
                round_number += 1
                self.clock.switch("explore")
                self._round(self.options.seed * 1000 + round_number)
                self._confirm()
        except _Stop:           # raised outside a search: a restart failed while confirming
            pass
        except Interrupted:     # a signal, outside a program (see stopping)
            self._signalled()
        finally:
            self.clock.switch(None)
            self._tally_settles()
            self.report.elapsed = time.monotonic() - self.started
            self.report.stopped_by = self._stop_reason or "budget"
        if self._fatal is not None:
            raise self._fatal
        return self.report

    # -- one hypothesis search ---------------------------------------------------------

    def _round(self, round_seed: int) -> None:
        @seed(round_seed)
        @settings(max_examples=10 ** 9, deadline=None, database=None, derandomize=False,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink],
                  report_multiple_bugs=False, verbosity=Verbosity.quiet, print_blob=False)
        @given(self._strategy())
        def search(program: Program) -> None:
            self._check(program)

        try:
            with warnings.catch_warnings():     # e.g. "overly large repr" of a large payload
                warnings.simplefilter("ignore", HypothesisWarning)
                search()
        except _Stop:
            pass
        except Exception:       # the shrunk Divergence (or hypothesis's Flaky): recorded already
            pass

    def _strategy(self) -> st.SearchStrategy[Program]:
        """Programs to run: generated ones, and as many made from a seed if there are seeds."""
        generated = programs(self.options.max_steps)
        if not self.options.seeds:
            return generated
        return st.one_of(seeded(self.options.seeds, self.options.max_steps), generated)

    def _check(self, program: Program) -> None:
        self._should_stop()
        if self.best is not None:
            self.shrink_runs += 1
            crash = self.best.difference.cls == "crash"
            if self.shrink_runs > (CRASH_SHRINK_RUNS if crash else SHRINK_RUNS):
                raise _Stop()       # the round ends with the smallest program so far
        outcome = self._execute(program, self.settle, self.reference_settles[0])
        difference = outcome.difference
        if difference is None or difference.signature in self.ignored:
            if difference is not None and difference.signature in self.options.ignore:
                self.report.ignored.add(difference.signature)
            return
        signature = difference.signature
        key = difference.target
        crash_ends_run = difference.cls == "crash" and self._owner(difference) is None
        if self.target is None or crash_ends_run:
            self.target = key
        elif key != self.target:
            return
        finding = Finding(signature, outcome, found_after=time.monotonic() - self.started)
        if self.best is None or self.best.difference.target != key:
            self.best = finding
            self.clock.switch("shrink")     # from here on this round shrinks
        elif finding.size() < self.best.size():
            finding.found_after = self.best.found_after
            self.best = finding
        if crash_ends_run:
            self.best.confirmed = True      # the server is gone: nothing more can run
            self._stop_reason = "crash"
            raise _Stop()
        raise _divergence_type(f"{key[0]}/{key[1]}")(difference.describe())

    def _owner(self, difference: Difference) -> ServerProcess | None:
        """The process of the side that crashed, if the fuzzer runs it."""
        if difference.side == "reference":
            return self.options.reference_server
        return self.options.server

    def _execute(self, program: Program, settle: ServerSettle, reference_settle: ServerSettle) -> Outcome:
        prefix = f"fz{self.rng.getrandbits(32):08x}"
        sides = 2 if self.options.reference is not None else 1
        budget = 10.0 + sides * len(program.steps) * (settle.timeout * 2 + 2.0)
        budget = min(budget, max(self.deadline + OVERRUN - time.monotonic(), 0.1))
        server, reference_server = self.options.server, self.options.reference_server
        target = server.address if server is not None else self.options.target     # a restart may move it
        reference = reference_server.address if reference_server is not None else self.options.reference
        owned = ((server, "server"), (reference_server, "reference"))
        marks = [self._clean_mark(process, side) for process, side in owned]
        restarts = [process.restarts if process is not None else 0 for process, _ in owned]
        try:
            outcome = differential(program, target, self.options.model, settle, prefix, budget,
                                   reference, reference_settle)
        except TimeoutError:        # the run's end (plus OVERRUN) came first
            self._stop_reason = self._stop_reason or "budget"
            raise _Stop() from None
        except Interrupted:
            self._signalled()
            raise _Stop() from None
        checked = [process.output_mark() if process is not None else 0 for process, _ in owned]
        clean = [self._dying(outcome, process, mark, side) for (process, side), mark in zip(owned, marks)]
        self.report.programs += 1
        self.report.steps += outcome.steps_run
        if self.clock.current is not None:
            self.report.phase_steps[self.clock.current] += outcome.steps_run
        difference = outcome.difference
        crashed = difference is not None and difference.cls == "crash"
        self.report.crashes += crashed
        server_crashed = crashed and difference is not None and difference.side == "server"
        reference_crashed = outcome.reference_crash is not None
        self._recover(server, server_crashed, difference if server_crashed else None, marks[0])
        self._recover(reference_server, reference_crashed,
                      outcome.reference_crash if difference is outcome.reference_crash else None, marks[1])
        for (process, side), restarted, was_clean, position in zip(owned, restarts, clean, checked):
            if process is not None and process.restarts != restarted:
                self._clean[side] = process.output_mark()
            elif was_clean:
                self._clean[side] = position
        if crashed and difference is not None:
            self.report.bins[difference.signature] += 1
        self.report.trace.update(f"{program}\n{difference and difference.signature}\n".encode())
        self._tick()
        return outcome

    def _clean_mark(self, process: ServerProcess | None, side: str) -> int:
        """Where the output of ``process`` holds no report it did not outlive: what it
        printed since then is what a crash is triaged from (the program's output, and
        what earlier programs left that was not yet known for harmless)."""
        if process is None:
            return 0
        return self._clean.setdefault(side, process.output_mark())

    def _dying(self, outcome: Outcome, process: ServerProcess | None, mark: int, side: str) -> bool:
        """A server that printed a crash report since ``mark`` and then exits crashed
        in the program, even if it still accepted the last probe (it was dying). A
        report it outlived once (UBSan's default is to print and carry on; a logged
        traceback) is not waited on again. Whether its output since ``mark`` holds no
        report it did not outlive."""
        if process is None:
            return True
        printed = process.output_since(mark)
        if not dying(printed):
            return True
        known = outcome.difference if side == "server" else outcome.reference_crash
        if not outcome.model_points or (known is not None and known.cls == "crash"):
            return False
        evidence = triage(None, printed)
        report = (side, evidence.label, *evidence.frames)      # where, not what it said (it may echo input)
        if report in self._survived:
            return True
        if process.wait_exit(TRIAGE_WAIT) is None:
            self._survived.add(report)
            return True
        index = known.step if known is not None else max(outcome.model_points)
        found = crash(outcome, index, "it printed a crash report", side=side)
        if side == "server":
            outcome.difference = found
        else:
            outcome.reference_crash = found
            if outcome.difference is None or outcome.difference.cls != "crash":
                outcome.difference = found
        return False

    def _recover(self, process: ServerProcess | None, crashed: bool, difference: Difference | None,
                 mark: int) -> None:
        """After a program: triage a crash of ``process`` into ``difference`` (from what
        it printed since ``mark``, see ``_clean_mark``), and restart it if it crashed
        or died."""
        if process is None or not (crashed or not process.alive()):
            return
        previous = self.clock.switch("restart")
        try:
            if difference is not None:
                difference.evidence = self._triage(process, difference, mark)
            process.restart()
        except Interrupted:
            self._signalled()
            raise _Stop() from None
        except Exception as error:      # ServerStartError: the run cannot go on
            self._fatal = error
            self._stop_reason = "server"
            raise _Stop() from None
        finally:
            self.clock.switch(previous)

    @staticmethod
    def _triage(process: ServerProcess, difference: Difference, mark: int) -> Evidence:
        status = process.wait_exit(TRIAGE_WAIT)
        if status is not None:
            process.output_settled(OUTPUT_WAIT)
        shape = f"{difference.do}/{difference.feature.split('+')[0]}"     # the step, not its variant
        return triage(status, process.output(), shape=shape, printed=process.output_since(mark))

    def _simplify(self, finding: Finding) -> Finding:
        """One last pass over the shrunk program: without the steps after the one that
        diverged, then without each earlier step in turn (a step the model skipped too),
        then each hostile value at the smallest size that still shows it. Hypothesis's
        shrinker can stop at a local minimum (a run cut short, a target that moved, the
        cap on a crash's shrinking); a smaller program that shows the same signature
        replaces it."""
        best = finding

        def attempt(steps: tuple[Step, ...]) -> Finding | None:
            if self._stop_reason not in (None, "budget") or time.monotonic() >= self.deadline + OVERRUN / 2:
                return None     # (half the overrun: the confirmation needs the rest)
            program = Program(best.program.identities, steps)
            try:
                outcome = self._execute(program, self.settle, self.reference_settles[0])
            except _Stop:
                return None
            difference = outcome.difference
            if difference is None or difference.signature != best.signature:
                return None
            return Finding(best.signature, outcome, found_after=best.found_after)

        steps = best.program.steps
        if len(steps) > best.difference.step + 1:
            best = attempt(steps[:best.difference.step + 1]) or best
        for index in range(best.difference.step - 1, -1, -1):  # backwards: earlier indices stay put
            steps = best.program.steps
            best = attempt(steps[:index] + steps[index + 1:]) or best
        for index, step in enumerate(best.program.steps):
            value = step.get("raw")
            low = 0
            while isinstance(value, Hostile) and low < value.size:     # the least size that still shows it
                size = (low + value.size) // 2
                smaller = Step(step.do, step.actor, (("raw", replace(value, size=size)),))
                found = attempt(best.program.steps[:index] + (smaller,) + best.program.steps[index + 1:])
                if found is None:
                    low = size + 1
                else:
                    best, value = found, smaller.get("raw")
        return best

    def _signalled(self) -> bool:
        """Whether a signal asked the run to stop (then it is the run's stop reason)."""
        requested = SWITCH.requested if SWITCH.armed else None     # a CLI run's, not a stale one
        if requested is not None and self._stop_reason in (None, "budget"):
            self._stop_reason = requested
        return requested is not None

    def _should_stop(self) -> None:
        if self._stop_reason is not None or self._signalled():
            raise _Stop()
        if time.monotonic() >= self.deadline:
            self._stop_reason = "budget"
        elif self.options.max_programs is not None and self.report.programs >= self.options.max_programs:
            self._stop_reason = "programs"
        if self._stop_reason is not None:
            raise _Stop()

    def _tick(self) -> None:
        now = time.monotonic()
        self.report.elapsed = now - self.started
        if self.options.progress is not None and now - self._last_progress >= 1.0:
            self._last_progress = now
            self.clock.switch(self.clock.current)       # bring the phase times up to now
            self._tally_settles()
            self.options.progress(self.report)

    def _tally_settles(self) -> None:
        self.report.settle_waits = sum(settle.waited for settle in (self.settle, self.patient,
                                                                      *self.reference_settles))

    # -- after a round: keep what repeats ------------------------------------------------

    def _confirm(self) -> None:
        finding, self.best, self.target = self.best, None, None
        self.shrink_runs = 0
        if finding is None:
            return
        if not finding.confirmed:
            self.clock.switch("shrink")
            finding = self._simplify(finding)
            self.clock.switch("confirm")
            try:
                again = self._execute(finding.program, self.patient, self.reference_settles[1])
            except _Stop:
                why = "the run was stopped" if SWITCH.requested else "the budget ran out"
                self.report.unrepeatable.append(f"{finding.signature} (not confirmed: {why})")
                raise
            finding.confirmed = again.difference is not None and again.difference.signature == finding.signature
        if finding.confirmed:
            self.ignored.add(finding.signature)
            self.report.findings[finding.signature] = finding
        else:       # not ignored: if it is real after all, a later round finds it again
            self.report.unrepeatable.append(finding.signature)
        limit = self.options.max_findings
        if limit is not None and len(self.report.findings) >= limit and self._stop_reason is None:
            self._stop_reason = "findings"
