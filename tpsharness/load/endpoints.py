"""The load run's devices and clients: pooled endpoints whose every message goes to
the engine's callback, with the little state the hot path keeps on each."""

from ..client import Client
from ..device import Device
from ..protocol import Reply, reply


_END_OF_HEAD = b"\r\n\r\n"


class LoadDevice(Device):
    __slots__ = ("index", "backlog", "closed", "heartbeat_request", "relay_heads")

    def deliver(self, data):
        """The messages in ``data``. A relayed request whose header block is one of
        ``relay_heads`` (the prebuilt requests' blocks -> (src, body length)) comes
        back as ``(src, body)``, framed by that known length without parsing; the
        rest (anything else, or once a read ends mid-message) goes through the
        reader, as typed messages."""
        reader = self._reader
        heads = self.relay_heads
        if reader.buffered or not heads:
            reader.feed(data)
            return list(reader)
        messages = []
        start, size = 0, len(data)
        find, get = data.find, heads.get
        while start < size:
            end = find(_END_OF_HEAD, start)
            if end < 0:
                break
            known = get(data[start:end + 4])
            if known is None:
                break
            body_end = end + 4 + known[1]
            if body_end > size:
                break
            messages.append((known[0], data[end + 4:body_end]))
            start = body_end
        if start < size:
            reader.feed(data[start:] if start else data)
            messages.extend(reader)
        return messages


_ACK = reply(200)                   # the field server's ack, byte for byte
_ACK_SIZE = len(_ACK)
_ACKED = Reply(200, "OK")


class LoadClient(Client):
    __slots__ = ("index", "pairs", "turn", "due_times", "in_flight", "last_progress", "backlog",
                 "closed", "count")

    def deliver(self, data):
        """The messages in ``data``; a read of nothing but whole field acks (the usual
        case) is counted without parsing them one by one."""
        reader = self._reader
        if not reader.buffered and len(data) % _ACK_SIZE == 0 and \
                data.count(_ACK) * _ACK_SIZE == len(data):
            return [_ACKED] * (len(data) // _ACK_SIZE)
        reader.feed(data)
        return list(reader)
