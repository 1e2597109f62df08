"""The field profile: what a field server makes of one read, rule by rule.

docs/protocol.md section 3.1 gives the rules a field server follows for each read
(of up to READ_SIZE bytes), in order; each function below is one of them, in the
same order, and says which. ``read`` applies them to a read and returns what the
server then answers: a register (``FieldRegister``), private data carrying the
whole read (``PrivateData``), or a 400 (``Unrecognised``, which also cuts the idle
timeout; ``BadRequest``: a register or private data the rules refuse).
The uuid table's rules (sections 1 and 2: 404 first, then the sender claims its
SrcUuid, then 400 for a message to itself, else 200 and the relay) are the same in
both profiles and live in ``server.FakeTPS``.

Where a field server would crash, this profile takes the sane path (docs/protocol.md
section 4): a SerialNumber, MessageType or TerminalType that is an object or an
array, or a TransProxy, Header or Body that is no object, gets 400 (jsoncpp's
``asString()`` asserts on them); a second, unknown serial on a registered
connection closes it and forgets both serials (the table's rule, as by default).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from tpsharness.protocol import (REGISTER_REQ, BadRequest, PrivateData, RegisterRequest, Unrecognised, quote,
                                 quote_text)

__all__ = ["READ_SIZE", "FieldRegister", "read"]

READ_SIZE = 4096                # what a field server reads at once: one read, one message
REGISTER_MARK = "POST /TransProxy"
PRIVATE_DATA_MARK = "POST /PrivateData"
END_OF_HEAD = "\r\n\r\n"


@dataclass(frozen=True, slots=True)
class FieldRegister(RegisterRequest):
    """A register as a field server reads it: its serial may be empty (rule 3: 200,
    and nothing is entered in the table)."""

    def __post_init__(self) -> None:
        """Any text is a serial here, the empty one included."""


def read(data: bytes) -> FieldRegister | PrivateData | BadRequest:
    """What a field server makes of the read ``data``: rules 1 to 6, in order."""
    text = rule_1_visible_text(data)
    kind = rule_2_kind(text)
    if kind == REGISTER_MARK:
        return rule_3_register(text, data)
    if kind == PRIVATE_DATA_MARK:
        return rule_4_private_data(text, data)
    return Unrecognised(f"a read with neither {REGISTER_MARK!r} nor {PRIVATE_DATA_MARK!r} "
                      f"({len(data)} bytes: {quote(data, 40)})", data)


def rule_1_visible_text(data: bytes) -> str:
    """Rule 1: the read is searched as text that ends at its first NUL; the bytes
    after it are invisible to every search (and still forwarded, rule 5)."""
    end = data.find(b"\x00")
    return (data if end < 0 else data[:end]).decode("utf-8", "surrogateescape")


def rule_2_kind(text: str) -> str | None:
    """Rule 2: ``POST /TransProxy`` anywhere makes a register; else ``POST
    /PrivateData`` anywhere makes private data; else the read is unrecognised
    (None: 400, idle timeout cut). Nothing else of the request line is checked."""
    if REGISTER_MARK in text:
        return REGISTER_MARK
    if PRIVATE_DATA_MARK in text:
        return PRIVATE_DATA_MARK
    return None


def rule_3_register(text: str, data: bytes) -> FieldRegister | BadRequest:
    """Rule 3: the body is what follows the first blank line, read as JSON by a
    lenient parser (what follows the first whole value is ignored); MessageType,
    SerialNumber and TerminalType must be there, read as text, and MessageType must
    be MSG_TRANSPROXY_REGISTER_REQ. Content-Length and every header are ignored."""
    head_end = text.find(END_OF_HEAD)
    if head_end < 0:
        return BadRequest("a register read without a blank line before its body", data)
    try:
        root = _first_json_value(text[head_end + len(END_OF_HEAD):])
    except ValueError:
        return BadRequest(f"a register body that is not JSON: "
                          f"{quote_text(text[head_end + len(END_OF_HEAD):], 40)}", data)
    transproxy = _member(root, "TransProxy")
    header, body = _member(transproxy, "Header"), _member(transproxy, "Body")
    fields = {name: _as_text(_member(node, name)) for node, name in (
        (header, "MessageType"), (body, "SerialNumber"), (header, "TerminalType"))}
    unreadable = [name for name, value in fields.items() if value is None]
    if unreadable:
        return BadRequest(f"a register whose {unreadable[0]} a field server cannot read as text "
                       "(missing, or an object or an array)", data)
    if fields["MessageType"] != REGISTER_REQ:
        return BadRequest(f"register MessageType is {quote_text(fields['MessageType'], 40)}, "
                       f"not {REGISTER_REQ}", data)
    return FieldRegister(str(fields["SerialNumber"]), str(fields["TerminalType"]),
                         _as_text(_member(body, "AuthCode")) or "", "", data)


def rule_4_private_data(text: str, data: bytes) -> PrivateData | BadRequest:
    """Rule 4: the destination is the text after the first ``DestUuid:`` anywhere in
    the read (headers or body), after any spaces, up to the next CRLF; then the
    same for ``SrcUuid:``. Names match exactly; either missing, or no CRLF after
    it: 400. What follows (404, the claim, 400 to itself, 200) is the table's."""
    dest = _found_after(text, "DestUuid:")
    if dest is None:
        return BadRequest("PrivateData without a DestUuid: line", data)
    src = _found_after(text, "SrcUuid:")
    if src is None:
        return BadRequest("PrivateData without a SrcUuid: line", data)
    return rule_5_forwarded(src, dest, _found_after(text, "AuthCode:") or "", data)


def rule_5_forwarded(src: str, dest: str, auth_code: str, data: bytes) -> PrivateData:
    """Rule 5: on 200, the whole read (every byte: NULs and any further requests in
    it included) goes to the destination's connection, after the ack is queued. So
    requests pipelined to several devices in one read all reach the first one's."""
    return PrivateData(src, dest, auth_code, data, data)


# Rule 6 (any other outcome: the read is discarded and the status sent; a register
# closed without a reply sends nothing) is no decision of the read's: it is the
# server's answer to a BadRequest, and the table's closing rule (section 1).


def _found_after(text: str, name: str) -> str | None:
    """The value after the first ``name`` in ``text``: past any spaces, up to the next
    CRLF; None without ``name`` or without a CRLF after it (rule 4)."""
    start = text.find(name)
    if start < 0:
        return None
    start += len(name)
    end = text.find("\r\n", start)
    if end < 0:
        return None
    return text[start:end].lstrip(" ")


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(strict=False, parse_int=str, parse_float=str, parse_constant=_no_constant)


def _first_json_value(text: str) -> object:
    """The first whole JSON value of ``text`` (what follows it is ignored); ValueError
    if there is none. Lenient as jsoncpp's reader is: control characters inside
    strings, and comments where a value or a member name begins, are accepted. Numbers
    keep their text (rule 3 reads them as text); NaN and Infinity are not JSON."""
    if "/" in text:
        text = _without_comments(text)
    try:
        value, _ = _DECODER.raw_decode(text, len(text) - len(text.lstrip(" \t\r\n")))
    except RecursionError:
        raise ValueError("nested too deeply") from None
    return value


# A string (so that what looks like a comment inside one is left alone), or a comment.
_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\]+|\\.)*"?|//[^\n]*|/\*.*?\*/', re.DOTALL)
_BEFORE_A_VALUE_OR_NAME = ("", "{", "[", ",", ":")     # where jsoncpp's reader skips comments


def _without_comments(text: str) -> str:
    """``text`` with each comment that jsoncpp's reader skips replaced by a space: one
    where a value or a member name begins (measured against the public C++ field
    server). One after a value or a name stays, for the decoder to refuse, as that
    reader does; so does a ``/`` that begins no comment."""
    kept: list[str] = []
    start, previous = 0, ""       # the last character that is not blank, outside comments
    for match in _STRING_OR_COMMENT.finditer(text):
        if match.group().startswith('"'):
            continue
        before = text[start:match.start()].rstrip(" \t\r\n")
        previous = before[-1:] or previous
        if previous in _BEFORE_A_VALUE_OR_NAME:
            kept.append(text[start:match.start()] + " ")
            start = match.end()
    return "".join(kept) + text[start:]


_MISSING = object()          # what _member finds where there is nothing to find


def _member(node: object, name: str) -> object:
    """``node[name]``, or _MISSING when node is no object or has no such member."""
    return node.get(name, _MISSING) if isinstance(node, dict) else _MISSING


def _as_text(value: object) -> str | None:
    """A JSON value as rule 3 reads it: a string as it is, a number as its text,
    true/false as those words, null as the empty string. None for a missing value,
    and for an object or an array, where the field server asserts (the sane path:
    400)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return None
