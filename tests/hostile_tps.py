"""A scripted TPS on threads, for hostile-peer tests and the hostile soak: it
registers devices as a field server does, and a test decides what each private
data gets (relay it, refuse it, forge a copy, reset a connection...)."""

import socket
import struct
import threading
from zlib import crc32

from tpsharness.load.payload import HEADER_SIZE, unpack_header
from tpsharness.protocol import PrivateData, Reader, RegisterRequest, register_reply, reply


def forged(body, **fields):
    """``body`` (a load payload) with header fields changed (sender, pair, seq, due,
    flags) and a valid checksum: what a TPS could make up."""
    _, sender, pair, seq, due, flags = unpack_header(body)
    values = dict(sender=sender, pair=pair, seq=seq, due=due, flags=flags)
    values.update(fields)
    rest = struct.pack("<IIQdI", values["sender"], values["pair"], values["seq"], values["due"],
                       values["flags"]) + body[HEADER_SIZE:]
    return crc32(rest).to_bytes(4, "little") + rest


class HostileTPS:
    """A loopback TPS on threads that registers devices as a field server does and
    lets a test decide what each private data gets: ``relay(tps, conn, message)``."""

    def __init__(self, relay=None, register=None):
        self.relay = relay or HostileTPS.relay_as_field
        self.register = register or HostileTPS.register_as_field
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self.devices = {}
        self.connections = []
        self.lock = threading.Lock()
        self.count = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        reader = Reader()
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                reader.feed(data)
                try:
                    messages = list(reader)
                except Exception:
                    return
                for message in messages:
                    with self.lock:
                        self.count += 1
                        try:
                            if isinstance(message, RegisterRequest):
                                self.register(self, conn, message)
                            elif isinstance(message, PrivateData):
                                self.relay(self, conn, message)
                        except OSError:
                            return

    @staticmethod
    def register_as_field(tps, conn, message):
        tps.devices[message.serial] = conn
        conn.sendall(register_reply(utc_time="0"))

    @staticmethod
    def relay_as_field(tps, conn, message):
        """Ack and relay, or 404 for a device it does not hold; the device's connection, or None."""
        device = tps.devices.get(message.dest)
        if device is None:
            conn.sendall(reply(404))
            return None
        conn.sendall(reply(200))
        device.sendall(message.raw)
        return device

    def close(self):
        self.listener.close()
        for conn in self.connections:
            try:
                conn.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
