"""Hostile values of each field's kind: structure-aware mutation, as libprotobuf-mutator's.

Byte mutations (programs.mutate) cut and flip; they never give a JSON field a value
of another type, nor a header an odd value, and type confusion is one of the
commonest ways a C/C++ server dies. A ``Hostile`` request is a register or a
private data with one place (a JSON field or object of the register body, a header,
a part of the request line) given a value of one class, sized by ``size``:

- JSON values (``JSON_CLASSES``): another type (object, array, number, float,
  negative, huge, null, true, false), the empty string, a long string, unicode
  escapes, an escaped NUL, nesting; JSON structure: the field missing, duplicated,
  or beside unknown ones; on an object (``TransProxy``, ``Header``, ``Body``, the
  whole body) the same classes make a body that is not the object it should be.
- headers (``HEADER_CLASSES``): missing, duplicated, empty, long, with a CR, an LF
  or a NUL, the name in another case, odd spacing, a number of an odd form.
- the request line (``LINE_CLASSES``): the method, the path, the version.

``size`` is each class's one parameter (a length, a count, a depth, which variant):
hypothesis shrinks it towards 0, the smallest value of the class, so a finding
shows the smallest value of its class that still fails (a header of 1,025 bytes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..defaults import AUTH_CODE
from ..protocol import PRIVATE_DATA_PATH, REGISTER_PATH, REGISTER_REQ
from .uuids import SELF, UNKNOWN

if TYPE_CHECKING:
    from .uuids import Uuids

MAX_SIZE = 65536                # the largest size drawn: a 64 KiB string
MAX_COUNT = 64                  # keys, items, nesting levels
MAX_DIGITS = 400

# Where a value goes. JSON places are paths in the register body ("" is the body itself).
JSON_PLACES = ("TransProxy.Body.SerialNumber", "TransProxy.Body.AuthCode", "TransProxy.Header.MessageType",
               "TransProxy.Header.TerminalType", "TransProxy.Header.CSeq", "TransProxy.Header.Version",
               "TransProxy.Body", "TransProxy.Header", "TransProxy", "")
HEADERS = {"register": ("Host", "Connection", "Content-Length"),
           "private_data": ("DestUuid", "SrcUuid", "AuthCode", "Content-Length", "Host", "Connection")}
LINE_PARTS = ("method", "path", "version")

JSON_CLASSES = ("object", "array", "number", "float", "negative", "huge", "null", "true", "false", "empty",
                "long", "unicode", "nul", "nested", "missing", "duplicated", "unknown")
HEADER_CLASSES = ("missing", "duplicated", "empty", "long", "cr", "lf", "nul", "case", "spacing", "number")
LINE_CLASSES = ("other", "long", "missing", "case")

FLOATS = ("0.5", "-0.0", "1e308", "1e309", "1e-400", "3.4028235e38", "-1.5")
NUMBERS = ("0", "-1", "18446744073709551616", "1.5", "0x10", "+5", "1e3", "9" * 30, "1 1")
OTHER_METHODS = ("GET", "post", "PUT", "POSTX", "P")
OTHER_PATHS = {"register": ("/transproxy", "/TransProxy/", "/TransProxy?x=1", "*", "/", PRIVATE_DATA_PATH,
                            "/x/../TransProxy"),
               "private_data": ("/privatedata", "/PrivateData/", "/PrivateData?x=1", "*", "/", REGISTER_PATH,
                                "/x/../PrivateData")}
OTHER_VERSIONS = ("HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", "http/1.1", "HTTP/0.9", "HTTP/", "HTTP/1.1 x")
SPACINGS = ("{name}:{value}", "{name}:    {value}", "{name} : {value}", "{name}:\t{value}", " {name}: {value}",
            "{name}: {value}   ", "{name}:\r\n {value}")
CONTROL = {"cr": "\r", "lf": "\n", "nul": "\x00"}
_MARK = "\x00tpsharness-hostile\x00"
_MARKED = json.dumps(_MARK)


@dataclass(frozen=True)
class Hostile:
    """A register (``base`` register) or private data (private_data) from pool
    index ``serial`` (to ``dest``), with the value of class ``kind`` and ``size`` at
    ``where``: ``json:<path>``, ``header:<name>`` or ``line:<part>``."""

    base: str
    where: str
    kind: str
    size: int = 0
    serial: int = 0
    dest: int = 0
    payload: bytes = b""

    @property
    def feature(self) -> str:
        """The state a signature names: ``register+Body.AuthCode=number``."""
        return f"{self.base.replace('_', '-')}+{self.where.split(':', 1)[1].removeprefix('TransProxy.') or 'body'}" \
               f"={self.kind}"

    def build(self, uuids: Uuids, host: str) -> bytes:
        place, _, name = self.where.partition(":")
        own = uuids.pool[self.serial]
        if self.base == "register":
            path = REGISTER_PATH
            body = register_json(own, name, self.kind, self.size) if place == "json" else \
                register_json(own, "", "", 0)
            headers = [("Host", host), ("Connection", "keep-alive"), ("Content-Length", str(len(body)))]
        else:
            path = PRIVATE_DATA_PATH
            body = self.payload
            headers = [("Host", host), ("AuthCode", AUTH_CODE), ("SrcUuid", own),
                       ("DestUuid", uuids.dest(self.dest, own)), ("Connection", "keep-alive"),
                       ("Content-Length", str(len(body)))]
        line: list[str | None] = ["POST", path, "HTTP/1.1"]
        if place == "line":
            line = request_line(line, LINE_PARTS.index(name), self.kind, self.size, self.base)
        lines = [" ".join(part for part in line if part is not None)]
        for header, value in headers:
            if place == "header" and header == name:
                lines += header_lines(header, value, self.kind, self.size)
            else:
                lines.append(f"{header}: {value}")
        return "\r\n".join(lines).encode("latin-1", "replace") + b"\r\n\r\n" + body

    def __str__(self) -> str:
        if self.base == "register":
            what = f"register(u{self.serial})"
        else:
            to = {UNKNOWN: "unknown", SELF: "self"}.get(self.dest, f"u{self.dest}")
            what = f"private_data(u{self.serial}->{to}, {self.payload!r})"
        place, _, name = self.where.partition(":")
        shown = name.removeprefix("TransProxy.") or "the body" if place == "json" else \
            f"header {name}" if place == "header" else f"the {name}"
        return f"{what} with {shown} {self.kind}({self.size})"


def json_value(kind: str, size: int) -> str:
    """The JSON text of a value of class ``kind`` (a value class, not a structure one)."""
    count = min(size, MAX_COUNT)
    if kind == "object":
        return "{" + ", ".join(f'"k{index}": "v"' for index in range(count)) + "}"
    if kind == "array":
        return "[" + ", ".join('"v"' for _ in range(count)) + "]"
    if kind == "number":
        return str(size)
    if kind == "float":
        return FLOATS[min(size, len(FLOATS) - 1)]
    if kind == "negative":
        return str(-(size + 1))
    if kind == "huge":
        return "9" * (19 + min(size, MAX_DIGITS))        # the least: just past a signed 64-bit integer
    if kind in ("null", "true", "false"):
        return kind
    if kind == "empty":
        return '""'
    if kind == "long":
        return '"' + "a" * min(size, MAX_SIZE) + '"'
    if kind == "unicode":
        return '"' + "\\u00e9\\u4e2d\\ud83d\\ude00\\ud800" * (1 + count) + '"'
    if kind == "nul":
        return '"' + "a" * min(size, MAX_SIZE) + '\\u0000b"'
    if kind == "nested":
        depth = 2 + count
        return "[" * depth + "]" * depth
    raise ValueError(f"not a JSON value class: {kind!r}")


def register_json(serial: str, path: str, kind: str, size: int) -> bytes:
    """The register body of the field devices' layout, with ``kind`` at ``path``."""
    document: dict[str, Any] = {"TransProxy": {
        "Header": {"CSeq": "1", "MessageType": REGISTER_REQ, "TerminalType": "Camera", "Version": "1.0"},
        "Body": {"AuthCode": AUTH_CODE, "SerialNumber": serial}}}
    if not kind:
        return json.dumps(document).encode()
    if not path:                    # the body itself
        whole = json.dumps(document)
        if kind == "missing":
            return b""
        if kind == "duplicated":
            return (whole + whole).encode()
        if kind == "unknown":
            return json.dumps({**document, **_unknown(size)}).encode()
        return json_value(kind, size).encode()
    *parents, key = path.split(".")
    parent = document
    for name in parents:
        parent = parent[name]
    original = json.dumps(parent[key])
    if kind == "missing":
        del parent[key]
        return json.dumps(document).encode()
    if kind == "unknown":
        parent.update(_unknown(size))
        return json.dumps(document).encode()
    parent[key] = _MARK
    text = json.dumps(document)
    if kind == "duplicated":
        other = '{}' if original.startswith("{") else json.dumps(json.loads(original) + "-dup")
        return text.replace(f'"{key}": {_MARKED}', f'"{key}": {original}, "{key}": {other}').encode()
    return text.replace(_MARKED, json_value(kind, size)).encode()


def _unknown(size: int) -> dict[str, str]:
    return {f"X-Unknown-{index}": "v" for index in range(1 + min(size, MAX_COUNT))}


def header_lines(name: str, value: str, kind: str, size: int) -> list[str]:
    """The header lines of ``name: value`` given a value of class ``kind``."""
    if kind == "missing":
        return []
    if kind == "duplicated":
        again = value if size == 0 else value + "0"
        return [f"{name}: {value}", f"{name}: {again}"]
    if kind == "empty":
        return [f"{name}: "]
    if kind == "long":
        return [f"{name}: {'x' * min(size, MAX_SIZE)}"]
    if kind in ("cr", "lf", "nul"):
        at = size % (len(value) + 1)
        return [f"{name}: {value[:at]}{CONTROL[kind]}{value[at:]}"]
    if kind == "case":
        forms = (name.lower(), name.upper(), name.swapcase(), name[:1].lower() + name[1:])
        return [f"{forms[size % len(forms)]}: {value}"]
    if kind == "spacing":
        return [SPACINGS[size % len(SPACINGS)].format(name=name, value=value)]
    if kind == "number":
        return [f"{name}: {NUMBERS[size % len(NUMBERS)]}"]
    raise ValueError(f"not a header class: {kind!r}")


def request_line(line: list[str | None], part: int, kind: str, size: int, base: str) -> list[str | None]:
    """``line`` (method, path, version) with part ``part`` given a value of class ``kind``
    (None: the part is left out)."""
    line = list(line)
    if kind == "missing":
        line[part] = None
    elif kind == "case":
        text = line[part] or ""
        line[part] = text.lower() if size % 2 == 0 else text.upper()
    elif kind == "long":
        line[part] = ("P" + "O" * min(size, MAX_SIZE), "/" + "a" * min(size, MAX_SIZE),
                      "HTTP/1." + "1" * min(size, MAX_SIZE))[part]
    else:
        variants = (OTHER_METHODS, OTHER_PATHS[base], OTHER_VERSIONS)[part]
        line[part] = variants[size % len(variants)]
    return line
