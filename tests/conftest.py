"""Helpers shared by the end-to-end tests: a fake TPS on a thread, plain sockets."""

import socket
import time

import pytest

from fake_tps import FakeTPS
from tpsharness.protocol import NEED_DATA, Reader

pytest_plugins = ["pytester"]


def free_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate, timeout=5.0, interval=0.01):
    """Poll ``predicate`` until it is true or ``timeout`` passes; its last value.

    For state another thread changes (a server noticing a close): bounded, and it
    returns as soon as the condition holds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


@pytest.fixture
def fake():
    """A fresh fake TPS serving on a thread, on a free loopback port."""
    server = FakeTPS()
    with server.start_in_thread():
        yield server


class Wire:
    """A blocking loopback connection that reads whole TPS messages with a deadline."""

    def __init__(self, address, timeout=5.0):
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = Reader()
        self.timeout = timeout

    def send(self, data):
        self.sock.sendall(data)

    def message(self, timeout=None):
        """The next whole message; TimeoutError if none arrives in time."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            message = self.reader.next()
            if message is not NEED_DATA:
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no whole message arrived")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            self.reader.feed(data)

    def raw(self, size=65536, timeout=None):
        self.sock.settimeout(timeout or self.timeout)
        return self.sock.recv(size)

    def closed_by_server(self, timeout=None):
        """True when the server closes within the timeout (bytes before the close are
        kept for ``message()``)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return True
            except TimeoutError:
                return False
            if not data:
                return True
            self.reader.feed(data)

    def silent(self, seconds=0.2):
        """True if nothing arrives for ``seconds`` (used to prove a message was NOT sent)."""
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        self.reader.feed(data)
        return False

    def close(self):
        self.sock.close()


@pytest.fixture
def wire(fake):
    """Open Wire connections to the fake; all closed at teardown."""
    opened = []

    def connect(address=None, timeout=5.0):
        connection = Wire(address or fake.address, timeout)
        opened.append(connection)
        return connection

    yield connect
    for connection in opened:
        connection.close()
