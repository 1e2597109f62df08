"""Captures for the importer's tests and benchmark: a conversation as the TCP packets
tcpdump would have seen on the TPS host, written with dpkt's pcap and pcapng writers.

Each connection gets a client port of its own; a handshake at its open, each write as
segments of at most ``mss`` bytes (PSH on the last, as a sender marks the end of a
write), a pure ACK from the other side, and a FIN (or RST) where it closed.
"""

import struct

import dpkt

from tpsharness.record.conversation import ACTOR_CLOSED, OPEN, RECEIVED, SENT, SERVER_CLOSED

CLIENT_ADDRESS = bytes([10, 0, 0, 2])
SERVER_ADDRESS = bytes([10, 0, 0, 1])
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
_ETHERNET = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"


def frame(src, sport, dst, dport, seq, ack, flags, payload=b""):
    """One Ethernet + IPv4 + TCP frame."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags,
                      65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0x4000, 64, 6, 0,
                     src, dst)
    return _ETHERNET + ip + tcp + payload


class _Connection:
    def __init__(self, number, port):
        self.cport = 40000 + number
        self.port = port
        self.seq = {True: 1000 * number, False: 5000000 + 1000 * number}   # to_server -> next seq

    def packet(self, to_server, flags, payload=b""):
        args = (CLIENT_ADDRESS, self.cport, SERVER_ADDRESS, self.port) if to_server else \
            (SERVER_ADDRESS, self.port, CLIENT_ADDRESS, self.cport)
        packet = frame(*args, self.seq[to_server], self.seq[not to_server], flags, payload)
        self.seq[to_server] += len(payload) + (1 if flags & (SYN | FIN) else 0)
        return packet


def packets(conversation, port=6604, mss=1448, reset=False, disorder=False):
    """The (time, frame) list of ``conversation`` as captured on the TPS host. With
    ``disorder`` each write's segments come in reverse order, and its first segment
    comes again after them (a retransmission)."""
    out = []
    connections = {}
    for time, conn, kind, data in conversation.events:
        if kind == OPEN:
            connection = connections[conn] = _Connection(conn, port)
            out += [(time, connection.packet(True, SYN)), (time, connection.packet(False, SYN | ACK)),
                    (time, connection.packet(True, ACK))]
            continue
        connection = connections[conn]
        to_server = kind in (SENT, ACTOR_CLOSED)
        if kind in (SENT, RECEIVED):
            pieces = [data[i:i + mss] for i in range(0, len(data), mss)]
            segments = [(time, connection.packet(to_server, ACK | (PSH if n == len(pieces) - 1 else 0), piece))
                        for n, piece in enumerate(pieces)]
            out += segments[::-1] + segments[:1] if disorder else segments
            out.append((time, connection.packet(not to_server, ACK)))
        else:
            out.append((time, connection.packet(to_server, (RST if reset else FIN) | ACK)))
            if not reset:
                out.append((time, connection.packet(not to_server, ACK)))
    return out


def write(path, frames, pcapng=False, snaplen=65535):
    with open(path, "wb") as handle:
        writer = (dpkt.pcapng.Writer if pcapng else dpkt.pcap.Writer)(handle, snaplen=snaplen)
        for time, packet in frames:
            writer.writepkt(packet, ts=1_700_000_000 + time)
    return path
