"""Reading a load result file: untrusted input, checked before anything uses it.

A result file may come from another host, an older version, a hand edit or an
attacker. ``read_document`` returns its parts in the shape LoadResult merges, or
raises InvalidArgument with one sentence naming what is wrong and where: a file over
MAX_FILE bytes, JSON nested past what is sane, NaN or Infinity, a number past 2**63,
a list where a mapping belongs, text that is too long, a histogram that is not one
(histograms.decode bounds what one inflates to).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, NoReturn

from ..errors import InvalidArgument
from .accounting import INTEGRITY
from .histograms import LATENCIES, MAX_ENCODED, decode

FORMATS = ("tpsharness-load/1", "tpsharness-load/2")
MAX_FILE = 128 * 1024 * 1024
MAX_TEXT = 64 * 1024        # characters of one string field
MAX_ITEMS = 200_000         # entries of one list or mapping (a day's series fits)
MAX_INT = 2 ** 63 - 1


class _Shape:
    """Checks one document, naming the place of the first thing wrong."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, place: str, message: str) -> NoReturn:
        raise InvalidArgument(f"{self.where}: {place}: {message}")

    def mapping(self, value: object, place: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(place, f"a mapping was expected, not {_kind(value)}")
        if len(value) > MAX_ITEMS:
            self.fail(place, f"{len(value):,} entries, over {MAX_ITEMS:,}")
        for key in value:
            self.text(key, place, limit=200)
        return value

    def items(self, value: object, place: str) -> list[Any]:
        if not isinstance(value, list):
            self.fail(place, f"a list was expected, not {_kind(value)}")
        if len(value) > MAX_ITEMS:
            self.fail(place, f"{len(value):,} entries, over {MAX_ITEMS:,}")
        return value

    def count(self, value: object, place: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(place, f"a whole number was expected, not {_kind(value)}")
        if not 0 <= value <= MAX_INT:
            self.fail(place, "a count outside 0 to 2**63")
        return value

    def number(self, value: object, place: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(place, f"a number was expected, not {_kind(value)}")
        if not math.isfinite(value) or not -MAX_INT <= value <= MAX_INT:
            self.fail(place, "a number that is not finite, or past 2**63")
        return float(value)

    def text(self, value: object, place: str, limit: int = MAX_TEXT) -> str:
        if not isinstance(value, str):
            self.fail(place, f"text was expected, not {_kind(value)}")
        if len(value) > limit:
            self.fail(place, f"{len(value):,} characters, over {limit:,}")
        return value

    def optional_text(self, value: object, place: str) -> str | None:
        return None if value is None else self.text(value, place)

    def flag(self, value: object, place: str) -> bool:
        if not isinstance(value, bool):
            self.fail(place, f"true or false was expected, not {_kind(value)}")
        return value

    def histogram(self, value: object, place: str) -> str | None:
        if value is None:
            return None
        text = self.text(value, place, limit=MAX_ENCODED)
        try:
            decode(text)
        except InvalidArgument as error:
            self.fail(place, str(error))
        return text


def _kind(value: object) -> str:
    names = {dict: "a mapping", list: "a list", str: "text", bool: "true/false", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number a result can hold")


def load_json(path: str) -> object:
    """The JSON in ``path``; InvalidArgument for a file that is too big, not JSON,
    nested too deep, or holds NaN or Infinity."""
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE:
            raise InvalidArgument(f"{path}: {size:,} bytes, over {MAX_FILE:,} for a result file")
        with open(path, encoding="utf-8") as source:
            return json.load(source, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidArgument(f"{path}: JSON nested too deeply to be a result") from None
    except UnicodeDecodeError:
        raise InvalidArgument(f"{path}: not UTF-8 text") from None
    except ValueError as error:
        raise InvalidArgument(f"{path}: not JSON a result can hold ({error})") from None


def read_document(data: object, where: str) -> tuple[dict[str, Any], dict[str, Any], str | None,
                                                     list[tuple[str, bool, str, bool]]]:
    """(part, config, target, thresholds) of a result document; InvalidArgument
    naming what is wrong."""
    shape = _Shape(where)
    if not isinstance(data, dict) or data.get("format") not in FORMATS:
        raise InvalidArgument(f"{where}: not a tpsharness load result (no \"format\": \"{FORMATS[-1]}\")")
    shape.mapping(data, "the document")
    config = shape.mapping(data.get("config") or {}, "config")
    for key in ("devices", "clients", "payload_size", "window", "reply_every"):
        if config.get(key) is not None:
            shape.count(config[key], f"config.{key}")
    for key in ("duration", "rate", "ramp", "timeout", "drain"):
        if config.get(key) is not None:
            shape.number(config[key], f"config.{key}")
    for key, value in config.items():
        if key == "address" and value is not None:
            address = shape.items(value, "config.address")
            if len(address) != 2 or not isinstance(address[0], str):
                shape.fail("config.address", "[host, port] was expected")
            shape.count(address[1], "config.address[1]")
        elif key == "extra":
            for name, extra in shape.mapping(value, "config.extra").items():
                if isinstance(extra, (dict, list)):
                    shape.fail(f"config.extra.{name}", f"a plain value was expected, not {_kind(extra)}")
        elif isinstance(value, (dict, list)):
            shape.fail(f"config.{key}", f"a plain value was expected, not {_kind(value)}")
        elif isinstance(value, str):
            shape.text(value, f"config.{key}", 1000)
    counters = {name: shape.count(value, f"counters.{name}")
                for name, value in shape.mapping(data.get("counters"), "counters").items()}
    histograms = {phase: shape.histogram(value, f"histograms.{phase}")
                  for phase, value in shape.mapping(data.get("histograms") or {}, "histograms").items()
                  if phase in LATENCIES}
    errors: dict[str, dict[str, Any]] = {}
    for reason, entry in shape.mapping(data.get("errors") or {}, "errors").items():
        place = f"errors[{reason[:40]!r}]"
        entry = shape.mapping(entry, place)
        errors[reason] = {"count": shape.count(entry.get("count"), place + ".count"),
                          "example": shape.text(entry.get("example", ""), place + ".example")}
    integrity: dict[str, list[dict[str, Any]]] = {}
    for kind, examples in shape.mapping(data.get("integrity") or {}, "integrity").items():
        if kind not in INTEGRITY:
            continue
        integrity[kind] = []
        for index, example in enumerate(shape.items(examples, f"integrity.{kind}")[:20]):
            example = shape.mapping(example, f"integrity.{kind}[{index}]")
            for key, value in example.items():
                if not (isinstance(value, str) and len(value) <= 1000 or isinstance(value, int)
                        and not isinstance(value, bool) and 0 <= value <= MAX_INT):
                    shape.fail(f"integrity.{kind}[{index}].{key}", "text or a count was expected")
            integrity[kind].append(example)
    evidence = {}
    for name, value in shape.mapping(data.get("evidence") or {}, "evidence").items():
        if name == "misrouted_top_receiver":
            if value is not None:
                pair = shape.items(value, "evidence.misrouted_top_receiver")
                if len(pair) != 2:
                    shape.fail("evidence.misrouted_top_receiver", "a name and a count were expected")
                value = [shape.text(pair[0], "evidence.misrouted_top_receiver[0]", 1000),
                         shape.count(pair[1], "evidence.misrouted_top_receiver[1]")]
            evidence[name] = value
        else:
            evidence[name] = shape.count(value, f"evidence.{name}")
    acks = data.get("acks")
    if acks is not None:
        acks = {name: shape.count(value, f"acks.{name}")
                for name, value in shape.mapping(acks, "acks").items()}
    series = []
    for index, entry in enumerate(shape.items(data.get("series") or [], "series")):
        place = f"series[{index}]"
        entry = shape.mapping(entry, place)
        series.append({"t": shape.count(entry.get("t"), place + ".t"),
                       "span": shape.number(entry.get("span", 1.0), place + ".span"),
                       "sent": shape.count(entry.get("sent"), place + ".sent"),
                       "delivered": shape.count(entry.get("delivered"), place + ".delivered"),
                       "errors": shape.count(entry.get("errors", 0), place + ".errors"),
                       "cpu": shape.number(entry.get("cpu", 0.0), place + ".cpu"),
                       "relay": shape.histogram(entry.get("relay"), place + ".relay")})
    workers = []
    for index, worker in enumerate(shape.items(data.get("workers") or [], "workers")):
        place = f"workers[{index}]"
        worker = shape.mapping(worker, place)
        workers.append({"name": shape.text(worker.get("name"), place + ".name", 1000),
                        "cpu_seconds": shape.number(worker.get("cpu_seconds"), place + ".cpu_seconds"),
                        "wall_seconds": shape.number(worker.get("wall_seconds"), place + ".wall_seconds"),
                        "devices": shape.count(worker.get("devices", 0), place + ".devices"),
                        "clients": shape.count(worker.get("clients", 0), place + ".clients"),
                        "delivered": shape.count(worker.get("delivered", 0), place + ".delivered")})
    thresholds = []
    for index, entry in enumerate(shape.items(data.get("thresholds") or [], "thresholds")):
        place = f"thresholds[{index}]"
        entry = shape.mapping(entry, place)
        thresholds.append((shape.text(entry.get("expression"), place + ".expression", 1000),
                           shape.flag(entry.get("held"), place + ".held"),
                           shape.text(entry.get("observed"), place + ".observed", 1000),
                           shape.flag(entry.get("default", False), place + ".default")))
    duration = shape.number(data.get("duration", 0.0), "duration")
    if duration < 0:
        shape.fail("duration", "a negative duration")
    part = {"counters": counters, "histograms": histograms, "errors": errors, "integrity": integrity,
            "evidence": evidence, "acks": acks, "series": series, "duration": duration,
            "aborted": shape.optional_text(data.get("aborted"), "aborted"),
            "interrupted": shape.flag(data.get("interrupted", False), "interrupted"),
            "workers": workers}
    return part, config, shape.optional_text(data.get("target"), "target"), thresholds
