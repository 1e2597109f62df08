"""The load test's payload: who sent it, its place in its stream, when it was due.

    crc32 (4) | sender (4) | pair (4) | sequence (8) | due time (8, float s) | flags (4) | padding

The CRC covers everything after it, padding included, so a device can tell a
corrupted message from a lost, duplicated or reordered one. ``pair`` names the
(client, device) stream; the due time is the client's monotonic clock (the device
that checks it runs in the same process).
"""

import struct
from zlib import crc32

_LAYOUT = struct.Struct("<IIIQdI")
HEADER_SIZE = _LAYOUT.size          # 32
unpack_header = _LAYOUT.unpack_from # (crc32, sender, pair, sequence, due, flags); check the crc
_FIELDS = struct.Struct("<IIQdI")
ASK_REPLY = 1                       # flags: the device answers this one


class PayloadMaker:
    """Builds payloads of one size: header fields packed, padding fixed."""

    __slots__ = ("padding", "_pack")

    def __init__(self, size: int) -> None:
        self.padding = b"." * (size - HEADER_SIZE)
        self._pack = _FIELDS.pack

    def make(self, sender: int, pair: int, sequence: int, due: float, flags: int = 0) -> bytes:
        rest = self._pack(sender, pair, sequence, due, flags) + self.padding
        return (crc32(rest)).to_bytes(4, "little") + rest


def read(body: bytes) -> tuple[int, int, int, float, int] | None:
    """(sender, pair, sequence, due, flags), or None for a corrupted payload."""
    if len(body) < HEADER_SIZE or crc32(body[4:]) != int.from_bytes(body[:4], "little"):
        return None
    return _LAYOUT.unpack_from(body)[1:]


def describe_damage(body: bytes, pairs: int, client_of: list[int], next_seq: list[int]) -> str:
    """Why ``body`` is not a payload this run sent: which check it fails (for a
    corrupted message's example). Every field is the TPS's to forge."""
    if len(body) < HEADER_SIZE:
        return f"{len(body)} bytes, shorter than the {HEADER_SIZE}-byte header"
    check, sender, pair, seq, due, _ = unpack_header(body)
    if check != crc32(body[4:]):
        return "its checksum does not match: bytes were changed"
    if pair >= pairs:
        return f"a valid checksum, but pair {pair} (the run has {pairs})"
    if client_of[pair] != sender:
        return f"a valid checksum, but sender {sender} is not the client of pair {pair}"
    if seq >= next_seq[pair]:
        return f"a valid checksum, but message #{seq} of pair {pair} was never sent"
    return f"a valid checksum, but a send time outside the run ({due!r})"
