"""A finding as a scenario fixture: the minimal program, expecting what the oracle did.

Each step that ran becomes its scenario step, followed by what the oracle (the
model, or the reference server) showed at its points (expect_reply,
expect_receipt, expect_close). At the step that diverged, an actor on which the
server did something extra gets expect_nothing; the scenario ends with
check_alive (for a crash, a second after the last step: a dying server may still
accept). Replayed against the server it fails where the server diverged (at
check_alive for a crash); against the oracle it passes: a finding of the field
model names the fake's field profile (``"fake": {"profile": "field"}``), so that a
replay against the bundled fake plays the model it was found with. A crash's
fixture carries the server's evidence (its status, report, frames); it is
``destructive``, as is every fixture of a run that saw a crash and every one whose
program registers a second serial on one connection (the shape that crashed field
servers): replayed against the server, they may kill it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import write_file
from ..scenario import validate
from .compare import Difference, slug
from .model import MODELS
from .observations import Point, Relay, Reply, Seen
from .programs import CAST, Program, Step
from .uuids import Uuids

if TYPE_CHECKING:
    from .report import Finding

ScenarioStep = dict[str, Any]      # a scenario step, as JSON holds it

EXTRA_CLASSES = ("extra relay", "unexpected close")
NOTHING_FOR = 0.5           # seconds an expect_nothing at the diverging step watches
DYING_WAIT = 1.0            # seconds a crash's fixture waits before its check_alive
DEFAULT_PROFILE = "default"
RISKY_FEATURE = "second-serial"     # a register of a second serial on one connection


def fixture_name(signature: str) -> str:
    return f"test_{slug(signature)}.tps.json"


def fixture_names(signatures: Iterable[str]) -> dict[str, str]:
    """Each signature's fixture name, unique among ``signatures``: ``slug`` folds case
    and punctuation, so two signatures can share one; the later ones then carry a
    digest of their signature (--force must not let one replace the other)."""
    names: dict[str, str] = {}
    for signature in signatures:
        name = fixture_name(signature)
        if name in names.values():
            name = f"test_{slug(signature)}_{hashlib.sha1(signature.encode()).hexdigest()[:6]}.tps.json"
        names[signature] = name
    return names


def scenario_of(finding: Finding, model: str = "strict", target: str | None = None, *,
                run_crashed: bool = False) -> dict[str, Any]:
    """The scenario (a dict, validated) that reproduces ``finding``; ``run_crashed``:
    the run it was found in saw the server crash (its fixture is destructive)."""
    outcome = finding.outcome
    program, uuids = outcome.program, outcome.uuids
    difference = finding.difference
    actors: dict[str, dict[str, str]] = {}
    steps: list[ScenarioStep] = []
    expected = outcome.oracle_points
    for index in sorted(outcome.model_points):
        step = program.steps[index]
        if step.actor is not None and step.actor not in actors:
            actors[step.actor] = _actor(program, uuids, step.actor)
        if index in outcome.connects:
            steps.append({"do": "connect", "actor": step.actor})
        steps.append(_action(step, program, uuids, outcome.host))
        for point in expected.get(index, []):
            steps += _point_expectations(point)
        if index == difference.step:
            closed = any(point.get(difference.actor or "", Seen()).closed for point in expected.get(index, []))
            if _server_did_more(difference) and not closed:     # (a close expected says it already)
                steps.append({"do": "expect_nothing", "actor": difference.actor, "for": NOTHING_FOR,
                              "note": f"the server showed {difference.got}"})
            break
    if difference.cls == "crash":
        steps.append({"do": "wait", "seconds": DYING_WAIT,
                      "note": "a crashing server may still accept for a moment (a sanitizer writing its report)"})
    steps.append({"do": "check_alive"})
    if difference.side == "reference":
        verdict = "Against the reference this scenario fails at check_alive; against the server it passes."
    else:
        verdict = f"Against the server this scenario fails there; against the {outcome.oracle} it passes."
    recorded: dict[str, Any] = {
        "by": "tpsharness fuzz", "signature": finding.signature, "class": difference.cls, "model": model,
        "target": target or outcome.host, "compared_with": outcome.oracle, "program": str(program).splitlines(),
        f"{outcome.oracle}_showed": difference.expected, "server_showed": difference.got}
    if finding.evidence is not None:
        recorded["evidence"] = finding.evidence.as_dict()
    scenario: dict[str, Any] = {
        "description": f"Found by tpsharness fuzz (model {model}): {difference.describe()}. {verdict}",
        "recorded": recorded,
        "actors": actors,
        "steps": steps,
    }
    profile = MODELS.get(model, DEFAULT_PROFILE)
    if outcome.oracle == "model" and profile != DEFAULT_PROFILE:
        scenario["fake"] = {"profile": profile}
    if difference.cls == "crash" or run_crashed or _risky(outcome.features, difference.step):
        scenario["destructive"] = True
    return validate(scenario, fixture_name(finding.signature))


def write(finding: Finding, directory: str | Path, model: str = "strict",
          target: str | None = None, *, force: bool = False, run_crashed: bool = False) -> Path:
    """Write the finding's scenario into ``directory``, whole, under the first free
    name (``tpsharness.files.write_file``); its path."""
    return write_file(directory, fixture_name(finding.signature), _text(finding, model, target, run_crashed),
                      force=force)


def write_all(findings: Iterable[Finding], directory: str | Path, model: str = "strict",
              target: str | None = None, *, force: bool = False,
              run_crashed: bool = False) -> Iterator[tuple[Finding, Path | OSError]]:
    """Write each finding as ``write`` does, under names unique among them (see
    ``fixture_names``): each finding with its path, or the error that stopped it."""
    findings = list(findings)
    names = fixture_names(finding.signature for finding in findings)
    for finding in findings:
        try:
            yield finding, write_file(directory, names[finding.signature],
                                      _text(finding, model, target, run_crashed), force=force)
        except OSError as error:
            yield finding, error


def _text(finding: Finding, model: str, target: str | None, run_crashed: bool) -> str:
    return json.dumps(scenario_of(finding, model, target, run_crashed=run_crashed), indent=2) + "\n"


def _risky(features: dict[int, str], last: int) -> bool:
    """Whether a step up to ``last`` registers a second serial on one connection."""
    return any(feature.startswith(RISKY_FEATURE) for index, feature in features.items() if index <= last)


def _server_did_more(difference: Difference) -> bool:
    return difference.cls in EXTRA_CLASSES or (
        difference.cls == "wrong status" and difference.detail.startswith("none:"))


def _actor(program: Program, uuids: Uuids, name: str) -> dict[str, str]:
    kind = CAST[name]
    if kind in ("device", "client"):
        return {"kind": kind, "uuid": uuids.pool[program.identity(name)]}
    return {"kind": kind}


def _action(step: Step, program: Program, uuids: Uuids, host: str) -> ScenarioStep:
    if step.do == "wait":
        return {"do": "wait", "seconds": step.get("seconds")}
    out: ScenarioStep = {"do": step.do, "actor": step.actor}
    if step.do in ("register", "send"):
        variant = step.get("variant")
        if step.do == "register":
            if step.get("serial") is not None:
                out["serial"] = uuids.pool[step.get("serial")]
            if variant == "crlf":
                out["trailing_crlf"] = True
        else:
            own = uuids.pool[program.identity(step.actor)]
            out["to"] = uuids.dest(step.get("to"), own)
            out.update(_payload(step.get("payload"), "payload"))
        if variant == "pipelined":
            out["times"] = 2
        elif variant == "split":
            out["split_at"] = step.get("split_at")
    elif step.do == "send_raw":
        data = step.get("raw").build(uuids, host) or b"\r\n"
        out.update(_payload(data, "data"))
    return out


def _payload(data: bytes, key: str) -> dict[str, str]:
    """{key: text} for printable ASCII (and no ${ placeholder), else {key_hex: hex}."""
    text = data.decode("latin-1")
    if all(32 <= ord(c) < 127 or c in "\r\n" for c in text) and "${" not in text:
        return {key: text}
    return {f"{key}_hex": data.hex()}


def _point_expectations(point: Point) -> list[ScenarioStep]:
    steps: list[ScenarioStep] = []
    for actor in sorted(point, key=list(CAST).index):
        steps += _expectations(actor, point[actor])
    return steps


def _expectations(actor: str, seen: Seen) -> list[ScenarioStep]:
    steps: list[ScenarioStep] = []
    for message in seen.messages:
        if isinstance(message, Reply):
            step: ScenarioStep = {"do": "expect_reply", "actor": actor, "status": message.status}
            if message.error_num is not None:
                step["fields"] = {"ErrorNum": message.error_num}
            steps.append(step)
        elif isinstance(message, Relay):
            steps.append({"do": "expect_receipt", "actor": actor, **_payload(message.body, "payload"),
                          "from": message.src})
    if seen.closed:
        steps.append({"do": "expect_close", "actor": actor})
    return steps

