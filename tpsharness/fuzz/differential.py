"""One program, run on the model and then on the server, compared point by point.

The model runs first (in this kernel), which decides which steps run (a send on a
connection the model closed is skipped on both) and what each point should hold;
the server's run waits for that much at each point and stops at the first
difference. A refused probe at the end, or at a difference, makes it a crash.
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
from .programs import CAST, Program, Uuids

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
    features: dict[int, str] = field(default_factory=dict)
    connects: set[int] = field(default_factory=set)     # steps that opened their actor's connection
    difference: Difference | None = None
    steps_run: int = 0          # steps the server ran (the model ran len(model_points))
    exact_tails: bool = True    # False under the field model (see compare.first_difference)


def differential(program: Program, address: Address, model_name: str, settle: ServerSettle,
                 prefix: str, timeout: float) -> Outcome:
    """Run ``program`` on a fresh model, then on the server at ``address``; an Outcome.

    Each run has a kernel of its own (the model's ends with it), bounded by ``timeout``.
    """
    uuids = Uuids(prefix)
    host = net.format_address(address)
    outcome = Outcome(program, uuids, host, exact_tails=model_name != "field")
    model = make_model(model_name)
    try:
        kernel.run(_run_model(program, model, uuids, host, outcome), timeout=timeout)
    finally:
        model.close()
    kernel.run(_run_server(program, address, settle, outcome), timeout=timeout)
    return outcome


async def _run_server(program: Program, address: Address, settle: ServerSettle,
                      outcome: Outcome) -> Outcome:
    uuids, host = outcome.uuids, outcome.host
    run = Run(program, address, uuids, host, settle, outcome.exact_tails)
    last = None
    try:
        for index in sorted(outcome.model_points):
            step = program.steps[index]
            last = index
            try:
                points = await run.execute(step, outcome.model_points[index])
            except ServerDown as error:
                outcome.difference = _crash(outcome, index, str(error))
                return outcome
            outcome.steps_run += 1
            outcome.server_points[index] = points
            found = first_difference(outcome.model_points[index], points, step.actor,
                                     exact_tails=outcome.exact_tails)
            if found is not None:
                number, actor, cls, wanted, saw, detail = found
                outcome.difference = Difference(cls, index, step.do, outcome.features[index], actor,
                                                wanted, saw, detail, number)
                break
        else:
            if last is not None:        # anything the server sends late belongs to the last step
                await settle.linger(run, 2 * settle.grace_now())
                late = run.take_point()
                unfinished = {actor: Seen(tail=seen.tail)       # a cut message stays unfinished
                              for actor, seen in outcome.model_points[last][-1].items() if not seen.closed}
                found = first_difference([unfinished], [late], None, exact_tails=outcome.exact_tails)
                if found is not None:
                    _, actor, cls, wanted, saw, detail = found
                    step = program.steps[last]
                    outcome.server_points[last].append(late)
                    outcome.difference = Difference(cls, last, step.do, outcome.features[last], actor,
                                                    wanted, saw, detail, len(outcome.server_points[last]) - 1)
        if last is not None:
            refused = await _refused(address)
            if refused:
                everything_closed = all(not conn.open for conn in run.conns.values())
                how = "connection refused" + (", all connections closed" if everything_closed and run.conns else "")
                index = outcome.difference.step if outcome.difference else last
                outcome.difference = _crash(outcome, index, f"{how} ({refused})")
    finally:
        run.close()
    return outcome


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


def _crash(outcome: Outcome, index: int, how: str) -> Difference:
    step = outcome.program.steps[index]
    return Difference("crash", index, step.do, outcome.features.get(index, ""), None,
                      "the server still accepting connections", how)


async def _refused(address: Address) -> str | None:
    """None if the server accepts a connection, else why not."""
    try:
        sock = await net.connect(address, timeout=PROBE_TIMEOUT)
    except (OSError, TimeoutError) as error:
        return str(error)
    sock.close()
    return None
