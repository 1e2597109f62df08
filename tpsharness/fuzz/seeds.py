"""Seeds: scenario files (fixtures, earlier findings, recorded conversations) as programs
to start from, as AFLNet starts from recorded exchanges.

``load_seeds(DIR)`` reads every ``*.tps.json`` under DIR and turns each scenario's
steps into a program of the fuzzer's cast: devices become cam1 and cam2, a client
app (or a free device), a raw connection raw (or any free actor); the uuids they
hold become the program's pool (fresh for every run), and one nobody holds becomes
UNKNOWN. Expectations are dropped: the fuzzer compares everything. Bytes a file
gives (``send_raw``, or a request the cast's steps cannot write, such as another
AuthCode) are kept as they are, their uuids swapped for the pool's and each
Content-Length that matched its body set again. A scenario that cannot be put so
(more actors or uuids than the cast has, a wait for a timeout) is reported and
skipped. ``seeded`` is the strategy that mutates and extends them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from ..defaults import AUTH_CODE
from ..errors import Inexpressible, ScenarioError
from ..protocol import PrivateDataTemplate, register_request
from ..scenario import TARGET_PLACEHOLDER, Scenario, load
from .programs import DEFAULT_IDENTITY, MUTATIONS, Program, Step, identities, mutate, steps
from .uuids import POOL, SELF, UNKNOWN, Uuids

MAX_SEED_STEPS = 64             # a longer recording is cut to its first steps
MAX_WAIT = 0.5                  # seconds: a longer wait waits for a timeout, which the model does not keep
MAX_EDITS = 4                   # steps inserted into a seed, and byte mutations of its steps
_SLOTS = {"device": ("cam1", "cam2"), "client": ("app", "cam1", "cam2"), "raw": ("raw", "app", "cam1", "cam2")}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][\w-]*)\}")
_LENGTH = re.compile(rb"(Content-Length:[ \t]*)(\d+)", re.IGNORECASE)
LENGTH_MARK, END_MARK = b"${length}", b"${end}"
_SERIAL = "tpsharness-seed-serial"     # where a register's serial goes, until it is a pool marker


@dataclass(frozen=True)
class SeedBytes:
    """A seed's exact bytes: ``${uN}``/``${nobody}`` where a pool uuid goes, and
    ``${length}``...``${end}`` around a body whose Content-Length follows it."""

    template: bytes
    mutation: str = "none"
    at: int = 0
    extra: bytes = b""

    base = "seed"

    @property
    def feature(self) -> str:
        return "seed" + ("" if self.mutation == "none" else f"+{self.mutation}")

    def build(self, uuids: Uuids, host: str) -> bytes:
        data = self.template
        for index, uuid in enumerate(uuids.pool):
            data = data.replace(b"${u%d}" % index, uuid.encode())
        data = data.replace(b"${nobody}", uuids.unknown.encode()).replace(b"${host}", host.encode())
        while LENGTH_MARK in data:
            start = data.index(LENGTH_MARK)
            body = data.find(b"\r\n\r\n", start) + 4
            end = data.find(END_MARK, body)
            if body < 4 or end < 0:
                break
            size = b"%d" % (end - body)
            data = data[:start] + size + data[start + len(LENGTH_MARK):end] + data[end + len(END_MARK):]
        return mutate(data, self.mutation, self.at, self.extra)

    def __str__(self) -> str:
        shown = self.template if len(self.template) <= 24 else self.template[:16]
        what = f"seed({shown!r}{'...' if len(self.template) > 24 else ''})"
        return what if self.mutation == "none" else f"{self.mutation}@{self.at}({what})"


@dataclass
class Seeds:
    """The programs made of a directory's scenarios, and the files skipped (path, why)."""

    programs: list[Program] = field(default_factory=list)
    names: list[str] = field(default_factory=list)      # the file of each program
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)        # files of which only the first steps are used


def load_seeds(directory: str | Path, max_steps: int = MAX_SEED_STEPS) -> Seeds:
    """Every ``*.tps.json`` under ``directory`` (sorted) as a program, or a reason."""
    seeds = Seeds()
    for path in sorted(Path(directory).rglob("*.tps.json")):
        try:
            program = program_of(load(path))
        except (ScenarioError, Inexpressible) as error:
            seeds.skipped.append((str(path), str(error).removeprefix(f"{path}: ")))
            continue
        if len(program.steps) > max_steps:
            program = Program(program.identities, program.steps[:max_steps])
            seeds.cut.append(str(path))
        seeds.programs.append(program)
        seeds.names.append(str(path))
    return seeds


def program_of(scenario: Scenario) -> Program:
    """The scenario's steps as a program of the fuzzer's cast; Inexpressible if it cannot be."""
    data = scenario.data
    cast = _cast(data["actors"])
    uuids = _Pool(data, cast)
    program_steps: list[Step] = []
    for step in data["steps"]:
        made = _step(step, cast, uuids, data["actors"])
        if made is not None:
            program_steps.append(made)
    if not program_steps:
        raise Inexpressible("no step the fuzzer can play (expectations only)")
    return Program(uuids.identities(), tuple(program_steps))


def _cast(actors: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Scenario actor -> cast member (devices first, then clients, then raw connections)."""
    cast: dict[str, str] = {}
    taken: set[str] = set()
    for kind in ("device", "client", "raw"):
        names = [name for name, actor in actors.items() if actor["kind"] == kind]
        for name in names:
            free = [slot for slot in _SLOTS[kind] if slot not in taken]
            if not free:
                count = {k: sum(1 for a in actors.values() if a["kind"] == k) for k in ("device", "client", "raw")}
                raise Inexpressible(f"{count['device']} devices, {count['client']} clients and {count['raw']} raw "
                                    "connections: the fuzzer's cast is 2 devices, a client and a raw connection")
            cast[name] = free[0]
            taken.add(free[0])
    return cast


class _Pool:
    """The scenario's uuids as pool indices: those it holds (actors', serials) in order."""

    def __init__(self, data: dict[str, Any], cast: dict[str, str]) -> None:
        self.actors = data["actors"]
        self.cast = cast
        self.index: dict[str, int] = {}
        self.own: dict[str, str] = {}          # scenario actor -> its uuid
        for name, actor in self.actors.items():
            if actor["kind"] in ("device", "client"):
                self.own[name] = actor.get("uuid") or f"seed-actor-{name}"
        for name in self.own:
            self.own[name] = self.expand(self.own[name])
            self.hold(self.own[name])
        for step in data["steps"]:
            if step["do"] in ("register", "heartbeat") and "serial" in step:
                self.hold(self.expand(step["serial"]))

    def expand(self, text: str) -> str:
        """``text`` with ${actor} as that actor's uuid and ${tps} as the target's address."""
        def value(match: re.Match[str]) -> str:
            if match.group(1) == TARGET_PLACEHOLDER:
                return "${host}"        # SeedBytes puts the address played against there
            return self.own.get(match.group(1), match.group(0))
        return _PLACEHOLDER.sub(value, text)

    def hold(self, uuid: str) -> None:
        if uuid not in self.index:
            if len(self.index) == POOL:
                raise Inexpressible(f"more than {POOL} uuids held (the fuzzer's pool has {POOL})")
            self.index[uuid] = len(self.index)

    def of(self, name_or_uuid: str) -> int:
        """A destination's pool index (an actor's name or a uuid), UNKNOWN if nobody holds it."""
        uuid = self.own.get(name_or_uuid, self.expand(name_or_uuid))
        return self.index.get(uuid, UNKNOWN)

    def identities(self) -> tuple[tuple[str, int], ...]:
        """Each device and client of the cast with its pool index; unused ones get the rest."""
        chosen = {self.cast[name]: self.index[uuid] for name, uuid in self.own.items()}
        spare = [index for index in range(POOL) if index not in chosen.values()] or list(range(POOL))
        result = []
        for number, actor in enumerate(DEFAULT_IDENTITY):
            result.append((actor, chosen[actor] if actor in chosen else spare[number % len(spare)]))
        return tuple(result)

    def template(self, data: bytes) -> bytes:
        """``data`` with each held uuid as its pool marker (longest first)."""
        for uuid in sorted(self.index, key=len, reverse=True):
            data = data.replace(uuid.encode(), b"${u%d}" % self.index[uuid])
        return data


def _step(step: dict[str, Any], cast: dict[str, str], pool: _Pool, actors: dict[str, Any]) -> Step | None:
    do = step["do"]
    if do.startswith("expect_") or do == "check_alive":
        return None
    if do == "wait":
        if step["seconds"] > MAX_WAIT:
            raise Inexpressible(f"a wait of {step['seconds']:g} s (for a timeout: the model keeps no time; "
                                f"at most {MAX_WAIT:g} s)")
        return Step("wait", None, (("seconds", 0.003),))
    name = step["actor"]
    actor = cast[name]
    if do in ("connect", "close"):
        return Step(do, actor)
    auth_code = step.get("auth_code", actors[name].get("auth_code", AUTH_CODE))
    times = step.get("times", 1)
    split = step.get("split_at")
    if do in ("register", "heartbeat"):
        serial = pool.expand(step["serial"]) if "serial" in step else pool.own[name]
        crlf = step.get("trailing_crlf", False)
        if auth_code == AUTH_CODE and times <= 2 and not (crlf and (times > 1 or split is not None)):
            variant = "pipelined" if times == 2 else "split" if split is not None else "crlf" if crlf else "plain"
            return _made("register", actor, serial=None if serial == pool.own[name] else pool.index[serial],
                         variant=variant, split_at=split or 1)
        data = _length_marked(register_request(_SERIAL, host="${host}", auth_code=auth_code, trailing_crlf=crlf))
        return _raw(actor, data.replace(_SERIAL.encode(), b"${u%d}" % pool.index[serial]) * times)
    if do == "send":
        payload = bytes.fromhex(step["payload_hex"]) if "payload_hex" in step else \
            step.get("payload", "tpsharness").encode()
        to = pool.of(step["to"])
        if to == pool.index[pool.own[name]]:
            to = SELF
        if auth_code == AUTH_CODE and times <= 2:
            variant = "pipelined" if times == 2 else "split" if split is not None else "plain"
            return _made("send", actor, to=to, payload=payload, variant=variant, split_at=split or 1)
        dest = b"${nobody}" if to == UNKNOWN else b"${u%d}" % (pool.index[pool.own[name]] if to == SELF else to)
        data = PrivateDataTemplate("\x01", "\x02", host="${host}", auth_code=auth_code).build(payload)
        data = data.replace(b"\x01", b"${u%d}" % pool.index[pool.own[name]]).replace(b"\x02", dest)
        return _raw(actor, _length_marked(data) * times)
    assert do == "send_raw"     # validate() knows no other step with an actor
    data = bytes.fromhex(step["data_hex"]) if "data_hex" in step else \
        pool.expand(step["data"]).encode("latin-1")
    return _raw(actor, pool.template(_length_marked(data)))


def _made(do: str, actor: str, **args: Any) -> Step:
    return Step(do, actor, tuple(sorted(args.items())))


def _raw(actor: str, template: bytes) -> Step:
    return Step("send_raw", actor, (("raw", SeedBytes(template)),))


def _length_marked(data: bytes) -> bytes:
    """``data`` with each Content-Length that matches the body after it marked to
    follow that body when uuids of another length are put in."""
    out, position = [], 0
    for match in _LENGTH.finditer(data):
        head_end = data.find(b"\r\n\r\n", match.end())
        if head_end < 0 or match.start() < position or len(match.group(2)) > 9:
            continue
        body_end = head_end + 4 + int(match.group(2))
        if body_end > len(data):
            continue        # not the length of what follows: kept as it is
        out += [data[position:match.start(2)], LENGTH_MARK, data[match.end(2):body_end], END_MARK]
        position = body_end
    out.append(data[position:])
    return b"".join(out)


def seeded(seeds: tuple[Program, ...], max_steps: int) -> st.SearchStrategy[Program]:
    """Programs made from a seed: some of its steps dropped (shrinking drops them all),
    generated steps inserted, its raw steps' bytes mutated, other identities drawn."""
    def edits(seed: Program) -> st.SearchStrategy[Program]:
        size = len(seed.steps)
        return st.builds(
            _edited, st.just(seed), st.lists(st.integers(0, 9), min_size=size, max_size=size),
            st.lists(st.tuples(st.integers(0, size), steps()), max_size=min(MAX_EDITS, max_steps)),
            st.lists(st.tuples(st.integers(0, max(size - 1, 0)), st.sampled_from(MUTATIONS),
                               st.integers(0, 400), st.binary(max_size=4)), max_size=2),
            st.one_of(st.just(seed.identities), identities()))
    return st.sampled_from(seeds).flatmap(edits)


def _edited(seed: Program, keep: list[int], inserted: list[tuple[int, Step]],
            mutations: list[tuple[int, str, int, bytes]], identities: tuple[tuple[str, int], ...]) -> Program:
    chosen = list(seed.steps)
    for index, mutation, at, extra in mutations:
        step = chosen[index]
        raw = step.get("raw")
        if isinstance(raw, SeedBytes):
            chosen[index] = Step(step.do, step.actor, (("raw", SeedBytes(raw.template, mutation, at, extra)),))
    kept: list[Step] = []
    for position in range(len(chosen) + 1):        # inserted steps may go after the last one too
        kept += [new for at, new in inserted if at == position]
        if position < len(chosen) and keep[position]:
            kept.append(chosen[position])
    return Program(identities, tuple(kept) or (Step("connect", "raw"),))
