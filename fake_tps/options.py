"""The fake's options, each written once: its type, default, bound and help.

``FakeOptions`` is the one definition; the faces are derived from it: the flags of
``python -m fake_tps`` (``add_arguments``/``from_arguments``), the keywords of
``FakeTPS(...)`` and ``configure(...)`` (``replace``), and the ``"fake"`` object
of a scenario file (``scenario_options``). An impossible value is an
``InvalidArgument`` (a ValueError) naming the option, whichever face it came from.
"""

from __future__ import annotations

import argparse
import inspect
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields, replace as _replace
from typing import Any, TypeVar

from tpsharness.defaults import KEEPALIVE_INTERVAL
from tpsharness.errors import InvalidArgument
from tpsharness.protocol import DEFAULT_MAX_BODY

from .faults import FAULTS

__all__ = ["FakeOptions", "OPTIONS", "PROFILES", "FAULT_ALIASES", "MAX_REPLY_DELAY", "add_arguments",
           "from_arguments", "scenario_options", "signature"]

T = TypeVar("T")

MAX_SECONDS = 3600.0            # a timeout longer than an hour is a typo in a test fake
MAX_REPLY_DELAY = 60.0          # longer only wedges whoever waits (and the server's own stop)
MAX_BYTES = 64 * 1024 * 1024    # what one peer may make the fake hold
PROFILES = ("default", "field")
# Old names: a fault that became a profile (a fault name given where it was) -> the profile.
FAULT_ALIASES = {"one-read-one-message": "field"}


@dataclass(frozen=True)
class Bound:
    """How an option is given and checked: its bounds, its help and its flag."""

    help: str
    least: float | None = None
    most: float | None = None
    metavar: str | None = None
    flag: str | None = None         # the command-line flag, if not --NAME-WITH-DASHES
    scenario: bool = True           # a scenario's "fake" object may set it
    choices: tuple[str, ...] = ()   # the values a text option may take


def _option(default: T, help: str, **bound: Any) -> T:
    """A FakeOptions field: its default and its Bound (read by the faces)."""
    return field(default=default, metadata={"bound": Bound(help, **bound)})


@dataclass(frozen=True)
class FakeOptions:
    """Every behaviour option of the fake (docs/protocol.md section 4), checked when made."""

    keepalive_interval: int = _option(KEEPALIVE_INTERVAL, "KeepAliveIntervel sent in register replies",
                                      least=1, most=86400, metavar="SECONDS")
    idle_timeout: float = _option(300.0, "close a connection this long after the last byte received",
                                  least=0.001, most=MAX_SECONDS, metavar="SECONDS")
    bad_request_idle_timeout: float = _option(
        5.0, "the idle timeout of a connection after unrecognised input, which gets 400",
        least=0.001, most=MAX_SECONDS, metavar="SECONDS")
    request_timeout: float = _option(
        10.0, "close a connection whose request is not whole this long after its first byte "
              "(slow senders)", least=0.001, most=MAX_SECONDS, metavar="SECONDS")
    nul_replies: bool = _option(False, "end PrivateData replies with one NUL, as older field builds do")
    strict_http: bool = _option(False, "validate requests with h11 and send replies with Content-Length")
    check_auth: str | None = _option(None, "refuse registers and private data whose AuthCode is not CODE",
                                     metavar="CODE")
    max_body: int = _option(DEFAULT_MAX_BODY, "largest request body accepted; larger gets 413 and a close",
                            least=0, most=MAX_BYTES, metavar="BYTES")
    max_output: int = _option(4 * 1024 * 1024, "bytes queued for a peer that does not read before it "
                                               "is dropped", least=1, most=MAX_BYTES, metavar="BYTES",
                              scenario=False)
    reply_delay: float = _option(0.0, "wait this long before answering each request (fault injection)",
                                 least=0, most=MAX_REPLY_DELAY, metavar="SECONDS")
    faults: Collection[str] = _option(frozenset(), "inject a fault (repeatable); see the list below",
                                      metavar="NAME", flag="--fault")
    profile: str = _option("default", "how each read is decided: 'default' frames requests by "
                                      "Content-Length; 'field' decides each read of up to 4096 bytes "
                                      "as field servers do, rule by rule (docs/protocol.md section 3.1)",
                           choices=PROFILES)

    def __post_init__(self) -> None:
        for option in fields(self):
            checked = _check(option.name, _KINDS[option.name], getattr(self, option.name))
            object.__setattr__(self, option.name, checked)
        for old, profile in FAULT_ALIASES.items():
            if old in self.faults:
                object.__setattr__(self, "faults", frozenset(self.faults) - {old})
                object.__setattr__(self, "profile", profile)
        if self.profile == "field" and self.strict_http:
            raise InvalidArgument("strict_http reads requests with h11 and the field profile reads "
                                  "each read as field servers do: choose one")

    def replace(self, **changes: Any) -> FakeOptions:
        """These options with ``changes``; TypeError for a name that is no option."""
        unknown = changes.keys() - set(OPTIONS)
        if unknown:
            raise TypeError(f"no such fake option: {', '.join(map(repr, sorted(unknown)))} "
                            f"(the options: {', '.join(OPTIONS)})")
        return _replace(self, **changes)


OPTIONS: tuple[str, ...] = tuple(option.name for option in fields(FakeOptions))
_BOUNDS: dict[str, Bound] = {option.name: option.metadata["bound"] for option in fields(FakeOptions)}
_KINDS: dict[str, str] = {option.name: str(option.type) for option in fields(FakeOptions)}


def _check(name: str, kind: str, value: object) -> Any:
    """``value`` as option ``name`` (annotated ``kind``) holds it; InvalidArgument if it cannot."""
    bound = _BOUNDS[name]
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidArgument(f"{name} must be True or False, not {value!r}")
        return value
    if kind == "str | None":
        if value is not None and not isinstance(value, str):
            raise InvalidArgument(f"{name} must be a string or None, not {value!r}")
        return value
    if kind == "str":
        if value not in bound.choices:
            raise InvalidArgument(f"{name} must be one of {', '.join(bound.choices)}, not {value!r}")
        return value
    if kind == "Collection[str]":
        return _known_faults(value)
    whole = kind == "int"
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) \
            or not math.isfinite(value) or not _within(value, bound):
        raise InvalidArgument(f"{name} must be {_wanted(name)}, not {value!r}")
    return value


def _within(value: float, bound: Bound) -> bool:
    return (bound.least is None or value >= bound.least) and (bound.most is None or value <= bound.most)


def _wanted(name: str) -> str:
    """What option ``name`` must be, in words: 'a whole number from 1 to 86400'."""
    bound = _BOUNDS[name]
    kind = "a whole number" if _KINDS[name] == "int" else "a number of seconds"
    return f"{kind} from {bound.least:g} to {bound.most:g}"


def _known_faults(faults: object) -> frozenset[str]:
    """``faults`` (names) as a frozenset; InvalidArgument naming any unknown one."""
    if isinstance(faults, (str, bytes)) or not isinstance(faults, Collection):
        raise InvalidArgument(f"faults must be a list of fault names, not {faults!r}")
    named = list(faults)
    for name in named:
        if not isinstance(name, str):
            raise InvalidArgument(f"a fault is named by a string, not {name!r}")
    chosen = frozenset(named)
    unknown = sorted(chosen - FAULTS.keys() - FAULT_ALIASES.keys())
    if unknown:
        raise InvalidArgument(f"unknown fault {', '.join(map(repr, unknown))} "
                              f"(known: {', '.join([*FAULTS, *FAULT_ALIASES])})")
    return chosen


# -- the faces ------------------------------------------------------------------------------

def signature(*leading: inspect.Parameter) -> inspect.Signature:
    """``leading`` parameters, then every option as a keyword with its default: the
    signature ``FakeTPS(...)`` and ``configure(...)`` show (help(), inspect)."""
    defaults = FakeOptions()
    keywords = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, name))
                for name in OPTIONS]
    return inspect.Signature([*leading, *keywords])


def _argument_type(name: str, convert: Callable[[str], float]) -> Callable[[str], Any]:
    """An argparse type for option ``name``: a usage error for text out of its bound."""
    def check(text: str) -> Any:
        try:
            return _check(name, "int" if convert is int else "float", convert(text))
        except (ValueError, InvalidArgument):
            raise argparse.ArgumentTypeError(f"{text!r} is not {_wanted(name)}") from None
    check.__name__ = _wanted(name)      # argparse names a type by it in some messages
    return check


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per option, with its default and bound."""
    for option in fields(FakeOptions):
        name, bound, default = option.name, _BOUNDS[option.name], option.default
        flag = bound.flag or "--" + name.replace("_", "-")
        if option.type == "bool":
            parser.add_argument(flag, action="store_true", dest=name, help=bound.help)
        elif option.type == "Collection[str]":
            parser.add_argument(flag, action="append", default=[], choices=[*FAULTS, *FAULT_ALIASES],
                                dest=name, metavar=bound.metavar, help=bound.help)
        elif option.type == "str":
            parser.add_argument(flag, choices=bound.choices, default=default, dest=name,
                                help=f"{bound.help} (default {default})")
        elif option.type == "str | None":
            parser.add_argument(flag, dest=name, metavar=bound.metavar, help=bound.help)
        else:
            convert = int if option.type == "int" else float
            parser.add_argument(flag, type=_argument_type(name, convert), default=default, dest=name,
                                metavar=bound.metavar, help=f"{bound.help} (default {default:g})" if convert is float
                                else f"{bound.help} (default {default})")


def from_arguments(arguments: argparse.Namespace) -> FakeOptions:
    """The options ``add_arguments``' flags gave."""
    return FakeOptions(**{name: getattr(arguments, name) for name in OPTIONS})


ScenarioKind = type | tuple[type, ...]


def scenario_options() -> dict[str, tuple[ScenarioKind, float | None, float | None]]:
    """The options a scenario's "fake" object may set, as JSON sees them: name ->
    (type, least, most); the values are then checked by FakeOptions itself."""
    kinds: dict[str, ScenarioKind] = {"int": int, "float": (int, float), "bool": bool,
                                      "str | None": str, "str": str, "Collection[str]": list}
    return {option.name: (kinds[str(option.type)], _BOUNDS[option.name].least, _BOUNDS[option.name].most)
            for option in fields(FakeOptions) if _BOUNDS[option.name].scenario}
