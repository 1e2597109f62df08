"""The TPS wire protocol, sans-IO: builders for every message, and readers.

Bytes in, messages out; no sockets here. ``Reader`` is the fast tolerant reader
both sides use: it frames by header block and Content-Length, accepts the field
server's replies that end at the header block (plus one optional NUL), accepts a
relayed ``POST /PrivateData`` request where replies were expected, skips stray
CRLFs, and bounds what it buffers. ``StrictReader`` frames and validates with h11,
the reference (docs/protocol.md section 5).

A local misuse (a builder given a header value with CR/LF) raises InvalidArgument; a
peer's bytes that cannot be read raise ProtocolError, which quotes them.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeAlias

if TYPE_CHECKING:      # h11 is imported when a StrictReader is made: the hot path never needs it
    import h11

from .defaults import AUTH_CODE, HOST, KEEPALIVE_INTERVAL, PORT
from .errors import InvalidArgument, MessageTooLarge, ProtocolError
from .text import printable, quote, quote_text

__all__ = [
    "DEFAULT_PORT", "DEFAULT_HOST_HEADER", "MAX_HEADER", "DEFAULT_MAX_BODY", "NEED_DATA",
    "RegisterRequest", "PrivateData", "BadRequest", "Unrecognised", "Reply", "RegisterReply", "Message",
    "register_request", "private_data_request", "PrivateDataTemplate",
    "register_reply", "reply", "Reader", "StrictReader", "quote", "quote_text", "status_text",
]

# -- wire constants ------------------------------------------------------------------

DEFAULT_PORT = PORT
DEFAULT_HOST_HEADER = f"{HOST}:{PORT}"  # the Host header builders send when not told
MAX_HEADER = 16 * 1024                  # a header block longer than this is refused
DEFAULT_MAX_BODY = 1024 * 1024          # bodies longer than this are refused
MAX_LENGTH_DIGITS = 18                  # a longer Content-Length exceeds any body limit
REQUEST_START = b"POST "                # every request a TPS accepts begins so

REGISTER_PATH = "/TransProxy"
PRIVATE_DATA_PATH = "/PrivateData"
REGISTER_REQ = "MSG_TRANSPROXY_REGISTER_REQ"
REGISTER_RSP = "MSG_TRANSPROXY_REGISTER_RSP"

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 413: "Payload Too Large"}

# The field server's register reply head: exactly these headers, in this order.
_REGISTER_REPLY_HEAD = ("HTTP/1.1 {status} {reason}\r\nContent-Encoding: UTF-8\r\n"
                        "Content-Length: {length}\r\nContent-Type: text/plain\r\n\r\n")
_FIELD_REPLY = "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n\r\n"
_STRICT_REPLY = "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"


class _NeedData(enum.Enum):
    """The type of NEED_DATA (an enum, so that ``message is NEED_DATA`` narrows for mypy)."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData.NEED_DATA
"""What ``next()`` returns when the buffered bytes do not yet hold a whole message."""
_FILLER = (13, 10, 0)       # stray CR, LF, and the NUL older builds put after replies
_REQUEST_FILLER = (13, 10)  # the CRLF field devices send after a request's body


# -- messages --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """A device's POST /TransProxy, MSG_TRANSPROXY_REGISTER_REQ."""

    serial: str
    terminal_type: str = "Camera"
    auth_code: str = AUTH_CODE
    cseq: str = "1"
    raw: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.serial, str) or not self.serial:
            raise InvalidArgument(f"a serial must be a non-empty string, not {self.serial!r}")


@dataclass(frozen=True, slots=True)
class PrivateData:
    """A POST /PrivateData: ``body`` goes from ``src`` to ``dest``; ``raw`` is the
    whole request as it arrived (what a TPS relays)."""

    src: str
    dest: str
    auth_code: str
    body: bytes
    raw: bytes = field(default=b"", repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class BadRequest:
    """A request that is framed but not one the TPS accepts; a TPS answers 400."""

    reason: str
    raw: bytes = field(default=b"", repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Unrecognised(BadRequest):
    """Input that is neither a register nor private data (garbage, another method or
    path): 400, and a field server cuts that connection's idle timeout (docs/protocol.md
    section 3). A refused register or private data is a plain BadRequest: it keeps it."""


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP reply: the PrivateData ack forms, 400s and 404s, or anything else."""

    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict, compare=False)
    body: bytes = b""
    raw: bytes = field(default=b"", repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class RegisterReply:
    """A reply whose body is the register JSON (MSG_TRANSPROXY_REGISTER_RSP)."""

    error_num: str
    error_string: str
    keepalive_interval: str
    utc_time: str
    status: int = 200
    reason: str = "OK"
    headers: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error_num == "200"


Message: TypeAlias = RegisterRequest | PrivateData | BadRequest | Reply | RegisterReply
"""Whatever a reader returns for one whole message."""


REASON_SHOWN = 80       # characters of a peer's reason phrase that messages show


def status_text(reply: Reply | RegisterReply) -> str:
    """'400 Bad Request': a reply's status and reason phrase as messages show them, the
    reason escaped and cut (a peer's text: it may hold ESC, '|' or 12 kB)."""
    return f"{reply.status} {printable(reply.reason, REASON_SHOWN)}".rstrip()


# -- builders ----------------------------------------------------------------------------

def _header_value(name: str, value: object) -> str:
    value = str(value)
    if "\r" in value or "\n" in value:
        raise InvalidArgument(f"{name} must not contain CR or LF: {value!r}")
    return value


def register_body(serial: str, *, cseq: str | int = "1", auth_code: str = AUTH_CODE,
                  terminal_type: str = "Camera", message_type: str = REGISTER_REQ,
                  version: str = "1.0") -> bytes:
    """The register JSON, in the field devices' exact layout."""
    return json.dumps({"TransProxy": {
        "Header": {"CSeq": str(cseq), "MessageType": message_type,
                   "TerminalType": terminal_type, "Version": version},
        "Body": {"AuthCode": auth_code, "SerialNumber": serial}}}).encode()


def register_request(serial: str, *, host: str = DEFAULT_HOST_HEADER, cseq: str | int = "1",
                     auth_code: str = AUTH_CODE, terminal_type: str = "Camera",
                     trailing_crlf: bool = False, body: bytes | None = None) -> bytes:
    """POST /TransProxy registering ``serial``; ``body`` overrides the JSON (for tests)."""
    if body is None:
        body = register_body(serial, cseq=cseq, auth_code=auth_code, terminal_type=terminal_type)
    head = (f"POST {REGISTER_PATH} HTTP/1.1\r\nHost: {_header_value('Host', host)}\r\n"
            f"Connection: keep-alive\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body + (b"\r\n" if trailing_crlf else b"")


class PrivateDataTemplate:
    """Prebuilt POST /PrivateData from ``src`` to ``dest``: ``build(payload)`` only
    appends the length and the payload (the hot path of load tests)."""

    __slots__ = ("_prefix",)

    def __init__(self, src: str, dest: str, *, host: str = DEFAULT_HOST_HEADER,
                 auth_code: str = AUTH_CODE) -> None:
        self._prefix = (
            f"POST {PRIVATE_DATA_PATH} HTTP/1.1\r\nHost: {_header_value('Host', host)}\r\n"
            f"AuthCode: {_header_value('AuthCode', auth_code)}\r\n"
            f"SrcUuid: {_header_value('SrcUuid', src)}\r\n"
            f"DestUuid: {_header_value('DestUuid', dest)}\r\n"
            f"Connection: keep-alive\r\nContent-Length: ").encode()

    def build(self, payload: bytes) -> bytes:
        return b"%s%d\r\n\r\n%s" % (self._prefix, len(payload), payload)


def private_data_request(src: str, dest: str, payload: bytes | bytearray | memoryview, *,
                         host: str = DEFAULT_HOST_HEADER, auth_code: str = AUTH_CODE) -> bytes:
    """POST /PrivateData carrying ``payload`` (any bytes) from ``src`` to ``dest``."""
    return PrivateDataTemplate(src, dest, host=host, auth_code=auth_code).build(bytes(payload))


def register_reply(*, utc_time: object, keepalive_interval: int | str = KEEPALIVE_INTERVAL,
                   error_num: int | str = "200", error_string: str = "Success OK",
                   status: int = 200) -> bytes:
    """The field server's register reply: pretty JSON, sorted keys, 3-space indent,
    "KeepAliveIntervel" misspelled as on the wire, correct Content-Length."""
    body = json.dumps({"TransProxy": {
        "Body": {"KeepAliveIntervel": str(keepalive_interval), "UtcTime": str(utc_time)},
        "Header": {"ErrorNum": str(error_num), "ErrorString": error_string,
                   "MessageType": REGISTER_RSP, "Version": "1.0"}}},
        indent=3, sort_keys=True, separators=(",", " : ")).encode() + b"\n"
    head = _REGISTER_REPLY_HEAD.format(status=status, reason=REASONS.get(status, "Unknown"),
                                       length=len(body))
    return head.encode() + body


@functools.lru_cache(maxsize=64)      # a server sends the same few replies all day
def reply(status: int, *, nul: bool = False, strict: bool = False) -> bytes:
    """A PrivateData-style reply: field form (no Content-Length, optionally the older
    builds' trailing NUL) or strict form (Content-Length: 0)."""
    template = _STRICT_REPLY if strict else _FIELD_REPLY
    data = template.format(status=status, reason=REASONS.get(status, "Unknown")).encode()
    return data + b"\x00" if nul and not strict else data


# -- classification: framed HTTP -> typed messages ----------------------------------------

def _json_strings(body: bytes, *path: str, numbers_as_text: bool = False) -> dict[str, Any] | None:
    """body's JSON object at ``path`` (a dict), or None. ``numbers_as_text``: JSON
    numbers come back as their decimal text (``4242`` -> ``"4242"``), as field
    servers read a device simulator's numeric SerialNumber."""
    try:
        if numbers_as_text:
            node = json.loads(body, parse_int=str, parse_float=str)
        else:
            node = json.loads(body)
    except (ValueError, RecursionError):
        return None
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node if isinstance(node, dict) else None


def classify_request(method: str | None, target: str, headers: dict[str, str], body: bytes,
                     raw: bytes) -> RegisterRequest | PrivateData | BadRequest:
    """A framed request as RegisterRequest, PrivateData or BadRequest.

    A register's fields may be JSON strings or numbers (their decimal text); a reason
    quotes a peer's text by a short prefix only (docs/protocol.md section 1).
    """
    if method is None:
        return Unrecognised(f"not an HTTP request line: {quote_text(target)}", raw)
    if method != "POST":
        return Unrecognised(f"unsupported method {method[:20]} {quote_text(target)}", raw)
    if target == PRIVATE_DATA_PATH:
        src = headers.get("srcuuid")
        dest = headers.get("destuuid")
        if not dest:
            return BadRequest("PrivateData without DestUuid", raw)
        if not src:
            return BadRequest("PrivateData without SrcUuid", raw)
        return PrivateData(src, dest, headers.get("authcode", ""), body, raw)
    if target == REGISTER_PATH:
        header = _json_strings(body, "TransProxy", "Header", numbers_as_text=True)
        payload = _json_strings(body, "TransProxy", "Body", numbers_as_text=True)
        if header is None or payload is None:
            return BadRequest(f"register body is not the TransProxy JSON: {quote(body)}", raw)
        if header.get("MessageType") != REGISTER_REQ:
            return BadRequest(f"register MessageType is {quote_text(header.get('MessageType'))}, "
                              f"not {REGISTER_REQ}", raw)
        serial = payload.get("SerialNumber")
        terminal_type = header.get("TerminalType")
        if not isinstance(serial, str) or not serial:
            return BadRequest("register without a SerialNumber string or number", raw)
        if not isinstance(terminal_type, str):
            return BadRequest("register without a TerminalType string", raw)
        auth_code = payload.get("AuthCode", "")
        cseq = header.get("CSeq", "")
        return RegisterRequest(serial, terminal_type, auth_code if isinstance(auth_code, str) else "",
                               cseq if isinstance(cseq, str) else "", raw)
    return Unrecognised(f"unknown path {quote_text(target)}", raw)


def classify_reply(status: int, reason: str, headers: dict[str, str], body: bytes,
                   raw: bytes) -> RegisterReply | Reply:
    """A framed reply as RegisterReply (when its body is the register JSON) or Reply."""
    if body:
        header = _json_strings(body, "TransProxy", "Header")
        if header is not None and header.get("MessageType") == REGISTER_RSP:
            payload = _json_strings(body, "TransProxy", "Body") or {}
            return RegisterReply(str(header.get("ErrorNum", "")), str(header.get("ErrorString", "")),
                                 str(payload.get("KeepAliveIntervel", "")),
                                 str(payload.get("UtcTime", "")), status, reason, headers, raw)
    return Reply(status, reason, headers, body, raw)


# -- the fast tolerant reader ---------------------------------------------------------------

class _MessageReader:
    """Iterating a reader yields the whole messages buffered now."""

    __slots__ = ()

    def next(self) -> Message | _NeedData:
        """The next whole message, or NEED_DATA."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Message]:
        while True:
            message = self.next()
            if message is NEED_DATA:
                return
            yield message


class Reader(_MessageReader):
    """Frames TPS messages from a byte stream, however it is split or batched.

    ``feed(data)``, then ``next()`` until it returns NEED_DATA (or iterate).
    ``eof()`` when the peer closed. Raises ProtocolError for bytes that cannot be
    framed; the reader is then unusable (discard it, or close the connection).

    ``requests_only`` is a TPS's side: where a message begins, bytes that cannot
    begin ``POST `` are refused at once (no waiting for a header block that a
    garbage or GET sender may never finish), and only CR/LF is skipped as filler
    (the NUL after replies has no place in requests).
    """

    __slots__ = ("_buf", "_max_body", "_max_header", "_head", "_filler", "_requests_only")

    def __init__(self, *, max_body: int = DEFAULT_MAX_BODY, max_header: int = MAX_HEADER,
                 requests_only: bool = False) -> None:
        self._buf = bytearray()
        self._max_body = max_body
        self._max_header = max_header
        self._head: tuple[int, int, Head] | None = None     # (start, body_start, head) being read
        self._requests_only = requests_only
        self._filler = _REQUEST_FILLER if requests_only else _FILLER

    @property
    def buffered(self) -> int:
        """Bytes held and not yet returned as a message."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def take(self) -> bytes:
        """The bytes held and not yet returned as a message; reading starts afresh
        after them (also after a ProtocolError)."""
        data = bytes(self._buf)
        self._buf.clear()
        self._head = None
        return data

    def next(self) -> Message | _NeedData:
        """The next whole message, or NEED_DATA."""
        buf = self._buf
        if self._head is None:
            start = self._skip_filler(buf, self._filler) if buf and buf[0] in self._filler else 0
            if self._requests_only and not REQUEST_START.startswith(buf[start:start + 5]):
                raise ProtocolError(f"not an HTTP request line a TPS accepts (POST /TransProxy or "
                                    f"/PrivateData): {quote(buf[start:], 40)}", buf[start:start + 80])
            end = buf.find(b"\r\n\r\n", start)
            if end < 0:
                if len(buf) - start > self._max_header:
                    raise MessageTooLarge(f"no end of header block within {self._max_header} "
                                          f"bytes: {quote(buf[start:])}", buf[start:])
                if start:
                    del buf[:start]
                return NEED_DATA
            if end - start > self._max_header:
                raise MessageTooLarge(f"header block of {end - start} bytes exceeds "
                                      f"{self._max_header}: {quote(buf[start:end])}", buf[start:end])
            block = bytes(buf[start:end])
            head = _HEAD_CACHE.get(block)
            if head is None:
                head = _parse_head(block)
                if len(block) <= HEAD_CACHE_BLOCK:
                    if len(_HEAD_CACHE) >= HEAD_CACHE_SIZE:
                        _HEAD_CACHE.clear()
                    _HEAD_CACHE[block] = head
            if head[3] > self._max_body:
                raise MessageTooLarge(f"body of {head[3]} bytes exceeds the limit of "
                                      f"{self._max_body}: {quote(block)}", block)
            self._head = (start, end + 4, head)
        start, body_start, head = self._head
        length = head[3]
        body_end = body_start + length
        if len(buf) < body_end:
            return NEED_DATA
        self._head = None
        kind, first, second, _, headers = head
        body = bytes(buf[body_start:body_end])
        raw = bytes(buf[start:body_end])
        if kind == "reply" and length == 0 and "content-length" not in headers:
            # A field reply ends at the header block; older builds add one NUL, consumed
            # here or, if it has not arrived yet, skipped as filler before the next message.
            if body_end < len(buf) and buf[body_end] == 0:
                body_end += 1
        del buf[:body_end]
        if kind == "request":
            return classify_request(first, second, headers, body, raw)
        # The parsed head is shared through the cache: a reply gets its own headers.
        return classify_reply(first, second, dict(headers), body, raw)

    def eof(self) -> None:
        """The peer closed: raise ProtocolError if a partial message is buffered."""
        start = self._skip_filler(self._buf, self._filler)
        if start < len(self._buf):
            raise ProtocolError(f"connection closed in the middle of a message: "
                                f"{quote(self._buf[start:])}", self._buf[start:])

    @staticmethod
    def _skip_filler(buf: bytearray, filler: tuple[int, ...] = _FILLER) -> int:
        """Offset of the first byte that is not filler (a stray CR, LF or NUL)."""
        start = 0
        size = len(buf)
        while start < size and buf[start] in filler:
            start += 1
        return start


# Field traffic repeats its header blocks (an ack, a device's relayed requests, a
# client's requests of one size), so parsed blocks are kept: parsing is most of the
# reader's time. Bounded (at most 1024 blocks of up to 512 bytes: ~1 MB) by emptying
# it when full; a parsed head is never changed once made.
HEAD_CACHE_SIZE = 1024
HEAD_CACHE_BLOCK = 512
# (kind, method or status, target or reason, Content-Length, headers): the second item
# is a str (None: not HTTP) for kind "request", an int for "reply".
Head: TypeAlias = tuple[str, Any, str, int, dict[str, str]]
_HEAD_CACHE: dict[bytes, Head] = {}


def _parse_head(block: bytes) -> Head:
    """(kind, method or status, target or reason, Content-Length, headers) of a header
    block; ProtocolError for one that is not HTTP-shaped."""
    text = block.decode("latin-1")
    eol = text.find("\r\n")
    first = text if eol < 0 else text[:eol]
    if not first.isascii():
        raise ProtocolError(f"start line is not ASCII: {quote(first.encode('latin-1'))}", block)
    headers: dict[str, str] = {}
    if eol >= 0:
        for line in text[eol + 2:].split("\r\n"):
            name, colon, value = line.partition(":")
            if not colon or not name or name[0] in " \t":     # no obs-fold, no empty name
                raise ProtocolError(f"malformed header line {quote(line.encode('latin-1'))} in "
                                    f"{quote(block)}", block)
            key = name.rstrip().lower()
            value = value.strip()
            if key in headers and key == "content-length" and headers[key] != value:
                raise ProtocolError(f"conflicting Content-Length headers in {quote(block)}", block)
            headers[key] = value
    length_text = headers.get("content-length")
    if length_text is None:
        length = 0
    elif length_text.isdigit() and length_text.isascii():
        digits = length_text.lstrip("0")
        if len(digits) > MAX_LENGTH_DIGITS:     # int() of 4,301+ digits raises ValueError
            raise MessageTooLarge(f"Content-Length of {len(digits)} digits exceeds any body "
                                  f"limit in {quote(block)}", block)
        length = int(length_text)
    else:
        raise ProtocolError(f"Content-Length {quote_text(length_text)} is not a number in "
                            f"{quote(block)}", block)
    if first.startswith("HTTP/"):
        version, _, rest = first.partition(" ")
        code, _, reason = rest.partition(" ")
        if not (code.isdigit() and len(code) == 3):
            raise ProtocolError(f"malformed status line {quote(first.encode())}", block)
        return ("reply", int(code), reason, length, headers)
    parts = first.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/") or not parts[0]:
        # Framed (we found a header block) but not HTTP: a TPS answers 400 and goes on.
        return ("request", None, first, length, headers)
    return ("request", parts[0], parts[1], length, headers)


# -- the strict reader: h11 as the reference ------------------------------------------------

class StrictReader(_MessageReader):
    """Frames and validates with h11; the same interface and messages as Reader.

    ``role="server"`` reads requests (fake_tps --strict-http), ``role="client"``
    reads replies (checking a server's HTTP), ``role="peer"`` reads both, each
    message in the role its start line tells (``HTTP/`` begins a reply): what a
    harness endpoint receives, replies and relayed requests. A reply that strict
    HTTP/1.1 cannot frame before the connection closes (the field acks: no
    Content-Length) is a ProtocolError here, which is the point of this mode.
    """

    def __init__(self, role: str = "server", *, max_body: int = DEFAULT_MAX_BODY,
                 max_header: int = MAX_HEADER) -> None:
        if role not in ("server", "client", "peer"):
            raise InvalidArgument(f"role must be 'server', 'client' or 'peer', not {role!r}")
        self._role = role
        self._max_body = max_body
        self._max_header = max_header
        self._pending = b""
        self._conn: h11.Connection | None = None
        self._event: h11.Request | h11.Response | None = None
        self._body = bytearray()
        self._raw = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held and not yet returned as a message."""
        return len(self._raw) + len(self._pending)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._pending += bytes(data)

    def take(self) -> bytes:
        """The bytes held and not yet returned as a message; reading starts afresh."""
        data = bytes(self._raw) + self._pending
        self._pending = b""
        self._raw = bytearray()
        self._body = bytearray()
        self._conn = None
        self._event = None
        return data

    def _reads_replies(self) -> bool | None:
        """Whether the next message is a reply (None: too few bytes to tell yet)."""
        if self._role != "peer":
            return self._role == "client"
        start = self._pending[:5]
        if b"HTTP/".startswith(start):
            return True if len(start) == 5 else None
        return False

    def _new_connection(self, replies: bool) -> h11.Connection:
        import h11

        if not replies:
            return h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_header)
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=self._max_header)
        conn.send(h11.Request(method="POST", target="/", headers=[("Host", "tps"), ("Content-Length", "0")]))
        conn.send(h11.EndOfMessage())
        return conn

    def next(self) -> Message | _NeedData:
        import h11

        if self._conn is None:
            if not self._pending:
                return NEED_DATA
            replies = self._reads_replies()
            if replies is None:
                return NEED_DATA
            self._conn = self._new_connection(replies)
        conn = self._conn
        if self._pending:
            self._raw += self._pending
            conn.receive_data(self._pending)
            self._pending = b""
        while True:
            try:
                event = conn.next_event()
            except (h11.RemoteProtocolError, ValueError) as error:     # ValueError: a huge number
                raise ProtocolError(f"not strict HTTP/1.1 ({error}): {quote(self._raw)}", self._raw) from None
            if event is h11.NEED_DATA:
                return NEED_DATA
            if isinstance(event, (h11.Request, h11.Response)):
                self._event = event
                self._check_head(event)
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self._max_body:
                    raise MessageTooLarge(f"body exceeds {self._max_body} bytes", self._raw[:200])
            elif isinstance(event, h11.EndOfMessage):
                return self._finish(conn)
            else:       # ConnectionClosed or anything unexpected before a message ended
                raise ProtocolError(f"connection closed before the message ended: "
                                    f"{quote(self._raw)}", self._raw)

    def _check_head(self, event: h11.Request | h11.Response) -> None:
        import h11

        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
        if isinstance(event, h11.Response):
            framed = "content-length" in headers or "transfer-encoding" in headers
            if not framed and event.status_code not in (204, 304) and event.status_code >= 200:
                raise ProtocolError(
                    f"reply {event.status_code} has no Content-Length: under strict HTTP/1.1 its "
                    f"body runs until the connection closes: {quote(self._raw)}", self._raw)
        length = headers.get("content-length")
        if length is not None and (len(length) > 18 or int(length) > self._max_body):
            raise MessageTooLarge(f"body of {length if len(length) <= 20 else length[:20] + '...'} bytes exceeds the limit of "
                                  f"{self._max_body}", self._raw[:200])

    def _finish(self, conn: h11.Connection) -> Message:
        import h11

        event = self._event
        assert event is not None, "EndOfMessage comes after the message's head"
        data, _closed = conn.trailing_data
        body = bytes(self._body)
        consumed = len(self._raw) - len(data)
        raw = bytes(self._raw[:consumed])
        self._pending = bytes(data) + self._pending
        self._raw = bytearray()
        self._body = bytearray()
        self._conn = None
        self._event = None
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
        if isinstance(event, h11.Request):
            return classify_request(event.method.decode("ascii"), event.target.decode("ascii"),
                                    headers, body, raw)
        return classify_reply(event.status_code, event.reason.decode("latin-1"), headers, body, raw)

    def eof(self) -> None:
        if self._pending or self._raw:
            leftover = bytes(self._raw) + self._pending
            raise ProtocolError(f"connection closed in the middle of a message: {quote(leftover)}",
                                leftover)
