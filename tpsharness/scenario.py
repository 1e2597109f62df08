"""Scenarios: TPS conversations as data files, validated, replayed and recorded.

A scenario names actors (devices, clients, raw connections) and a list of steps.
``load`` validates a file against STEPS below and names the file and the step in
every error; ``play`` runs it against a TPS and raises ScenarioFailure naming the
step, what was expected, what arrived, and the wire transcript; ``record`` runs
the same steps but writes down what arrived instead of checking it.
"""

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar, cast

from . import kernel, net
from .endpoint import MAX_UNREAD, Endpoint, Raw, Transcript
from .client import Client
from .deadline import GRACE, Deadline
from .device import Device
from .defaults import AUTH_CODE, TIMEOUT
from .errors import InvalidArgument, ScenarioError, ScenarioFailure, TPSError
from .exact import MOVES, SETTLE, Watch
from .ids import CLIENT_PREFIX, new_uuid
from .protocol import PrivateDataTemplate, RegisterReply, Reply, quote, quote_text, status_text
from .readfile import read_bounded
from .text import printable
from .syscalls import Sleep

from fake_tps import options as _fake_options

# A parsed scenario file, and one of its steps: JSON objects, whose values validate()
# has checked against the tables below.
ScenarioData = dict[str, Any]
Step = dict[str, Any]
# What a JSON field must be: a type, or one of several ((int, float) is any number).
FieldKind = type | tuple[type, ...]
_Default = TypeVar("_Default", bytes, None)

ACTOR_KINDS: dict[str, type[Endpoint]] = {"device": Device, "client": Client, "raw": Raw}
ACTOR_FIELDS: dict[str, FieldKind] = {"kind": str, "uuid": str, "auth_code": str, "note": str}

# Each step: the actor kinds it applies to (None: no actor), required fields, optional ones.
STEPS: dict[str, tuple[set[str] | None, dict[str, FieldKind], dict[str, FieldKind]]] = {
    "connect": ({"device", "client", "raw"}, {}, {"pending": dict}),
    "register": ({"device"}, {}, {"serial": str, "trailing_crlf": bool, "auth_code": str,
                                  "times": int, "split_at": int, "pause": (int, float), "pending": dict}),
    "heartbeat": ({"device"}, {}, {"pending": dict}),
    "send": ({"device", "client"}, {"to": str}, {"payload": str, "payload_hex": str, "times": int,
                                                 "split_at": int, "pause": (int, float), "pending": dict}),
    "send_raw": ({"device", "client", "raw"}, {}, {"data": str, "data_hex": str, "pending": dict}),
    "expect_reply": ({"device", "client", "raw"}, {}, {"status": int, "reason": str, "fields": dict,
                                                       "headers": dict, "within": (int, float)}),
    "expect_receipt": ({"device", "client", "raw"}, {}, {"payload": str, "payload_hex": str,
                                                         "from": str, "within": (int, float)}),
    "expect_close": ({"device", "client", "raw"}, {}, {"within": (int, float), "no_bytes": bool}),
    "expect_nothing": ({"device", "client", "raw"}, {}, {"for": (int, float)}),
    "expect_bytes": ({"device", "client", "raw"}, {}, {"data": str, "data_hex": str, "within": (int, float)}),
    "close": ({"device", "client", "raw"}, {}, {"pending": dict}),
    "wait": (None, {"seconds": (int, float)}, {}),
    "check_alive": (None, {}, {}),
}
COMMON_STEP_FIELDS: dict[str, FieldKind] = {"do": str, "actor": str, "note": str}
TOP_FIELDS: dict[str, FieldKind] = {"description": str, "actors": dict, "steps": list, "fake": dict,
                                    "recorded": dict, "destructive": bool, "speed": (int, float),
                                    "exact": bool, "pending_at_end": dict}
# Register reply fields a scenario may check, by their wire names.
REPLY_FIELDS = {"ErrorNum": "error_num", "ErrorString": "error_string",
                "KeepAliveIntervel": "keepalive_interval", "UtcTime": "utc_time"}
DEFAULT_WITHIN = 2.0
MAX_PENDING = MAX_UNREAD        # what a 'pending' count may say: no more than an endpoint keeps
# Bounds of the numeric step fields: (least, most). A file of a few bytes must not ask
# for gigabytes or hours: "times" copies a request in memory, the others are seconds.
MAX_SECONDS = 60
MAX_TIMES = 1000
MAX_WRITE = 16 * 1024 * 1024        # bytes one step may write (times x payload)
MAX_FILE = 4 * 1024 * 1024          # bytes of a scenario file
# What a whole file may ask for: the seconds its steps surely take (waits, pauses,
# expect_nothing), at its speed; and the most a play may last whatever the server does.
MAX_TOTAL_SECONDS = 600
MAX_PLAY_SECONDS = 2 * MAX_TOTAL_SECONDS
SPEED_BOUNDS = (0.1, 100)           # a replay's speed factor: waits and pauses are divided by it
FIELD_BOUNDS: dict[str, tuple[float, float]] = {
    "times": (1, MAX_TIMES), "split_at": (0, MAX_WRITE), "pause": (0, MAX_SECONDS),
    "within": (0, MAX_SECONDS), "for": (0, MAX_SECONDS), "seconds": (0, MAX_SECONDS)}
# The FakeTPS options a scenario's "fake" object may set: its behaviour, never where it
# binds (the fake always serves on a free loopback port). name: (type, least, most),
# derived from fake_tps's FakeOptions, which checks the values themselves.
FAKE_OPTIONS: dict[str, tuple[FieldKind, float | None, float | None]] = _fake_options.scenario_options()
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][\w-]*)\}")
TARGET_PLACEHOLDER = "tps"      # ${tps}: the address the scenario is played against, host:port
# Fields that become header values or uuids on the wire: CR or LF there would end a header.
_LINE_FIELDS = ("uuid", "auth_code", "serial", "to", "from")


@dataclass
class Scenario:
    """A validated scenario: ``path`` for messages, the parsed ``data``."""

    path: str
    data: ScenarioData

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1].removesuffix(".json").removesuffix(".tps")

    @property
    def fake_options(self) -> dict[str, Any] | None:
        return self.data.get("fake")

    @property
    def destructive(self) -> bool:
        """True when the scenario may kill the TPS it runs against."""
        return self.data.get("destructive", False)


# -- loading and validation ---------------------------------------------------------------

def _type_name(expected: FieldKind) -> str:
    names: dict[type, str] = {str: "a string", int: "a number", float: "a number",
                              bool: "true or false", dict: "an object", list: "a list"}
    if isinstance(expected, tuple):
        return names[expected[0]]
    return names[expected]


def _check_type(value: object, expected: FieldKind) -> bool:
    if isinstance(value, bool):         # JSON true is not a number here
        return expected is bool
    return isinstance(value, expected)


def _short(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: errors quote what the file says,
    never megabytes of it."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10 ** 60 else "a huge number"
    return text if len(text) <= limit else text[:limit] + "..."


def _out_of_bounds(value: float, least: float, most: float) -> str | None:
    """Why ``value`` is outside [least, most], or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, not {_short(value)}"
    if value < least:
        return f"must be at least {least}, not {_short(value)}"
    if value > most:
        return f"must be at most {most}, not {_short(value)}"
    return None


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _validate_fake(options: dict[str, Any], fail: Callable[[str, str], NoReturn]) -> None:
    """The 'fake' object: behaviour options of FakeTPS only, each of its type and bounds."""
    where = "'fake'"
    for key, value in options.items():
        if key not in FAKE_OPTIONS:
            fail(where, f"unknown option {_short(key)} (allowed: {', '.join(FAKE_OPTIONS)}; "
                        "the fake always serves on a free loopback port)")
        kind, least, most = FAKE_OPTIONS[key]
        if not _check_type(value, kind):
            fail(where, f"{key!r} must be {_type_name(kind)}, not {_short(value)}")
        if least is not None and most is not None:     # both, or neither
            problem = _out_of_bounds(value, least, most)
            if problem:
                fail(where, f"{key!r} {problem}")
    try:
        _fake_options.FakeOptions(**options)
    except InvalidArgument as error:    # what JSON's types let through (fault names...)
        fail(where, f"{_cut(str(error), 100)} (the faults and options are listed by "
                    "python -m fake_tps --help and in docs/protocol.md section 4)")


def validate(data: object, path: str = "<scenario>") -> ScenarioData:
    """Raise ScenarioError naming ``path`` and the step for anything malformed."""
    def fail(where: str, message: str) -> NoReturn:
        raise ScenarioError(f"{path}: {where}: {message}")

    if not isinstance(data, dict):
        fail("top level", "a scenario is a JSON object with 'actors' and 'steps'")
    for key in data:
        if key not in TOP_FIELDS:
            fail("top level", f"unknown field {_short(key)} (allowed: {', '.join(TOP_FIELDS)})")
    for key in ("actors", "steps"):
        if key not in data:
            fail("top level", f"missing field {key!r}")
    for key, value in data.items():
        if not _check_type(value, TOP_FIELDS[key]):
            fail("top level", f"{key!r} must be {_type_name(TOP_FIELDS[key])}")
    if "speed" in data:
        problem = _out_of_bounds(data["speed"], *SPEED_BOUNDS)
        if problem:
            fail("top level", f"'speed' {problem}")
    if "fake" in data:
        _validate_fake(data["fake"], fail)
    actors = data["actors"]
    for name, actor in actors.items():
        where = f"actor {_short(name)}"
        if not isinstance(actor, dict):
            fail(where, "must be an object with a 'kind'")
        if not isinstance(actor.get("kind"), str) or actor["kind"] not in ACTOR_KINDS:
            fail(where, f"'kind' must be one of {', '.join(ACTOR_KINDS)}, not {_short(actor.get('kind'))}")
        for key, value in actor.items():
            if key not in ACTOR_FIELDS:
                fail(where, f"unknown field {_short(key)} (allowed: {', '.join(ACTOR_FIELDS)})")
            if not isinstance(value, ACTOR_FIELDS[key]):
                fail(where, f"{key!r} must be {_type_name(ACTOR_FIELDS[key])}")
            if key in _LINE_FIELDS and isinstance(value, str) and ("\r" in value or "\n" in value):
                fail(where, f"{key!r} must not contain CR or LF (it goes into a header line): "
                            f"{_short(value)}")
        if name == TARGET_PLACEHOLDER:
            fail(where, f"the name {name!r} is reserved: ${{{name}}} stands for the address played against")
    if not data["steps"]:
        fail("steps", "a scenario needs at least one step")

    def check_pending(where: str, key: str, counts: dict[str, Any]) -> None:
        if not data.get("exact", False):
            fail(where, f"{key!r} belongs to an exact scenario (\"exact\": true): it counts what may "
                        "already have arrived there, on its way in the recording")
        for name, count in counts.items():
            if name not in actors:
                fail(where, f"{key!r} names no actor: {_short(name)}")
            if not _check_type(count, int) or not 1 <= count <= MAX_PENDING:
                fail(where, f"{key!r} {_short(name)} must be a count from 1 to {MAX_PENDING}, "
                            f"not {_short(count)}")

    if "pending_at_end" in data:
        check_pending("top level", "pending_at_end", data["pending_at_end"])
    speed = data.get("speed", 1)
    total = 0.0         # seconds the steps so far surely take, at the file's speed
    for number, step in enumerate(data["steps"], 1):
        if not isinstance(step, dict):
            fail(f"step {number}", "must be an object with 'do'")
        do = step.get("do")
        where = f"step {number} ({do})" if isinstance(do, str) and len(do) <= 40 else f"step {number}"
        if not isinstance(do, str) or do not in STEPS:
            fail(where, f"unknown step {_short(do)} (known: {', '.join(STEPS)})")
        kinds, required, optional = STEPS[do]
        allowed = {**COMMON_STEP_FIELDS, **required, **optional}
        for key, value in step.items():
            if key not in allowed:
                fail(where, f"unknown field {_short(key)} (allowed: {', '.join(allowed)})")
            if not _check_type(value, allowed[key]):
                fail(where, f"{key!r} must be {_type_name(allowed[key])}, not {_short(value)}")
            if key in FIELD_BOUNDS:
                problem = _out_of_bounds(value, *FIELD_BOUNDS[key])
                if problem:
                    fail(where, f"{key!r} {problem}")
            if key in _LINE_FIELDS and isinstance(value, str) and ("\r" in value or "\n" in value):
                fail(where, f"{key!r} must not contain CR or LF (it goes into a header line): "
                            f"{_short(value)}")
        for key in required:
            if key not in step:
                fail(where, f"missing field {key!r}")
        if "pending" in step:
            check_pending(where, "pending", step["pending"])
        if kinds is None:
            if "actor" in step:
                fail(where, f"'{do}' takes no actor")
        else:
            if "actor" not in step:
                fail(where, "missing field 'actor'")
            if step["actor"] not in actors:
                fail(where, f"unknown actor {_short(step['actor'])} "
                            f"(actors: {', '.join(map(_short, actors)) or 'none'})")
            kind = actors[step["actor"]]["kind"]
            if kind not in kinds:
                fail(where, f"a {kind} cannot '{do}' (only {', '.join(sorted(kinds))})")
        if do in ("send_raw", "expect_bytes") and ("data" in step) == ("data_hex" in step):
            fail(where, "give exactly one of 'data' and 'data_hex'")
        if "payload" in step and "payload_hex" in step:
            fail(where, "give at most one of 'payload' and 'payload_hex'")
        for key in ("payload_hex", "data_hex"):
            if key in step:
                try:
                    bytes.fromhex(step[key])
                except ValueError:
                    fail(where, f"{key!r} is not hexadecimal")
        for key, encoding in (("payload", "utf-8"), ("data", "latin-1")):
            try:
                step.get(key, "").encode(encoding)
            except UnicodeEncodeError as error:
                fail(where, f"{key!r} has a character {encoding} cannot encode at {error.start}; "
                            f"give {key}_hex")
        written = len(step.get("payload_hex", "")) // 2 + len(step.get("payload", "").encode("utf-8"))
        if step.get("times", 1) * (written + 1024) > MAX_WRITE:
            fail(where, f"'times' x the payload is more than {MAX_WRITE} bytes in one write")
        for name, value in step.get("headers", {}).items():
            if not isinstance(value, str):
                fail(where, f"header {_short(name)} must be a string, not {_short(value)}")
        if "fields" in step:
            for key, value in step["fields"].items():
                if key not in REPLY_FIELDS and key != "MessageType":
                    fail(where, f"unknown register reply field {_short(key)} (known: MessageType, "
                                f"{', '.join(REPLY_FIELDS)})")
                if not isinstance(value, str):
                    fail(where, f"field {_short(key)} must be a string (all register values are)")
        total += _sure_seconds(step, speed)
        if total > MAX_TOTAL_SECONDS:
            fail(where, f"the waits, pauses and expect_nothing periods add up to more than "
                        f"{MAX_TOTAL_SECONDS} s here (a scenario asks for {MAX_TOTAL_SECONDS // 60} "
                        f"minutes at most)")
    return data


def _sure_seconds(step: Step, speed: float) -> float:
    """The seconds a step takes however fast the server answers: ``speed`` divides
    the gaps (waits, pauses), never an expect_nothing's watch."""
    if step["do"] == "wait":
        return step["seconds"] / speed
    if step["do"] == "expect_nothing":
        return float(step.get("for", 0.3))
    if "split_at" in step:
        return step.get("pause", 0.2) / speed
    return 0.0


def load(path: str | os.PathLike[str]) -> Scenario:
    """Read and validate the scenario file at ``path``: anything wrong with it is a
    ScenarioError naming the file, never another exception."""
    path = str(path)
    try:
        text = read_bounded(path, MAX_FILE)
    except OSError as error:
        raise ScenarioError(f"{path}: cannot read: {error.strerror}") from None
    if len(text) > MAX_FILE:
        raise ScenarioError(f"{path}: more than {MAX_FILE} bytes; a scenario is a short file")
    try:
        data = json.loads(text.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ScenarioError(f"{path}: not UTF-8: {error.reason} at byte {error.start}") from None
    except RecursionError:
        raise ScenarioError(f"{path}: not a scenario: nested too deeply") from None
    except ValueError as error:         # JSONDecodeError, and integers of over 4300 digits
        raise ScenarioError(f"{path}: not JSON: {error}") from None
    return Scenario(path, validate(data, path))


def json_schema() -> dict[str, Any]:
    """The scenario format as a JSON Schema (draft 2020-12), made from STEPS,
    FIELD_BOUNDS and FAKE_OPTIONS: the same rules and bounds the loader enforces."""
    def schema_of(kind: FieldKind, bounds: tuple[float | None, float | None] | None = None
                  ) -> dict[str, Any]:
        schema: dict[str, Any]
        if kind == (int, float):
            schema = {"type": "number"}
        elif kind is int:
            schema = {"type": "integer"}
        else:
            names: dict[type, str] = {str: "string", bool: "boolean", dict: "object", list: "array"}
            schema = {"type": names[cast(type, kind)]}     # (int, float) is the only tuple kind
        if bounds is not None and bounds[0] is not None:
            schema.update(minimum=bounds[0], maximum=bounds[1])
        return schema

    pending = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1,
                                                          "maximum": MAX_PENDING}}

    def field_schema(name: str, kind: FieldKind) -> dict[str, Any]:
        if name == "pending":
            return {**pending, "description": "exact scenarios: per actor, how many of the messages "
                                              "the steps below expect may already have arrived here"}
        return schema_of(kind, FIELD_BOUNDS.get(name))

    step_schemas = []
    for do, (kinds, required, optional) in STEPS.items():
        properties: dict[str, dict[str, Any]] = {"do": {"const": do}, "note": {"type": "string"}}
        if kinds is not None:
            properties["actor"] = {"type": "string"}
        properties.update({k: field_schema(k, v) for k, v in {**required, **optional}.items()})
        step_schemas.append({"type": "object", "properties": properties, "additionalProperties": False,
                             "required": ["do"] + (["actor"] if kinds else []) + list(required)})
    fake_properties = {name: schema_of(kind, (least, most))
                       for name, (kind, least, most) in FAKE_OPTIONS.items()}
    fake_properties["faults"]["items"] = {"type": "string"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "tpsharness scenario",
        "type": "object",
        "required": ["actors", "steps"],
        "additionalProperties": False,
        "properties": {
            "description": {"type": "string"},
            "recorded": {"type": "object"},
            "speed": {"type": "number", "minimum": SPEED_BOUNDS[0], "maximum": SPEED_BOUNDS[1],
                      "description": "replay speed: waits and pauses are divided by it"},
            "destructive": {"type": "boolean", "description": "the scenario may kill the TPS; "
                            "against a real TPS it runs only with --tps-destructive, and last"},
            "exact": {"type": "boolean", "description": "a recording: before each connect, write "
                      "and close, and at the end, no actor may hold what no step took"},
            "pending_at_end": {**pending, "description": "exact scenarios: per actor, how many "
                               "messages may arrive after the last step (the recording ended first)"},
            "fake": {"type": "object", "additionalProperties": False, "properties": fake_properties,
                     "description": "FakeTPS behaviour options; the scenario then runs only "
                                    "against a bundled fake of its own"},
            "actors": {"type": "object", "additionalProperties": {
                "type": "object", "required": ["kind"], "additionalProperties": False,
                "properties": {"kind": {"enum": list(ACTOR_KINDS)},
                               **{k: schema_of(v) for k, v in ACTOR_FIELDS.items() if k != "kind"}}}},
            "steps": {"type": "array", "minItems": 1, "items": {"oneOf": step_schemas}},
        },
    }


# -- playing ------------------------------------------------------------------------------

MAX_RECORDED_BYTES = 4096      # of what a recording quotes in an expect_bytes step


def bytes_field(key: str, data: bytes) -> dict[str, str]:
    """``{key: text}`` for bytes a scenario can hold as text (latin-1, with JSON's
    escapes for control bytes), or ``{key_hex: hex}`` where the text would hold a
    ``${`` that the player would take for a placeholder."""
    text = data.decode("latin-1")
    if "${" in text:
        return {f"{key}_hex": data.hex()}
    return {key: text}


def _bytes(step: Step, text_key: str, hex_key: str, default: _Default) -> bytes | _Default:
    if hex_key in step:
        return bytes.fromhex(step[hex_key])
    if text_key in step:
        return step[text_key].encode("utf-8")
    return default


class _Player:
    """Runs the steps of one scenario against ``address``; ``recording`` writes down
    what arrives instead of checking it."""

    def __init__(self, scenario: Scenario, address: tuple[str, int], timeout: float,
                 recording: bool = False, *, strict: bool = False, family: int = 0,
                 deadline: Deadline | None = None, speed: float | None = None) -> None:
        self.scenario = scenario
        self.speed: float = speed if speed is not None else scenario.data.get("speed", 1)
        # a [host, port] list (as JSON gives) becomes the tuple the endpoints take
        self.address = cast("tuple[str, int]", tuple(address))
        self.timeout = timeout
        self.recording = recording
        self.deadline = deadline    # a Deadline every wait keeps to (recording), or None
        self.wrote: dict[str, str] = {}     # actor -> the last step that wrote ("register", ...)
        self.transcript = Transcript()
        self.actors: dict[str, Endpoint] = {}
        self.target_label = net.format_address(self.address)
        self.recorded: list[Step] = []
        self.recorded_after: list[Step] = []    # what a recorded step adds after itself
        self.stopped = False        # recording: a refusal ended what the template could do
        self.number = 0             # the step being played, from 1
        self.labels = [_label(number, step) for number, step in enumerate(scenario.data["steps"], 1)]
        for name, spec in scenario.data["actors"].items():
            endpoint: Endpoint
            if spec["kind"] in ("device", "client"):
                kind = Device if spec["kind"] == "device" else Client
                fresh = new_uuid() if spec["kind"] == "device" else new_uuid(CLIENT_PREFIX)
                uuid = self._expand(spec["uuid"]) if "uuid" in spec else fresh
                endpoint = kind(self.address, uuid, auth_code=spec.get("auth_code", AUTH_CODE),
                                timeout=timeout, transcript=self.transcript, strict=strict,
                                family=family)
            else:
                endpoint = Raw(self.address, timeout=timeout, transcript=self.transcript,
                               strict=strict, family=family)
            endpoint.name = name
            self.actors[name] = endpoint
        exact = scenario.data.get("exact", False) and not recording
        self.watch = Watch(self.actors, scenario.data["steps"], self.labels) if exact else None

    def _expand(self, text: str) -> str:
        def uuid_of(match: re.Match[str]) -> str:
            if match.group(1) == TARGET_PLACEHOLDER:
                return self.target_label
            actor = self.actors.get(match.group(1))
            if actor is None or not actor.uuid:     # a raw connection has no uuid
                raise ScenarioError(f"{self.scenario.path}: ${{{match.group(1)}}} names no device or client")
            return actor.uuid
        return _PLACEHOLDER.sub(uuid_of, text)

    def _uuid(self, name_or_uuid: str) -> str:
        actor = self.actors.get(name_or_uuid)
        return actor.uuid if actor is not None and actor.uuid else self._expand(name_or_uuid)

    async def play(self) -> None:
        watch = self.watch
        try:
            for self.number, step in enumerate(self.scenario.data["steps"], 1):
                if watch is not None and step["do"] in MOVES:
                    self._check(watch, step, step.get("pending", {}))
                    if step["do"] == "close":
                        watch.closing(step["actor"])
                outcome = await self._step(step)
                if watch is not None:
                    if step["do"] == "connect":
                        watch.connected(step["actor"], self.number)
                    elif step["do"].startswith("expect_"):
                        watch.took(step["actor"], self.number, close=step["do"] == "expect_close")
                if self.recording:
                    self.recorded.append(outcome)
                    self.recorded += self.recorded_after
                    absent = ("expect_close", "expect_nothing", "expect_bytes")
                    if self.stopped or self.recorded_after or (
                            outcome["do"] in absent and step["do"] not in absent):
                        break       # what the template expected next cannot happen
            if watch is not None:
                if watch.waiting():
                    await Sleep(SETTLE)     # what is on its way arrives, or is late
                self._check(watch, None, self.scenario.data.get("pending_at_end", {}))
        finally:
            if watch is not None:
                watch.close()
            for endpoint in self.actors.values():
                endpoint.close()

    def _check(self, watch: Watch, step: Step | None, allowed: dict[str, int]) -> None:
        """Fail if an actor holds more than ``allowed`` that no step took, before
        ``step`` (a move) or, for None, at the end."""
        leftover = watch.check(self.number if step is not None else len(self.labels) + 1, allowed)
        if leftover is None:
            return
        actor, pieces = leftover.actor, leftover.pieces
        took = "the steps before took" if step is not None else f"the steps took, {SETTLE:g} s after the last"
        if leftover.allowed:
            expected = (f"at most {leftover.allowed} more for {actor} than {took} (on its way in the "
                        f"recording): the scenario is exact")
        else:
            expected = (f"nothing more for {actor} than {took}: the scenario is exact, and the recorded "
                        f"TPS had sent no more by {'this step' if step is not None else 'its end'}")
        shown = "; ".join(pieces[:3]) + (f"; and {len(pieces) - 3} more" if len(pieces) > 3 else "")
        arrived = f"what no step took, for {actor}, arrived {leftover.since}: {shown}"
        if step is not None:
            self.fail(step, expected, arrived)
        self.fail({}, expected, arrived, where=f"the end, after {self.labels[-1]}")

    def fail(self, step: Step, expected: str, arrived: str, where: str | None = None) -> NoReturn:
        lines = [f"{self.scenario.path}: {where or _label(self.number, step)}",
                 f"  expected: {expected}", f"  arrived:  {arrived}", "  transcript:"]
        lines += [f"    {line}" for line in self.transcript.lines(200)] or ["    (nothing on the wire)"]
        raise ScenarioFailure("\n".join(lines), expected=str(expected), arrived=str(arrived))

    async def _step(self, step: Step) -> Step:
        do = step["do"]
        if do == "wait":
            await Sleep(step["seconds"] / self.speed)
            return dict(step)
        if do == "check_alive":
            probe = Raw(self.address, timeout=min(self.timeout, 2.0))
            try:
                await probe.connect()
            except TPSError as error:
                self.fail(step, "the TPS still accepting connections", f"it is not ({error})")
            finally:
                probe.close()
            return dict(step)
        endpoint = self.actors[step["actor"]]      # validate(): every other step has one
        if do == "connect":
            try:
                await endpoint.connect(deadline=self.deadline)
            except TPSError as error:
                self.fail(step, "a connection", str(error))
        elif do in ("register", "heartbeat"):
            serial = self._expand(step["serial"]) if "serial" in step else None
            device = cast(Device, endpoint)     # validate(): only a device registers
            await self._write(step, endpoint, device.register_request(
                serial, auth_code=step.get("auth_code"), trailing_crlf=step.get("trailing_crlf", False)))
        elif do == "send":
            payload = _bytes(step, "payload", "payload_hex", b"tpsharness")
            template = PrivateDataTemplate(endpoint.uuid, self._uuid(step["to"]),
                                           host=endpoint.host_header, auth_code=endpoint.auth_code)
            await self._write(step, endpoint, template.build(payload))
        elif do == "send_raw":
            data = bytes.fromhex(step["data_hex"]) if "data_hex" in step else \
                self._expand(step["data"]).encode("latin-1")
            await self._write(step, endpoint, data)
        elif do == "expect_reply":
            return await self._expect_reply(step, endpoint)
        elif do == "expect_receipt":
            return await self._expect_receipt(step, endpoint)
        elif do == "expect_close":
            return await self._expect_close(step, endpoint)
        elif do == "expect_nothing":
            return await self._expect_nothing(step, endpoint)
        elif do == "expect_bytes":
            return await self._expect_bytes(step, endpoint)
        elif do == "close":
            self._close(endpoint)
        return dict(step)

    def _close(self, endpoint: Endpoint) -> None:
        """The actor closes its connection (FIN); a later connect opens a new one."""
        if self.transcript is not None:
            self.transcript.record(endpoint.name, "hung up", b"")
        endpoint.close()

    async def _write(self, step: Step, endpoint: Endpoint, data: bytes) -> None:
        """One write, or ``times`` copies in one write (pipelined), or two writes
        split at ``split_at`` with a ``pause`` between (a split request)."""
        data = data * step.get("times", 1)
        split = step.get("split_at")
        pieces = [data] if split is None else [data[:split], data[split:]]
        self.wrote[step["actor"]] = step["do"]
        try:
            for number, piece in enumerate(pieces):
                if number:
                    await Sleep(step.get("pause", 0.2) / self.speed)
                await endpoint.send_raw(piece, deadline=self.deadline)
        except TPSError as error:
            self.fail(step, f"to send {len(data)} bytes", str(error))

    async def _expect_reply(self, step: Step, endpoint: Endpoint) -> Step:
        within = step.get("within", DEFAULT_WITHIN)
        try:
            stage = "register" if self.wrote.get(step["actor"]) in ("register", "heartbeat") else "send"
            reply = await endpoint.next_reply(within, deadline=self.deadline, stage=stage)
        except TPSError as error:
            if self.recording:
                return self._record_absence(step, endpoint, error, within)
            self.fail(step, self._describe_expected_reply(step), str(error))
        if self.recording:
            outcome: Step = {"do": "expect_reply", "actor": step["actor"], "status": reply.status}
            if isinstance(reply, RegisterReply):
                outcome["fields"] = {"MessageType": "MSG_TRANSPROXY_REGISTER_RSP",
                                     "ErrorNum": reply.error_num, "ErrorString": reply.error_string}
            refusal = _refusal(reply, stage)
            if refusal:         # the template's next steps assume success, as a check does
                outcome["note"] = f"recorded: {stage}: the TPS {refusal}; the recording stops here"
                self.stopped = True
            return outcome
        problems = []
        if "status" in step and reply.status != step["status"]:
            problems.append(f"status {reply.status}")
        if "reason" in step and getattr(reply, "reason", None) != step["reason"]:
            problems.append(f"reason {getattr(reply, 'reason', None)!r}")
        for name, value in step.get("headers", {}).items():
            actual = getattr(reply, "headers", {}).get(name.lower())
            if actual != value:
                problems.append(f"header {name}: {actual!r}")
        fields = step.get("fields", {})
        if fields and not isinstance(reply, RegisterReply):
            problems.append(f"no register reply JSON (body {quote(getattr(reply, 'body', b''), 60)})")
        elif fields:
            for name, value in fields.items():
                actual = "MSG_TRANSPROXY_REGISTER_RSP" if name == "MessageType" \
                    else getattr(reply, REPLY_FIELDS[name])
                if actual != value:
                    problems.append(f"{name} {actual!r}")
        if problems:
            self.fail(step, self._describe_expected_reply(step),
                      f"a reply with {', '.join(problems)}: {quote(reply.raw, 120)}")
        return dict(step)

    @staticmethod
    def _describe_expected_reply(step: Step) -> str:
        parts = [f"status {step['status']}"] if "status" in step else []
        parts += [f"{k} {v!r}" for k, v in step.get("fields", {}).items()]
        parts += [f"header {k}: {v!r}" for k, v in step.get("headers", {}).items()]
        return f"a reply{' with ' + ', '.join(parts) if parts else ''} within {step.get('within', DEFAULT_WITHIN):g} s"

    async def _expect_receipt(self, step: Step, endpoint: Endpoint) -> Step:
        within = step.get("within", DEFAULT_WITHIN)
        expected = _bytes(step, "payload", "payload_hex", None)
        try:
            message = await endpoint.receive(within, deadline=self.deadline)
        except TPSError as error:
            if self.recording:
                return self._record_absence(step, endpoint, error, within)
            self.fail(step, f"private data {quote(expected, 60) if expected is not None else ''} "
                            f"within {within:g} s", str(error))
        if self.recording:
            outcome: Step = {"do": "expect_receipt", "actor": step["actor"]}
            try:
                outcome["payload"] = message.body.decode("utf-8")
            except UnicodeDecodeError:
                outcome["payload_hex"] = message.body.hex()
            return outcome
        if expected is not None and message.body != expected:
            self.fail(step, f"payload {quote(expected, 80)}", f"payload {quote(message.body, 80)}")
        if "from" in step and message.src != self._uuid(step["from"]):
            self.fail(step, f"private data from {self._uuid(step['from'])!r}", f"from {message.src!r}")
        return dict(step)

    async def _expect_close(self, step: Step, endpoint: Endpoint) -> Step:
        within = step.get("within", DEFAULT_WITHIN)
        before = endpoint.unread
        closed = await endpoint.wait_closed(within)
        if not closed:
            self.fail(step, f"the TPS to close the connection within {within:g} s", "it stayed open")
        if step.get("no_bytes", False) and endpoint.unread > before:
            self.fail(step, "a close with no bytes first", f"{endpoint.unread - before} message(s) first")
        return dict(step)

    async def _expect_nothing(self, step: Step, endpoint: Endpoint) -> Step:
        seconds = step.get("for", 0.3)
        before = endpoint.unread
        closed = await endpoint.wait_closed(seconds)
        if endpoint.unread > before:
            self.fail(step, f"nothing for {seconds:g} s", f"{endpoint.unread - before} message(s)")
        if closed:
            self.fail(step, f"nothing for {seconds:g} s", "the TPS closed the connection")
        return dict(step)

    async def _expect_bytes(self, step: Step, endpoint: Endpoint) -> Step:
        within = step.get("within", DEFAULT_WITHIN)
        expected = cast(bytes, _bytes(step, "data", "data_hex", b""))
        if "data" in step:
            expected = self._expand(step["data"]).encode("latin-1")
        arrived = await endpoint.next_bytes(len(expected), within, deadline=self.deadline)
        if arrived != expected:
            ending = " and the TPS closed the connection" if endpoint.peer_closed else ""
            self.fail(step, f"the bytes {quote(expected, 120)} within {within:g} s",
                      f"{quote(arrived, 120) if arrived else 'nothing'}{ending}")
        return dict(step)

    def _record_absence(self, step: Step, endpoint: Endpoint, error: TPSError, within: float) -> Step:
        """What the TPS did instead of the expected message: silence, bytes that are not
        the message (then the recording stops: the harness reads no further), or a close."""
        if error.timed_out:
            return {"do": "expect_nothing", "actor": step["actor"], "for": within,
                    "note": f"recorded: {error}"}
        data = endpoint.take_bytes()
        if data:
            if endpoint.peer_closed:
                self.recorded_after.append({"do": "expect_close", "actor": step["actor"],
                                            "within": within})
            return {"do": "expect_bytes", "actor": step["actor"], "within": within,
                    **bytes_field("data", data[:MAX_RECORDED_BYTES]), "note": f"recorded: {error}"}
        return {"do": "expect_close", "actor": step["actor"], "within": within,
                "note": f"recorded: {error}"}


def _label(number: int, step: Step) -> str:
    """How messages name a step: 'step 3 (cam: register)'."""
    actor = f"{step['actor']}: " if "actor" in step else ""
    return f"step {number} ({actor}{step['do']})"


def _refusal(reply: Reply | RegisterReply, stage: str) -> str:
    """What a recorded reply refused, in words ('' when it accepted)."""
    if stage == "register":
        if not isinstance(reply, RegisterReply):
            return f"answered {status_text(reply)} without the register reply"
        if not reply.ok:
            return (f"refused the register with ErrorNum {printable(str(reply.error_num), 20)} "
                    f"{quote_text(reply.error_string)}")
        return ""
    return "" if reply.status == 200 else f"answered {status_text(reply)}"


def play(scenario: Scenario, address: tuple[str, int], *, timeout: float = TIMEOUT,
         speed: float | None = None) -> Transcript:
    """Run ``scenario`` against the TPS at ``address``; ScenarioFailure if a step fails.

    ``speed`` (default: the file's ``speed``, else 1) divides its waits and pauses. The
    whole play ends within MAX_PLAY_SECONDS whatever the server does."""
    if speed is not None and _out_of_bounds(speed, *SPEED_BOUNDS):
        raise InvalidArgument(f"speed {_out_of_bounds(speed, *SPEED_BOUNDS)}")
    player = _Player(scenario, address, timeout, speed=speed)
    sure = sum(_sure_seconds(step, player.speed) for step in scenario.data["steps"])
    if sure > MAX_TOTAL_SECONDS:
        raise ScenarioError(f"{scenario.path}: at speed {player.speed:g} the waits, pauses and "
                            f"expect_nothing periods add up to {sure:.1f} s, more than "
                            f"{MAX_TOTAL_SECONDS} s (a replay lasts {MAX_TOTAL_SECONDS // 60} "
                            f"minutes at most): replay it at speed "
                            f"{math.ceil(_slowest_speed(scenario) * 100) / 100:g} or faster")
    budget = _budget(scenario, timeout, player.speed)
    try:
        kernel.run(player.play(), timeout=budget)
    except TimeoutError:
        step = scenario.data["steps"][max(player.number, 1) - 1]
        player.fail(step, f"the scenario to end within its bound of {budget:g} s",
                    "it was still running (the TPS answered too slowly)")
    except InvalidArgument as error:        # validate() should have refused it: say where
        raise ScenarioError(f"{scenario.path}: step {player.number}: {error}") from None
    return player.transcript


def _budget(scenario: Scenario, timeout: float, speed: float = 1) -> float:
    """The most a scenario may take: what each step surely takes (as validate() counts
    it), plus what it may wait on the server and slack, at most MAX_PLAY_SECONDS."""
    total = 5.0 + (SETTLE if scenario.data.get("exact") else 0)
    for step in scenario.data["steps"]:
        waits = max(step.get("within", DEFAULT_WITHIN), timeout if step["do"] == "connect" else 0)
        total += _sure_seconds(step, speed) + waits + 0.5
    return min(total, MAX_PLAY_SECONDS)


def _slowest_speed(scenario: Scenario) -> float:
    """The slowest speed at which the scenario's sure seconds stay within MAX_TOTAL_SECONDS."""
    steps = scenario.data["steps"]
    watched = sum(_sure_seconds(step, math.inf) for step in steps)       # expect_nothing: no speed
    gaps = sum(_sure_seconds(step, 1) for step in steps) - watched
    room = MAX_TOTAL_SECONDS - watched
    return max(SPEED_BOUNDS[0], gaps / room) if room > 0 else SPEED_BOUNDS[1]


# -- recording --------------------------------------------------------------------------------

CHECK_TEMPLATE: ScenarioData = {
    "actors": {"device": {"kind": "device"}, "client": {"kind": "client"}},
    "steps": [
        {"do": "connect", "actor": "device"},
        {"do": "connect", "actor": "client"},
        {"do": "register", "actor": "device"},
        {"do": "expect_reply", "actor": "device"},
        {"do": "send", "actor": "client", "to": "device"},
        {"do": "expect_reply", "actor": "client"},
        {"do": "expect_receipt", "actor": "device"},
    ],
}
TEMPLATES: dict[str, ScenarioData] = {"check": CHECK_TEMPLATE}


def record(template_name: str, address: tuple[str, int], *, timeout: float = TIMEOUT,
           uuid: str | None = None, payload: str | bytes | None = None,
           description: str | None = None, auth_code: str = AUTH_CODE, strict: bool = False,
           family: int = 0) -> ScenarioData:
    """Run a template's steps against ``address`` and return a scenario (a dict) that
    expects exactly what happened: a field incident becomes a regression test.

    The whole recording keeps to one deadline, ``timeout`` seconds (each expectation
    waits at most that long), and ends within it plus GRACE whatever the server does.
    """
    template = json.loads(json.dumps(TEMPLATES[template_name]))
    if uuid:
        template["actors"]["device"]["uuid"] = uuid
    for actor in template["actors"].values():
        if actor["kind"] in ("device", "client") and auth_code != AUTH_CODE:
            actor["auth_code"] = auth_code
    payload = payload if payload is not None else f"tpsharness record {os.urandom(6).hex()}"
    for step in template["steps"]:
        if step["do"] == "send":
            if isinstance(payload, str):
                step["payload"] = payload
            else:
                try:
                    step["payload"] = bytes(payload).decode("utf-8")
                except UnicodeDecodeError:
                    step["payload_hex"] = bytes(payload).hex()
        if step["do"].startswith("expect_"):
            step["within"] = timeout
    scenario = Scenario(f"<{template_name}>", validate(template))
    deadline = Deadline(timeout)
    player = _Player(scenario, address, timeout, recording=True, strict=strict, family=family,
                     deadline=deadline)
    kernel.run(player.play(), timeout=deadline.later(GRACE))
    host, port = address
    recorded: ScenarioData = {
        "description": description or f"Recorded from {host}:{port} with tpsharness record "
                                      f"--scenario {template_name}",
        "recorded": {"scenario": template_name, "target": f"{host}:{port}",
                     "transcript": list(player.transcript.lines(400))},
        "actors": template["actors"],
        "steps": player.recorded,
    }
    return validate(recorded, "<recorded>")
