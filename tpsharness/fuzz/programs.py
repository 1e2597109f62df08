"""Programs: short lists of actor steps, and the hypothesis strategies that make them.

A program names its cast (two devices, a client, a raw connection) and gives each
device and client an identity from a small pool of uuids shared by all, so that
collisions, takeovers and re-registrations happen often. Steps name uuids by pool
index (or UNKNOWN, or SELF); ``Uuids`` turns them into strings for one run. Steps
that cannot run where they land (a send on a closed connection) are skipped by the
executor, so hypothesis may delete any step while it shrinks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from ..errors import InvalidArgument
from ..protocol import PrivateDataTemplate, register_request
from . import values
from .uuids import POOL, SELF, UNKNOWN, Uuids
from .values import Hostile

__all__ = ["POOL", "SELF", "UNKNOWN", "Uuids", "Step", "RawData", "Program", "Hostile", "programs", "steps",
           "identities", "mutate", "MUTATIONS", "CAST", "DEFAULT_IDENTITY"]

CAST = {"cam1": "device", "cam2": "device", "app": "client", "raw": "raw"}
DEFAULT_IDENTITY = {"cam1": 0, "cam2": 1, "app": 2}     # distinct until shrinking says otherwise
LARGE = 4097                # a body above the field servers' 4096-byte read
KNOWN_GARBAGE = (b"GET / HTTP/1.1\r\nHost: tps\r\n\r\n", b"\r\n", b"\r\n\r\n",
                 b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n",
                 b"POST /PrivateData HTTP/1.1\r\n\r\n", b"POST /TransProxy HTTP/1.1\r\n\r\n{}")
MUTATIONS = ("truncate", "insert", "delete", "flip", "content_length", "no_space", "lowercase",
             "http10", "double")


@dataclass(frozen=True)
class Step:
    """One thing an actor does. ``args`` by kind:

    connect, close: none. register: serial (pool index, or None for the actor's own),
    variant (plain, crlf, pipelined, split), split_at. send: to (pool index, UNKNOWN,
    SELF), payload, variant (plain, pipelined, split), split_at. send_raw: raw (a
    RawData). wait: seconds.
    """

    do: str
    actor: str | None = None
    args: tuple[tuple[str, Any], ...] = ()     # (name, value) pairs: hashable, printable

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.args).get(name, default)

    def __str__(self) -> str:
        shown = [(k, v) for k, v in self.args if k != "split_at" or self.get("variant") == "split"]
        args = ", ".join(f"{k}={_show(v)}" for k, v in shown)
        who = f"{self.actor}." if self.actor else ""
        return f"{who}{self.do}({args})"


@dataclass(frozen=True)
class RawData:
    """Exact bytes for send_raw: known garbage, random bytes, or a mutated request."""

    base: str                   # garbage, register, private_data
    garbage: bytes = b""
    serial: int = 0             # register: pool index; private_data: SrcUuid index
    dest: int = 0               # private_data: DestUuid (pool index or UNKNOWN)
    payload: bytes = b""
    mutation: str = "none"
    at: int = 0
    extra: bytes = b""

    @property
    def feature(self) -> str:
        """The state a signature names: the base, and the mutation if any."""
        return self.base.replace("_", "-") + ("" if self.mutation == "none" else f"+{self.mutation}")

    def build(self, uuids: Uuids, host: str) -> bytes:
        if self.base == "garbage":
            return self.garbage
        if self.base == "register":
            data = register_request(uuids.pool[self.serial], host=host)
        else:
            data = PrivateDataTemplate(uuids.pool[self.serial], uuids.dest(self.dest, uuids.pool[self.serial]),
                                       host=host).build(self.payload)
        return mutate(data, self.mutation, self.at, self.extra)

    def __str__(self) -> str:
        if self.base == "garbage":
            return _show(self.garbage)
        what = f"register(u{self.serial})" if self.base == "register" else \
            f"private_data(u{self.serial}->{_dest_name(self.dest)}, {_show(self.payload)})"
        return what if self.mutation == "none" else f"{self.mutation}@{self.at}({what}{', ' + _show(self.extra) if self.extra else ''})"


def mutate(data: bytes, mutation: str, at: int, extra: bytes) -> bytes:
    """``data`` with one mutation applied at offset ``at`` (taken modulo its length)."""
    if mutation == "none" or not data:
        return data
    at %= len(data)
    if mutation == "truncate":
        return data[:at]
    if mutation == "insert":
        return data[:at] + (extra or b"\r\n") + data[at:]
    if mutation == "delete":
        return data[:at] + data[at + max(1, len(extra)):]
    if mutation == "flip":
        return data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1:]
    head, sep, body = data.partition(b"\r\n\r\n")
    if mutation == "content_length":
        lines = [b"Content-Length: %d" % (at % 512) if line.startswith(b"Content-Length")
                 else line for line in head.split(b"\r\n")]
        return b"\r\n".join(lines) + sep + body
    if mutation == "no_space":
        return head.replace(b": ", b":") + sep + body
    if mutation == "lowercase":
        first, _, rest = head.partition(b"\r\n")
        return first + b"\r\n" + rest.lower() + sep + body
    if mutation == "http10":
        return data.replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    if mutation == "double":
        return data + data
    raise InvalidArgument(f"unknown mutation {mutation!r}")


@dataclass(frozen=True)
class Program:
    """A cast's identities (actor -> pool index) and the steps."""

    identities: tuple[tuple[str, int], ...]    # (actor, pool index) pairs for devices and clients
    steps: tuple[Step, ...]

    def identity(self, actor: str | None) -> int:
        """The pool index of a device or client (the actors that register and send)."""
        for name, index in self.identities:
            if name == actor:
                return index
        raise KeyError(f"{actor} has no identity: only devices and clients have one")

    def __str__(self) -> str:
        return "\n".join(f"{number:3}. {step}" for number, step in enumerate(self.steps, 1))

    def actors(self) -> list[str]:
        """The actors the steps use, in cast order."""
        used = {step.actor for step in self.steps}
        return [name for name in CAST if name in used]


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return repr(value) if len(value) <= 24 else f"{value[:16]!r}...({len(value)} B)"
    return str(value)


def _dest_name(index: int) -> str:
    return {UNKNOWN: "unknown", SELF: "self"}.get(index, f"u{index}")


# -- strategies ---------------------------------------------------------------------------
# Each one_of lists its simplest choice first: hypothesis shrinks towards it.

payloads = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([b"\r\n", b"a\r\n\r\nb", b"\x00\xff\r\n", b"POST /PrivateData HTTP/1.1\r\n\r\n",
                     b"Content-Length: 5\r\n\r\n"]),
    st.builds(lambda size, unit: (unit * size)[:size], st.integers(LARGE, 3 * LARGE),
              st.sampled_from([b"x", b"\r\n", b"\x00"])),
)
pool_index = st.integers(0, POOL - 1)
destinations = st.integers(0, SELF)
split_points = st.integers(1, 400)

sizes = st.integers(0, values.MAX_SIZE)     # each value class's parameter: 0 is its smallest


def _hostile(base: str) -> st.SearchStrategy[Hostile]:
    """Requests of ``base`` with one place given a value of a class of its kind: each
    (place, class) pair is one choice, equally likely (one draw, not two)."""
    classes = {"json": values.JSON_CLASSES, "header": values.HEADER_CLASSES, "line": values.LINE_CLASSES}
    places = ([f"json:{path}" for path in values.JSON_PLACES] if base == "register" else []) + \
        [f"header:{name}" for name in values.HEADERS[base]] + [f"line:{part}" for part in values.LINE_PARTS]
    pairs = [(where, kind) for where in places for kind in classes[where.split(":")[0]]]
    return st.builds(lambda pair, size, serial, dest, payload: Hostile(base, pair[0], pair[1], size, serial,
                                                                      dest, payload),
                     st.sampled_from(pairs), sizes, pool_index,
                     st.integers(0, UNKNOWN) if base == "private_data" else st.just(0),
                     st.binary(max_size=8) if base == "private_data" else st.just(b""))


hostile_data = st.one_of(_hostile("register"), _hostile("private_data"))
raw_data = st.one_of(
    st.builds(RawData, st.just("garbage"), garbage=st.sampled_from(KNOWN_GARBAGE)),
    st.builds(RawData, st.just("register"), serial=pool_index, mutation=st.sampled_from(MUTATIONS),
              at=st.integers(0, 400), extra=st.binary(max_size=4)),
    _hostile("register"),
    st.builds(RawData, st.just("private_data"), serial=pool_index,
              dest=st.integers(0, UNKNOWN), payload=st.binary(max_size=8),
              mutation=st.sampled_from(MUTATIONS), at=st.integers(0, 400), extra=st.binary(max_size=4)),
    _hostile("private_data"),
    st.builds(RawData, st.just("garbage"), garbage=st.binary(min_size=1, max_size=48)),
)


def _step(do: str, actor: str, **args: Any) -> Step:
    return Step(do, actor, tuple(sorted(args.items())))


def _steps_of(actor: str, kind: str) -> list[tuple[str, st.SearchStrategy[Step]]]:
    """(kind of step, strategy) pairs for one actor of the cast."""
    steps = [("connect", st.just(_step("connect", actor))),
             ("close", st.just(_step("close", actor))),
             ("send_raw", st.builds(lambda data: _step("send_raw", actor, raw=data), raw_data))]
    if kind in ("device", "client"):
        steps.append(("send", st.builds(lambda to, payload, variant, split_at: _step(
            "send", actor, to=to, payload=payload, variant=variant, split_at=split_at),
            destinations, payloads, st.sampled_from(["plain", "pipelined", "split"]), split_points)))
    if kind == "device":
        steps.append(("register", st.builds(lambda serial, variant, split_at: _step(
            "register", actor, serial=serial, variant=variant, split_at=split_at),
            st.one_of(st.none(), pool_index), st.sampled_from(["plain", "crlf", "pipelined", "split"]),
            split_points)))
    return steps


# How often each kind of step is drawn (by repetition); hypothesis shrinks towards the first.
KIND_WEIGHTS = ("register", "send", "register", "send", "send_raw", "close", "register", "send",
                "connect", "send_raw", "close", "wait", "hostile")


def steps() -> st.SearchStrategy[Step]:
    """Any one step of any actor of the cast: a kind (by KIND_WEIGHTS), then an actor
    that can do it and the step's arguments. A "hostile" step is a send_raw of a
    request with a hostile value (values), so that each class is tried often."""
    by_kind = {"wait": [st.builds(lambda seconds: Step("wait", None, (("seconds", seconds),)),
                                  st.sampled_from([0.001, 0.003]))],
               "hostile": [st.builds(lambda actor, data: _step("send_raw", actor, raw=data),
                                     st.sampled_from(list(CAST)), hostile_data)]}
    for actor, kind in CAST.items():
        for do, strategy in _steps_of(actor, kind):
            by_kind.setdefault(do, []).append(strategy)
    strategies = {do: st.one_of(choices) for do, choices in by_kind.items()}
    return st.sampled_from(KIND_WEIGHTS).flatmap(strategies.__getitem__)


def identities() -> st.SearchStrategy[tuple[tuple[str, int], ...]]:
    """Each device and client's pool index: shrinks towards distinct identities."""
    return st.tuples(*[st.integers(0, POOL - 1) for _ in DEFAULT_IDENTITY]).map(
        lambda shifts: tuple((actor, (DEFAULT_IDENTITY[actor] + shift) % POOL)
                             for actor, shift in zip(DEFAULT_IDENTITY, shifts)))


def programs(max_steps: int = 10) -> st.SearchStrategy[Program]:
    """Programs of 1 to ``max_steps`` steps."""
    return st.builds(lambda ids, body: Program(ids, tuple(body)), identities(),
                     st.lists(steps(), min_size=1, max_size=max_steps))
