"""Importing a tcpdump capture (pcap or pcapng) taken on a TPS host as a conversation.

dpkt reads the capture formats (pcap in either byte order and time precision,
pcapng). The link, IP and TCP headers of each packet are decoded here with
``struct``: dpkt's decoding of them costs ~10 us a packet (30 MB/s of capture), a
fixed-offset unpack ~0.5 us. Ethernet (with VLAN tags), Linux cooked (SLL, SLL2),
raw IP and BSD loopback links are read; IPv4 and IPv6.

Every TCP connection to or from the TPS's port is rebuilt (``streams``); one that
cannot be is reported in one line and left out, and the rest is still imported.
The file is read packet by packet through a guard that refuses a record longer
than MAX_RECORD (a corrupt length) and notices a file cut short: what came before
is imported, and ``stopped`` says where and why. Memory holds the rebuilt streams
and the state of each connection still open (CONNECTION_COST each; both bounded by
``max_bytes``), never the file; a connection that ended without a byte leaves no
state behind, so a port scan costs only its events.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import IO, Any

import dpkt

from ..errors import CaptureError
from ..net import format_address
from .conversation import ACTOR_CLOSED, EVENT_COST, OPEN, RECEIVED, SENT, SERVER_CLOSED, Conversation
from .streams import HalfStream

MAX_RECORD = 1024 * 1024        # bytes of one packet record or pcapng block
CONNECTION_COST = 1024          # bytes a connection being rebuilt holds, counted against max_bytes

# link types (tcpdump.org/linktypes.html) -> how to find the IP header
DLT_NULL, DLT_EN10MB, DLT_RAW, DLT_RAW_BSD, DLT_LOOP = 0, 1, 12, 14, 108
DLT_LINUX_SLL, DLT_RAW_101, DLT_IPV4, DLT_IPV6, DLT_LINUX_SLL2 = 113, 101, 228, 229, 276
ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ = 0x0800, 0x86DD, 0x8100, 0x88A8
TH_FIN, TH_SYN, TH_RST, TH_PUSH, TH_ACK = 0x01, 0x02, 0x04, 0x08, 0x10

_ETHERTYPE = struct.Struct("!H")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBB")
_ETH_IPV4_TCP = struct.Struct("!12xHB1xH2xHx B2x4s4s HHI4xBB")

Segment = tuple[bytes, int, bytes, int, int, int, bytes, bool]
"""(source address, port, destination address, port, seq, flags, payload, cut short)."""


class _Guard:
    """The capture file, as dpkt reads it: a record longer than MAX_RECORD (or of a
    negative length) is a corrupt file, and a read that comes back short means the
    file was cut there."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self._read = handle.read
        self.name = getattr(handle, "name", "capture")
        self.short_read = False

    def read(self, size: int = -1) -> bytes:
        if not 0 <= size <= MAX_RECORD:
            raise CaptureError(f"a record at byte {self.handle.tell()} declares {size} bytes: "
                               "the file is corrupt")
        data = self._read(size)
        if len(data) != size and data:
            self.short_read = True
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.handle.seek(offset, whence)

    def tell(self) -> int:
        return self.handle.tell()

    def fileno(self) -> int:
        return self.handle.fileno()


def _ip_offset(linktype: int, packet: bytes) -> int | None:
    """Where the IP header begins in a packet of ``linktype``, or None."""
    if linktype == DLT_EN10MB:
        offset = 12
        kind = _ETHERTYPE.unpack_from(packet, offset)[0]
        while kind in (ETH_VLAN, ETH_QINQ):
            offset += 4
            kind = _ETHERTYPE.unpack_from(packet, offset)[0]
        return offset + 2 if kind in (ETH_IPV4, ETH_IPV6) else None
    if linktype in (DLT_RAW, DLT_RAW_BSD, DLT_RAW_101, DLT_IPV4, DLT_IPV6):
        return 0
    if linktype in (DLT_NULL, DLT_LOOP):
        return 4
    if linktype == DLT_LINUX_SLL:
        return 16 if _ETHERTYPE.unpack_from(packet, 14)[0] in (ETH_IPV4, ETH_IPV6) else None
    if linktype == DLT_LINUX_SLL2:
        return 20 if _ETHERTYPE.unpack_from(packet, 0)[0] in (ETH_IPV4, ETH_IPV6) else None
    return None


def decode(linktype: int, packet: bytes) -> Segment | None:
    """The TCP segment in ``packet``, or None (not TCP over IP, a fragment).
    struct.error / IndexError for a packet too short for its headers."""
    if linktype == DLT_EN10MB and len(packet) >= 54:      # the usual: Ethernet, IPv4 without options
        (kind, first, total, fragment, protocol, src, dst, sport, dport, seq,
         data_offset, flags) = _ETH_IPV4_TCP.unpack_from(packet)
        if kind == ETH_IPV4 and first == 0x45 and protocol == 6 and not fragment & 0x3FFF:
            end = 14 + total
            return (src, sport, dst, dport, seq, flags, packet[34 + (data_offset >> 4) * 4:end],
                    end > len(packet))
    at = _ip_offset(linktype, packet)
    if at is None:
        return None
    version = packet[at] >> 4
    if version == 4:
        first, _, total, _, fragment, _, protocol, _, src, dst = _IPV4.unpack_from(packet, at)
        if protocol != 6 or fragment & 0x3FFF:          # not TCP, or a fragment
            return None
        tcp_at = at + (first & 0x0F) * 4
        end = at + total
    elif version == 6:
        _, length, protocol, _, src, dst = _IPV6.unpack_from(packet, at)
        tcp_at = at + 40
        while protocol in (0, 43, 60):                   # hop-by-hop, routing, destination options
            protocol = packet[tcp_at]
            tcp_at += (packet[tcp_at + 1] + 1) * 8
        if protocol != 6:
            return None
        end = at + 40 + length
    else:
        return None
    sport, dport, seq, _, data_offset, flags = _TCP.unpack_from(packet, tcp_at)
    payload = packet[tcp_at + (data_offset >> 4) * 4:end]
    return src, sport, dst, dport, seq, flags, payload, end > len(packet)


def _address(raw: bytes, port: int) -> str:
    import ipaddress
    return format_address((str(ipaddress.ip_address(raw)), port))


@dataclass
class _Connection:
    conn: int
    to_server: HalfStream = field(default_factory=HalfStream)
    to_client: HalfStream = field(default_factory=HalfStream)
    closed: bool = False
    peer: str = ""


@dataclass
class Imported:
    """What an import read: the conversation, and the counts and lines that say what
    was left out."""

    conversation: Conversation
    packets: int = 0
    segments: int = 0               # TCP segments
    other: int = 0                  # packets that are not TCP over IP
    other_ports: int = 0            # TCP segments with data that are not the TPS's port's
    unreadable: int = 0             # packets too short for their own headers
    skipped: list[str] = field(default_factory=list)    # a line per stream not rebuilt
    mid_stream_dropped: int = 0     # bytes before the first whole message of late-caught streams
    stopped: str = ""               # why the file was not read to its end

    def report(self) -> list[str]:
        lines = [f"read {self.packets} packets: {self.segments} TCP segments "
                 f"({self.other_ports} with data not for the TPS's port), {self.other} others"
                 f"{f', {self.unreadable} unreadable' if self.unreadable else ''}; "
                 f"{len(self.conversation.peers)} connections rebuilt"]
        lines += [f"skipped {line}" for line in self.skipped]
        if self.mid_stream_dropped:
            lines.append(f"{len(self.conversation.started_mid_stream)} connections began before the "
                         f"capture: {self.mid_stream_dropped} bytes before their first whole message "
                         "left out")
        if self.stopped:
            lines.append(f"partial import: {self.stopped}")
        return lines


def import_capture(path: str, port: int, *, max_bytes: int = 64 * 1024 * 1024) -> Imported:
    """The conversation in the capture at ``path`` of the TPS on ``port``.

    CaptureError (one line) when the file cannot be opened or is not a capture."""
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise CaptureError(f"{path}: cannot read: {error.strerror or error}") from None
    with handle:
        guard = _Guard(handle)
        try:
            reader: Any = dpkt.pcap.UniversalReader(guard)
        except CaptureError:
            raise
        except (ValueError, dpkt.UnpackError, struct.error) as error:
            raise CaptureError(f"{path}: not a pcap or pcapng capture ({error})") from None
        return _Importer(reader, guard, port, max_bytes).run()


class _Importer:
    def __init__(self, reader: Any, guard: _Guard, port: int, max_bytes: int) -> None:
        self.reader = reader
        self.guard = guard
        self.port = port
        self.max_bytes = max_bytes
        self.imported = Imported(Conversation())
        self.connections: dict[tuple[bytes, int, bytes], _Connection] = {}
        self.broken: dict[int, str] = {}
        self.first_time: float | None = None
        self.next_conn = 0

    def run(self) -> Imported:
        imported = self.imported
        guard, conversation, max_bytes = self.guard, imported.conversation, self.max_bytes
        linktype = self.reader.datalink()
        count = bare = 0
        ethernet = linktype == DLT_EN10MB
        fast = _ETH_IPV4_TCP.unpack_from
        try:
            for time, packet in self.reader:
                count += 1
                if guard.short_read:
                    count -= 1
                    break
                if ethernet and len(packet) >= 54:          # decode()'s usual case, inline: the hot path
                    (kind, first, total, fragment, protocol, src, dst, sport, dport, seq,
                     data_offset, flags) = fast(packet)
                    if kind == ETH_IPV4 and first == 0x45 and protocol == 6 and not fragment & 0x3FFF:
                        start, end = 34 + (data_offset >> 4) * 4, 14 + total
                        if start >= end and not flags & 7:      # a bare ACK: no byte, no SYN/FIN/RST
                            bare += 1
                            continue
                        self._segment(float(time), src, sport, dst, dport, seq, flags, packet[start:end],
                                      end > len(packet))
                        if conversation.size > max_bytes:
                            break
                        continue
                try:
                    segment = decode(linktype, packet)
                except (struct.error, IndexError):
                    imported.unreadable += 1
                    continue
                if segment is None:
                    imported.other += 1
                    continue
                if not segment[6] and not segment[5] & 7:
                    bare += 1
                    continue
                self._segment(float(time), *segment)
                if conversation.size > max_bytes:
                    break
        except CaptureError as error:
            imported.stopped = f"{error}, after packet {count}"
        except (ValueError, dpkt.UnpackError, struct.error) as error:
            if not guard.short_read:
                imported.stopped = f"packet {count + 1} cannot be read ({error}): the file is corrupt there"
        if conversation.size > max_bytes:
            imported.stopped = (f"--max-bytes ({max_bytes}) reached at packet {count}; "
                                "the rest of the file is not imported")
        if guard.short_read and not imported.stopped:
            imported.stopped = (f"the file ends in the middle of packet {count + 1} (it was cut "
                                "short); the packets before it are imported")
        imported.packets = count
        imported.segments += bare
        self._finish()
        return imported

    def _segment(self, time: float, src: bytes, sport: int, dst: bytes, dport: int, seq: int, flags: int,
                 payload: bytes, cut: bool) -> None:
        """One segment that carries bytes, or a SYN, FIN or RST."""
        if self.first_time is None:
            self.first_time = time
        time -= self.first_time
        self.imported.conversation.ended = time
        self.imported.segments += 1
        port = self.port
        if dport == port:
            key, to_server = (src, sport, dst), True
        elif sport == port:
            key, to_server = (dst, dport, src), False
        else:
            self.imported.other_ports += 1
            return
        connection = self.connections.get(key)
        if connection is not None and flags == 0x10 | TH_PUSH and not cut and not connection.closed:
            half = connection.to_server if to_server else connection.to_client
            if half.base is not None and not half.finished:     # the usual: data, PSH, ACK
                conversation = self.imported.conversation
                kind = SENT if to_server else RECEIVED
                for write_time, data in half.segment(time, seq, payload, push=True, fin=False):
                    conversation.events.append((write_time, connection.conn, kind, data))
                    conversation.size += len(data) + EVENT_COST
                if half.broken:
                    self.broken.setdefault(connection.conn, f"{connection.peer}: {half.broken}")
                return
        fresh_syn = flags & TH_SYN and not flags & TH_ACK and to_server
        if connection is not None and fresh_syn and (connection.closed or connection.to_server.offset):
            self._end(connection)           # the port was reused: a new connection
            self._forget(key)
            connection = None
        if connection is None and not payload and not flags & TH_SYN:
            return      # a FIN or RST of a connection already ended empty, or caught at its end
        if connection is None:
            self.next_conn += 1
            connection = self.connections[key] = _Connection(self.next_conn)
            self.imported.conversation.size += CONNECTION_COST
            peer = _address(key[0], key[1])
            # caught without its handshake, it was open when the capture began
            self.imported.conversation.open(time if flags & TH_SYN else 0.0, connection.conn, peer)
            connection.peer = f"{peer} -> :{self.port}"
        if connection.closed:
            return
        half = connection.to_server if to_server else connection.to_client
        if flags & TH_SYN:
            half.syn(seq)
            return
        if cut:
            half.broken = f"a packet was cut by the capture's snaplen ({len(payload)} bytes of it kept)"
        kind, closed_kind = (SENT, ACTOR_CLOSED) if to_server else (RECEIVED, SERVER_CLOSED)
        conversation = self.imported.conversation
        finished = half.finished
        for write_time, data in half.segment(time, seq, payload, push=bool(flags & TH_PUSH),
                                             fin=bool(flags & TH_FIN)):
            conversation.events.append((write_time, connection.conn, kind, data))
            conversation.size += len(data) + EVENT_COST
        if half.broken:
            self.broken.setdefault(connection.conn, f"{connection.peer}: {half.broken}")
        if flags & TH_RST:
            connection.closed = True        # a reset ends both ways at once
            conversation.add(time, connection.conn, closed_kind)
        elif half.finished and not finished:
            conversation.add(time, connection.conn, closed_kind)
        else:
            return
        if _ended_empty(connection):
            self._forget(key)               # nothing more to rebuild: a port scan costs no state

    def _forget(self, key: tuple[bytes, int, bytes]) -> None:
        del self.connections[key]
        self.imported.conversation.size -= CONNECTION_COST

    def _end(self, connection: _Connection) -> None:
        conversation = self.imported.conversation
        for half, kind in ((connection.to_server, SENT), (connection.to_client, RECEIVED)):
            for write_time, data in half.end():
                conversation.add(write_time, connection.conn, kind, data)
            if half.broken:
                self.broken.setdefault(connection.conn, f"{connection.peer}: {half.broken}")
        if connection.to_server.mid_stream or connection.to_client.mid_stream:
            conversation.started_mid_stream.add(connection.conn)

    def _finish(self) -> None:
        for connection in self.connections.values():
            self._end(connection)
        imported = self.imported
        conversation = imported.conversation
        # held writes are added after what happened meanwhile; a connection opens before
        # anything happens at the same instant (those caught late open at the first instant)
        conversation.events.sort(key=lambda event: (event[0], event[2] != OPEN))
        imported.skipped = list(self.broken.values())
        if self.broken:
            conversation = conversation.without(set(self.broken))
        imported.conversation = _drop_partial_starts(conversation, imported)


def _ended_empty(connection: _Connection) -> bool:
    """Reset, or finished both ways, without a byte either way."""
    ended = connection.closed or (connection.to_server.finished and connection.to_client.finished)
    return ended and connection.to_server.empty and connection.to_client.empty


def _drop_partial_starts(conversation: Conversation, imported: Imported) -> Conversation:
    """For connections the capture caught late: their writes before the first that
    begins a request, and the replies before that (they answer what was not caught).
    Relayed requests stay: they reach a device whatever it sent before."""
    late = conversation.started_mid_stream
    if not late:
        return conversation
    began: set[int] = set()
    kept = Conversation(peers=dict(conversation.peers), started_mid_stream=set(late), ended=conversation.ended)
    for time, conn, kind, data in conversation.events:
        if conn in late and conn not in began:
            if kind == SENT and data.lstrip(b"\r\n").startswith(b"POST "):
                began.add(conn)
            elif kind in (SENT, RECEIVED) and not (kind == RECEIVED and data.startswith(b"POST ")):
                imported.mid_stream_dropped += len(data)
                continue
        kept.add(time, conn, kind, data)
    return kept

