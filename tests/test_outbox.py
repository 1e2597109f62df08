"""tpsharness.outbox: one writer for the fake's peers and the load engine's endpoints."""

import socket

from tpsharness import net
from tpsharness.kernel import run
from tpsharness.outbox import Outbox
from tpsharness.syscalls import Sleep


def _pair():
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return net.Socket(ours), theirs


def _read_all(sock, size):
    sock.settimeout(5)
    data = b""
    while len(data) < size:
        data += sock.recv(65536)
    return data


def test_what_the_socket_takes_is_sent_at_once_and_nothing_is_queued():
    ours, theirs = _pair()
    errors = []

    async def main():
        outbox = Outbox(ours, errors.append)
        outbox.write(b"hello")
        return outbox.queued

    assert run(main(), timeout=5) == 0
    assert _read_all(theirs, 5) == b"hello" and errors == []
    ours.close()
    theirs.close()


def test_the_rest_is_queued_in_order_and_flushed_once_the_peer_reads():
    ours, theirs = _pair()
    chunks = [bytes([65 + i % 26]) * 50_000 for i in range(8)]
    errors = []

    async def main():
        outbox = Outbox(ours, errors.append)
        for chunk in chunks:
            outbox.write(chunk)
        queued = outbox.queued
        received = b""
        theirs.setblocking(False)
        for _ in range(2000):          # bounded: each turn reads what arrived, then yields
            try:
                received += theirs.recv(65536)
            except BlockingIOError:
                pass
            if len(received) == sum(map(len, chunks)):
                break
            await Sleep(0.001)
        return queued, received, outbox.queued

    queued, received, left = run(main(), timeout=10)
    assert queued > 0, "the socket took everything: the test did not fill it"
    assert received == b"".join(chunks) and left == 0 and errors == []
    ours.close()
    theirs.close()


def test_a_socket_error_is_the_callers_once_and_the_queue_is_dropped():
    ours, theirs = _pair()
    errors = []

    async def main():
        outbox = Outbox(ours, errors.append)
        outbox.write(b"x" * 200_000)          # fills the socket: the rest waits
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        theirs.close()                        # a reset
        for _ in range(500):
            if errors:
                break
            await Sleep(0.001)
        outbox.write(b"after the error")      # nothing more is sent, no second call
        return outbox.queued

    assert run(main(), timeout=5) == 0
    assert len(errors) == 1 and isinstance(errors[0], OSError)
    ours.close()


def test_a_socket_that_takes_nothing_for_the_timeout_is_an_error():
    ours, theirs = _pair()
    errors = []

    async def main():
        outbox = Outbox(ours, errors.append, timeout=0.05)
        outbox.write(b"x" * 200_000)          # the peer never reads
        for _ in range(1000):
            if errors:
                break
            await Sleep(0.001)

    run(main(), timeout=5)
    assert len(errors) == 1 and isinstance(errors[0], TimeoutError)
    ours.close()
    theirs.close()


def test_discard_drops_the_queue_and_sends_nothing_more():
    ours, theirs = _pair()
    errors = []

    async def main():
        outbox = Outbox(ours, errors.append)
        outbox.write(b"x" * 200_000)
        outbox.discard()
        outbox.write(b"more")
        return outbox.queued

    assert run(main(), timeout=5) == 0 and errors == []
    ours.close()
    received = _read_until_closed(theirs)
    assert len(received) < 200_000 and b"more" not in received     # only what the socket took at once
    theirs.close()


def _read_until_closed(sock):
    sock.settimeout(5)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data
