"""The load run's devices and clients: pooled endpoints whose every message goes to
the engine's callback, with the little state the hot path keeps on each."""

from ..client import Client
from ..device import Device
from ..protocol import Reply, reply


class LoadDevice(Device):
    __slots__ = ("index", "backlog", "closed", "heartbeat_request")

    def deliver(self, data):
        reader = self._reader
        reader.feed(data)
        return list(reader)


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
