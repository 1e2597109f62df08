"""Anonymising a conversation before it is written: no serial, SrcUuid, payload or
auth code of the session survives.

Every uuid (serials, SrcUuids, DestUuids) becomes a pseudonym that is the same
wherever it occurs in one run (one Anonymizer, every file it writes); each payload
becomes random bytes of the same length, the same bytes wherever the same payload
occurs (the client's request and the copy relayed to the device); auth codes become
zeros (``0000`` for the usual four characters). Every replacement keeps the length
of what it replaces, so Content-Length stays right and each read keeps its size
and place. What cannot be read as TPS messages has the known uuids and auth codes
replaced wherever they occur in it.
"""

from __future__ import annotations

import hashlib
import os
import re

from ..protocol import PrivateData, RegisterRequest
from .conversation import RECEIVED, SENT, Conversation, messages

_HEADER = re.compile(rb"(\r\n(SrcUuid|DestUuid|AuthCode):[ \t]*)([^\r\n]*)", re.IGNORECASE)
_JSON_FIELD = re.compile(rb'("(SerialNumber|AuthCode)"\s*:\s*)("([^"\\]*)"|\d+)')
MIN_TEXT_MATCH = 3      # shorter uuids and codes are not replaced inside unreadable bytes


class Anonymizer:
    """Pseudonyms for one run: ``anonymize`` each conversation with the same one."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key if key is not None else os.urandom(16)
        self.pseudonyms: dict[str, str] = {}
        self.auth_codes: set[str] = set()
        self._taken: set[str] = set()

    def pseudonym(self, uuid: str) -> str:
        """The same-length stand-in for ``uuid`` (digits for digits), stable in this run."""
        known = self.pseudonyms.get(uuid)
        if known is not None:
            return known
        length = len(uuid)
        for attempt in range(1000):
            digest = hashlib.shake_256(self.key + b"uuid%d:" % attempt + uuid.encode("utf-8", "replace"))
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
        return "0" * len(code)

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
        for message in messages(stream)[0]:
            if isinstance(message, RegisterRequest) and requests:
                self.pseudonym(message.serial)
                self.auth_codes.add(message.auth_code)
            elif isinstance(message, PrivateData):
                self.pseudonym(message.src)
                self.pseudonym(message.dest)
                self.auth_codes.add(message.auth_code)
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
            else:
                raw = self._text(raw)
            out[start:start + len(raw)] = raw
            position = start + len(raw)
        if rest_at < len(stream):
            out[rest_at:] = self._text(stream[rest_at:])
        return bytes(out)

    def _private_data(self, message: PrivateData) -> bytes:
        raw = message.raw
        body_start = len(raw) - len(message.body)
        head = _HEADER.sub(self._header_value, raw[:body_start])
        return head + self.payload(message.body)

    def _header_value(self, match: re.Match[bytes]) -> bytes:
        value = match.group(3).decode("latin-1")
        if match.group(2).lower() == b"authcode":
            replaced = self.auth_code(value)
        else:
            stripped = value.strip()
            replaced = value.replace(stripped, self.pseudonym(stripped)) if stripped else value
        return match.group(1) + replaced.encode("latin-1", "replace")

    def _json_value(self, match: re.Match[bytes]) -> bytes:
        quoted = match.group(4)
        value = (quoted if quoted is not None else match.group(3)).decode("latin-1")
        replaced = self.auth_code(value) if match.group(2) == b"AuthCode" else self.pseudonym(value)
        encoded = replaced.encode("latin-1", "replace")
        return match.group(1) + (b'"%s"' % encoded if quoted is not None else encoded)

    def _text(self, data: bytes) -> bytes:
        """Known uuids and auth codes replaced wherever they occur (longest first)."""
        values = [(u, p) for u, p in self.pseudonyms.items() if len(u) >= MIN_TEXT_MATCH]
        values += [(c, self.auth_code(c)) for c in self.auth_codes if len(c) >= MIN_TEXT_MATCH]
        for original, replaced in sorted(values, key=lambda pair: -len(pair[0])):
            encoded = original.encode("latin-1", "replace")
            if encoded in data:
                data = data.replace(encoded, replaced.encode("latin-1", "replace"))
        return data
