"""One program, run on the model and then on the server, compared point by point.

The model runs first (in this kernel), which decides which steps run (a send on a
connection the model closed is skipped on both) and what each point should hold;
the server's run waits for that much at each point and stops at the first
difference. A refused probe at the end, or at a difference, makes it a crash.

With a reference server (``--reference``), the program also runs on the reference,
after the model and before the server, waiting for what the model showed; the
server is then compared with the reference, replies byte for byte, and the model
judges crashes: one side refusing connections where the model never does is that
side's crash, and if the reference crashed the server is compared with the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import kernel, net
from ..syscalls import NewTask
from .compare import Difference, Holders, feature, first_difference
from .executor import ModelSettle, Run, ServerDown, ServerSettle
from .observations import Point, Seen
from .model import make_model
from .stopping import SWITCH
from .programs import CAST, Program
from .uuids import Uuids

if TYPE_CHECKING:
    from fake_tps import FakeTPS

Address = tuple[str, int]

PROBE_TIMEOUT = 2.0


@dataclass
class Outcome:
    """What one differential run saw."""

    program: Program
    uuids: Uuids
    host: str
    model_points: dict[int, list[Point]] = field(default_factory=dict)  # step index -> points (run steps only)
    server_points: dict[int, list[Point]] = field(default_factory=dict)
    reference_points: dict[int, list[Point]] = field(default_factory=dict)
    reference_late: Point = field(default_factory=dict)    # what the reference sent after the last step
    features: dict[int, str] = field(default_factory=dict)
    connects: set[int] = field(default_factory=set)     # steps that opened their actor's connection
    difference: Difference | None = None
    steps_run: int = 0          # steps the server ran (the model ran len(model_points))
    exact_tails: bool = True    # False under the field model (see compare.first_difference)
    reference: bool = False     # compared with a reference server
    reference_crash: Difference | None = None   # the reference refused connections

    @property
    def oracle(self) -> str:
        """What the server was compared with."""
        return "reference" if self.reference and self.reference_crash is None else "model"

    @property
    def oracle_points(self) -> dict[int, list[Point]]:
        """The points the server was compared with (and a fixture expects)."""
        return self.reference_points if self.oracle == "reference" else self.model_points


def differential(program: Program, address: Address, model_name: str, settle: ServerSettle,
                 prefix: str, timeout: float, reference: Address | None = None,
                 reference_settle: ServerSettle | None = None) -> Outcome:
    """Run ``program`` on a fresh model, then (if given) on the reference, then on the
    server at ``address``; an Outcome. Each run has a kernel of its own (the model's
    ends with it), bounded by ``timeout``."""
    uuids = Uuids(prefix)
    host = net.format_address(address)
    outcome = Outcome(program, uuids, host, exact_tails=model_name != "field", reference=reference is not None)
    with SWITCH.held():         # a signal must not land in the model's server tasks
        model = make_model(model_name)
        try:
            kernel.run(_run_model(program, model, uuids, host, outcome), timeout=timeout)
        finally:
            model.close()
    if reference is not None:
        kernel.run(_run_reference(program, reference, reference_settle or settle, outcome), timeout=timeout)
    kernel.run(_run_server(program, address, settle, outcome), timeout=timeout)
    crash = outcome.reference_crash
    if crash is not None and (outcome.difference is None or outcome.difference.cls != "crash"):
        outcome.difference = crash
    return outcome


async def _run_server(program: Program, address: Address, settle: ServerSettle,
                      outcome: Outcome) -> Outcome:
    uuids, host = outcome.uuids, outcome.host
    expected_points, oracle = outcome.oracle_points, outcome.oracle
    exact_replies = oracle == "reference"
    run = Run(program, address, uuids, host, settle, outcome.exact_tails)
    last = None
    try:
        for index in sorted(outcome.model_points):
            step = program.steps[index]
            last = index
            try:
                points = await run.execute(step, expected_points.get(index))
            except ServerDown as error:
                outcome.difference = crash(outcome, index, str(error))
                return outcome
            outcome.steps_run += 1
            outcome.server_points[index] = points
            found = first_difference(expected_points.get(index, []), points, step.actor,
                                     exact_tails=outcome.exact_tails, exact_replies=exact_replies)
            if found is not None:
                number, actor, cls, wanted, saw, detail = found
                outcome.difference = Difference(cls, index, step.do, outcome.features[index], actor,
                                                wanted, saw, detail, number, oracle=oracle)
                break
        else:
            if last is not None and last in expected_points:    # anything late belongs to the last step
                await settle.linger(run, 2 * settle.grace_now())
                late = run.take_point()
                if oracle == "reference":
                    expected_late = outcome.reference_late
                else:
                    expected_late = {actor: Seen(tail=seen.tail)    # a cut message stays unfinished
                                     for actor, seen in expected_points[last][-1].items() if not seen.closed}
                found = first_difference([expected_late], [late], None, exact_tails=outcome.exact_tails,
                                         exact_replies=exact_replies)
                if found is not None:
                    _, actor, cls, wanted, saw, detail = found
                    step = program.steps[last]
                    outcome.server_points[last].append(late)
                    outcome.difference = Difference(cls, last, step.do, outcome.features[last], actor,
                                                    wanted, saw, detail, len(outcome.server_points[last]) - 1,
                                                    oracle=oracle)
        if last is not None:
            refused = await _refused(address)
            if refused:
                index = outcome.difference.step if outcome.difference else last
                outcome.difference = crash(outcome, index, _how(run, refused))
    finally:
        run.close()
    return outcome


async def _run_reference(program: Program, address: Address, settle: ServerSettle,
                         outcome: Outcome) -> None:
    """Every step the model ran, on the reference, waiting for what the model showed;
    its points go to ``outcome.reference_points``. A refusal is the reference's crash."""
    run = Run(program, address, outcome.uuids, outcome.host, settle, outcome.exact_tails,
              early=False)      # it goes on past a difference: each point must be whole
    last = None
    try:
        for index in sorted(outcome.model_points):
            last = index
            try:
                outcome.reference_points[index] = await run.execute(program.steps[index],
                                                                    outcome.model_points[index])
            except ServerDown as error:
                outcome.reference_crash = crash(outcome, index, str(error), side="reference")
                return
        if last is not None:
            await settle.linger(run, 2 * settle.grace_now())
            outcome.reference_late = run.take_point()
            refused = await _refused(address)
            if refused:
                outcome.reference_crash = crash(outcome, last, _how(run, refused), side="reference")
    finally:
        run.close()


async def _run_model(program: Program, model: FakeTPS, uuids: Uuids, host: str,
                     outcome: Outcome) -> None:
    await NewTask(model.serve(), daemon=True)
    run = Run(program, model.address, uuids, host, ModelSettle(model))
    holders = Holders()
    try:
        for index, step in enumerate(program.steps):
            if not run.runnable(step):
                continue
            outcome.features[index] = feature(run, holders, step, CAST)
            if run.connects_first(step):
                outcome.connects.add(index)
            points = await run.execute(step)
            holders.update(run, step, points)
            outcome.model_points[index] = points
    finally:
        run.close()


def _how(run: Run, refused: str) -> str:
    everything_closed = all(not conn.open for conn in run.conns.values())
    return "connection refused" + (", all connections closed" if everything_closed and run.conns else "") + \
        f" ({refused})"


def crash(outcome: Outcome, index: int, how: str, side: str = "server") -> Difference:
    step = outcome.program.steps[index]
    return Difference("crash", index, step.do, outcome.features.get(index, ""), None,
                      "the server still accepting connections", how, side=side)


async def _refused(address: Address) -> str | None:
    """None if the server accepts a connection, else why not."""
    try:
        sock = await net.connect(address, timeout=PROBE_TIMEOUT)
    except (OSError, TimeoutError) as error:
        return str(error)
    sock.close()
    return None
