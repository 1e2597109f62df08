"""Anonymising a conversation before it is written: no serial, SrcUuid, payload or
auth code of the session survives.

Every uuid (serials, SrcUuids, DestUuids) becomes a pseudonym that is the same
wherever it occurs in one run (one Anonymizer, every file it writes); each payload
becomes random bytes of the same length, the same bytes wherever the same payload
occurs (the client's request and the copy relayed to the device); auth codes become
zeros (``0000`` for the usual four characters). Every replacement keeps the length
in bytes of what it replaces, so Content-Length stays right and each read keeps its
size and place. Bytes that are not whole TPS messages (a message the recording cut
short, a peer's garbage) get the same: the uuids and auth codes of their headers
replaced, their bodies made random, and the known uuids replaced wherever they occur.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

from ..protocol import REGISTER_PATH, BadRequest, PrivateData, RegisterRequest
from .conversation import RECEIVED, SENT, Conversation, messages

_HEADER = re.compile(rb"(\r\n(SrcUuid|DestUuid|AuthCode):[ \t]*)([^\r\n]*)", re.IGNORECASE)
_JSON_FIELD = re.compile(rb'("(SerialNumber|AuthCode)"\s*:\s*)("((?:[^"\\]|\\.)*)"|\d+)')
_CONTENT_LENGTH = re.compile(rb"\r\nContent-Length:[ \t]*(\d{1,18})[ \t]*(?=\r\n)", re.IGNORECASE)
_HEAD_END = b"\r\n\r\n"
_REGISTER_START = b"POST %s " % REGISTER_PATH.encode()
MIN_TEXT_MATCH = 3      # shorter uuids and codes (in bytes) are not replaced inside unreadable bytes


MAX_TRIE_DEPTH = 200     # bytes of a word the pattern's trie follows (the rest is literal)


def _any_of(words: list[bytes]) -> bytes:
    """A pattern that matches any of ``words``, the longest one where several begin at
    one place: their trie, so that a text is read once whatever the number of words (an
    alternation of 30,000 uuids tried each at every byte: 17 s for 2.5 MB)."""
    trie: dict[int, dict] = {}          # byte -> the node after it; -1: a word ends here
    for word in words:
        node = trie
        for byte in word[:MAX_TRIE_DEPTH]:
            node = node.setdefault(byte, {})
        node.setdefault(-1, {}).setdefault(-2, []).append(word[MAX_TRIE_DEPTH:])
    return _branch(trie)


def _branch(node: dict) -> bytes:
    ends = node.get(-1)
    parts = [re.escape(bytes([byte])) + _branch(child) for byte, child in node.items() if byte >= 0]
    if ends is not None:        # words past the depth end in their literal tails, longest first
        tails = sorted(ends[-2], key=len, reverse=True)
        parts += [re.escape(tail) for tail in tails if tail]
    if not parts:
        return b""
    body = parts[0] if len(parts) == 1 else b"(?:" + b"|".join(parts) + b")"
    if ends is not None and b"" in ends[-2]:
        return b"(?:" + body + b")?"
    return body


def _identity(wire: bytes) -> str:
    """The uuid a value's bytes spell: UTF-8 where it is, each other byte kept apart."""
    return wire.decode("utf-8", "surrogateescape")


def _wire(uuid: str) -> bytes:
    """The bytes ``uuid`` takes on the wire (the inverse of ``_identity``)."""
    return uuid.encode("utf-8", "surrogateescape")


class Anonymizer:
    """Pseudonyms for one run: ``anonymize`` each conversation with the same one."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key if key is not None else os.urandom(16)
        self.pseudonyms: dict[str, str] = {}
        self.auth_codes: set[str] = set()
        self._taken: set[str] = set()
        self._known = (0, 0)            # what _text's pattern was made from (they only grow)
        self._replacements: dict[bytes, bytes] = {}
        self._pattern: re.Pattern[bytes] | None = None

    def pseudonym(self, uuid: str) -> str:
        """The stand-in for ``uuid``, stable in this run: ASCII of the same length in
        bytes (digits for digits), so every stream it is written into keeps its size."""
        known = self.pseudonyms.get(uuid)
        if known is not None:
            return known
        length = len(_wire(uuid))
        for attempt in range(1000):
            digest = hashlib.shake_256(self.key + b"uuid%d:" % attempt + _wire(uuid))
            if uuid.isascii() and uuid.isdigit():
                candidate = "".join(str(b % 10) for b in digest.digest(length))
                if length > 1 and candidate[0] == "0":
                    candidate = "1" + candidate[1:]
            else:
                text = digest.hexdigest(length)[:length]
                candidate = ("anon-" + text)[:length] if length >= 9 else text
            if candidate != uuid and candidate not in self._taken:
                break
        self.pseudonyms[uuid] = candidate
        self._taken.add(candidate)
        return candidate

    def payload(self, body: bytes) -> bytes:
        """Random-looking bytes of the same length, the same for the same payload."""
        return hashlib.shake_256(self.key + b"payload:" + body).digest(len(body)) if body else b""

    @staticmethod
    def auth_code(code: str) -> str:
        return "0" * len(_wire(code))

    # -- a conversation ---------------------------------------------------------------------

    def anonymize(self, conversation: Conversation) -> Conversation:
        """A copy of ``conversation`` with every identifying value replaced."""
        streams: dict[tuple[int, str], list[int]] = {}     # (conn, kind) -> event indexes
        for index, (_, conn, kind, _) in enumerate(conversation.events):
            if kind in (SENT, RECEIVED):
                streams.setdefault((conn, kind), []).append(index)
        for (_, kind), indexes in streams.items():
            self._learn(b"".join(conversation.events[i][3] for i in indexes), requests=kind == SENT)
        events = list(conversation.events)
        for indexes in streams.values():
            stream = self._rewrite(b"".join(events[i][3] for i in indexes))
            position = 0
            for i in indexes:
                time, conn, kind, data = events[i]
                events[i] = (time, conn, kind, stream[position:position + len(data)])
                position += len(data)
        out = Conversation(peers={conn: "actor" for conn in conversation.peers},
                           started_mid_stream=set(conversation.started_mid_stream),
                           ended=conversation.ended)
        for event in events:
            out.add(*event)
        return out

    def _learn(self, stream: bytes, *, requests: bool) -> None:
        found, rest_at = messages(stream)
        for message in found:
            if isinstance(message, RegisterRequest) and requests:
                self.pseudonym(message.serial)
                self.auth_codes.add(message.auth_code)
            elif isinstance(message, PrivateData):
                self.pseudonym(_identity(message.src.encode("latin-1")))
                self.pseudonym(_identity(message.dest.encode("latin-1")))
                self.auth_codes.add(_identity(message.auth_code.encode("latin-1")))
        unread = [m.raw for m in found if isinstance(m, BadRequest)] + [stream[rest_at:]]
        self._learn_unread(b"\r\n".join(unread), requests=requests)

    def _learn_unread(self, rest: bytes, *, requests: bool) -> None:
        """The uuids and auth codes of headers and register fields in bytes that are not
        whole TPS messages (a message cut short, a request the TPS would refuse)."""
        for match in _HEADER.finditer(rest):
            value = _identity(match.group(3)).strip()
            if value and match.group(2).lower() == b"authcode":
                self.auth_codes.add(value)
            elif value:
                self.pseudonym(value)
        if requests:
            for match in _JSON_FIELD.finditer(rest):
                value = self._json_text(match)
                if match.group(2) == b"AuthCode":
                    self.auth_codes.add(value)
                else:
                    self.pseudonym(value)
        self.auth_codes.discard("")

    def _rewrite(self, stream: bytes) -> bytes:
        found, rest_at = messages(stream)
        out = bytearray(stream)
        position = 0
        for message in found:
            start = stream.find(message.raw, position)
            if start < 0:       # cannot happen: the reader returns slices of the stream
                continue
            raw = message.raw
            if isinstance(message, PrivateData):
                raw = self._private_data(message)
            elif isinstance(message, RegisterRequest):
                raw = _JSON_FIELD.sub(self._json_value, raw)
            elif isinstance(message, BadRequest):
                raw = self._unread(raw)
            else:
                raw = self._text(raw)
            out[start:start + len(raw)] = raw
            position = start + len(raw)
        if rest_at < len(stream):
            out[rest_at:] = self._unread(stream[rest_at:])
        return bytes(out)

    def _unread(self, data: bytes) -> bytes:
        """Bytes that are not whole messages (a message the recording cut short, a peer's
        garbage): each head's uuids and auth codes replaced, each body made random. A body
        runs for the head's Content-Length; without one, to the end of the bytes."""
        out = bytearray()
        position = 0                # walked by offset: a long stream of heads is read once
        while position < len(data):
            end = data.find(_HEAD_END, position)
            head_end = len(data) if end < 0 else end + len(_HEAD_END)
            head = data[position:head_end]
            out += self._text(_HEADER.sub(self._header_value, head))
            length = _CONTENT_LENGTH.search(head)
            body_end = min(len(data), head_end + int(length.group(1))) if length and end >= 0 else len(data)
            out += self._body(head, data[head_end:body_end])
            position = body_end
        return bytes(out)

    def _body(self, head: bytes, body: bytes) -> bytes:
        """A register's JSON with its fields replaced; any other body made random."""
        if head.startswith(_REGISTER_START):
            try:
                json.loads(body)
            except (ValueError, RecursionError):
                pass
            else:
                return _JSON_FIELD.sub(self._json_value, body)
        return self.payload(body)

    def _private_data(self, message: PrivateData) -> bytes:
        raw = message.raw
        body_start = len(raw) - len(message.body)
        head = _HEADER.sub(self._header_value, raw[:body_start])
        return head + self.payload(message.body)

    def _header_value(self, match: re.Match[bytes]) -> bytes:
        value = match.group(3)
        stripped = value.strip()
        if not stripped:
            return match.group(0)
        if match.group(2).lower() == b"authcode":
            replaced = self.auth_code(_identity(stripped))
        else:
            replaced = self.pseudonym(_identity(stripped))
        return match.group(1) + value.replace(stripped, replaced.encode("ascii"))

    @staticmethod
    def _json_text(match: re.Match[bytes]) -> str:
        """The value a _JSON_FIELD match holds, JSON escapes read."""
        quoted = match.group(4)
        if quoted is None:
            return match.group(3).decode("ascii")
        try:
            value = json.loads(b'"' + quoted + b'"')
        except ValueError:
            return _identity(quoted)
        return value if isinstance(value, str) else _identity(quoted)

    def _json_value(self, match: re.Match[bytes]) -> bytes:
        """The field with its value replaced; a value written with escapes is longer than
        its stand-in, which is padded with spaces after it (JSON ignores them)."""
        value = self._json_text(match)
        replaced = (self.auth_code(value) if match.group(2) == b"AuthCode" else self.pseudonym(value)).encode("ascii")
        if match.group(4) is None:
            return match.group(1) + replaced
        padding = len(match.group(4)) - len(replaced)
        if padding < 0:     # cannot happen: an escape is never shorter than its UTF-8
            replaced, padding = replaced[:len(match.group(4))], 0
        return match.group(1) + b'"' + replaced + b'"' + b" " * padding

    def _text(self, data: bytes) -> bytes:
        """Known uuids and auth codes replaced wherever they occur (longest first), in
        one pass of one pattern, made again only when a uuid or a code was learnt."""
        known = (len(self.pseudonyms), len(self.auth_codes) - ("" in self.auth_codes))
        if self._known != known:
            values = {_wire(u): p.encode("ascii") for u, p in self.pseudonyms.items()}
            values.update((_wire(c), self.auth_code(c).encode("ascii")) for c in self.auth_codes)
            self._replacements = {original: replaced for original, replaced in values.items()
                                  if len(original) >= MIN_TEXT_MATCH}
            self._pattern = re.compile(_any_of(list(self._replacements))) if self._replacements else None
            self._known = known
        if self._pattern is None:
            return data
        return self._pattern.sub(lambda match: self._replacements[match.group()], data)
