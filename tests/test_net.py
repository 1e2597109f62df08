"""Cooperative sockets: success, timeouts and peer failures, with the peer named."""

import socket

import pytest

from conftest import free_port
from tpsharness import net
from tpsharness.examples.echo import alive, echo_server
from tpsharness.kernel import Scheduler, SelectorPoller, run
from tpsharness.syscalls import KillTask, NewTask, Sleep, WaitTask


def test_connect_to_a_closed_port_is_refused_and_names_the_address():
    port = free_port()

    async def main():
        await net.connect(("127.0.0.1", port), timeout=2)

    with pytest.raises(ConnectionRefusedError, match=f"connect to 127.0.0.1:{port}"):
        run(main(), timeout=5)


def test_connect_to_an_unresolvable_name_says_which_name():
    async def main():
        await net.connect(("no-such-host.invalid", 6604), timeout=2)

    with pytest.raises(socket.gaierror, match="no-such-host.invalid"):
        run(main(), timeout=5)


def test_recv_times_out_naming_the_peer():
    listener = net.listen()

    async def main():
        sock = await net.connect(("127.0.0.1", listener.sock.getsockname()[1]), timeout=2)
        try:
            await sock.recv(10, timeout=0.02)
        finally:
            sock.close()

    try:
        with pytest.raises(TimeoutError, match=r"recv from 127\.0\.0\.1:\d+: nothing arrived"):
            run(main(), timeout=5)
    finally:
        listener.close()


def test_recv_returns_empty_bytes_when_the_peer_closes():
    async def main():
        listener = net.listen()
        client = await net.connect(("127.0.0.1", listener.sock.getsockname()[1]), timeout=2)
        server, _ = await listener.accept(timeout=2)
        server.close()
        data = await client.recv(10, timeout=2)
        client.close()
        listener.close()
        return data

    assert run(main(), timeout=5) == b""


def test_a_reset_peer_raises_connectionreseterror_naming_it():
    async def main():
        listener = net.listen()
        client = await net.connect(("127.0.0.1", listener.sock.getsockname()[1]), timeout=2)
        server, _ = await listener.accept(timeout=2)
        server.reset()
        try:
            await client.recv(10, timeout=2)
        finally:
            client.close()
            listener.close()

    with pytest.raises(ConnectionResetError, match=r"recv from 127\.0\.0\.1:\d+"):
        run(main(), timeout=5)


def test_sendall_to_a_peer_that_does_not_read_times_out():
    async def main():
        listener = net.listen()
        client = await net.connect(("127.0.0.1", listener.sock.getsockname()[1]), timeout=2)
        server, _ = await listener.accept(timeout=2)
        try:
            await client.sendall(b"x" * 50_000_000, timeout=0.1)
        finally:
            client.close()
            server.close()
            listener.close()

    with pytest.raises(TimeoutError, match="still unsent after 0.1 s"):
        run(main(), timeout=10)


def test_closing_a_socket_wakes_a_task_waiting_on_it():
    async def main():
        listener = net.listen()
        client = await net.connect(("127.0.0.1", listener.sock.getsockname()[1]), timeout=2)
        server, _ = await listener.accept(timeout=2)

        async def reader():
            await client.recv(10)

        tid = await NewTask(reader())
        await Sleep(0)
        client.close()
        try:
            await WaitTask(tid)
        finally:
            server.close()
            listener.close()

    with pytest.raises(OSError, match="was closed while"):
        run(main(), timeout=5)


def test_listen_on_a_port_in_use_names_the_address():
    taken = net.listen()
    port = taken.sock.getsockname()[1]
    try:
        with pytest.raises(OSError, match=f"listen on 127.0.0.1:{port}"):
            net.listen("127.0.0.1", port)
    finally:
        taken.close()


def test_echo_server_serves_100_concurrent_clients_while_another_task_keeps_saying_it_is_alive():
    """The seed's echo server: neither the server nor the alive task blocks the other."""
    events = []

    async def client(port, i):
        sock = await net.connect(("127.0.0.1", port), timeout=5)
        try:
            replies = []
            for round_trip in range(5):
                message = f"client {i} message {round_trip}".encode()
                await sock.sendall(message, timeout=5)
                replies.append(await sock.recv(1024, timeout=5))
                events.append("echo")
            return replies
        finally:
            sock.close()

    async def main():
        listener = net.listen()
        port = listener.sock.getsockname()[1]
        server = await NewTask(echo_server(listener))
        ticker = await NewTask(alive(interval=0, say=lambda _: events.append("alive")))
        clients = [await NewTask(client(port, i)) for i in range(100)]
        results = [await WaitTask(tid) for tid in clients]
        await KillTask(ticker)
        await KillTask(server)
        return results

    results = run(main(), timeout=20)
    assert results == [[f"client {i} message {r}".encode() for r in range(5)] for i in range(100)]
    first_echo, last_echo = events.index("echo"), len(events) - 1 - events[::-1].index("echo")
    assert "alive" in events[first_echo:last_echo], "the alive task never ran while clients were served"


def test_the_selectors_fallback_poller_serves_the_echo_too():
    """Where there is no epoll the kernel polls through selectors; same behaviour."""
    results = []

    async def client(port, i):
        sock = await net.connect(("127.0.0.1", port), timeout=5)
        try:
            await sock.sendall(b"fallback %d" % i, timeout=5)
            results.append(await sock.recv(100, timeout=5))
            with pytest.raises(TimeoutError):
                await sock.recv(100, timeout=0.01)
        finally:
            sock.close()

    async def main():
        listener = net.listen()
        server = await NewTask(echo_server(listener))
        port = listener.sock.getsockname()[1]
        for tid in [await NewTask(client(port, i)) for i in range(10)]:
            await WaitTask(tid)
        await KillTask(server)

    scheduler = Scheduler(poller=SelectorPoller)
    scheduler.new(main())
    scheduler.run()
    scheduler.close()
    assert sorted(results) == sorted(b"fallback %d" % i for i in range(10))


def test_connect_tries_each_resolved_address_in_turn(monkeypatch):
    """A name resolving first where nothing listens, then to ::1 where the server is."""
    listener = net.listen("::1", 0)
    port = listener.address[1]
    closed = free_port()
    real = socket.getaddrinfo

    def resolve(host, port_, family=0, kind=0, *args):
        assert host == "tps.test"
        return (real("127.0.0.1", closed, socket.AF_INET, kind) +
                real("::1", port, socket.AF_INET6, kind))

    monkeypatch.setattr(socket, "getaddrinfo", resolve)

    async def main():
        sock = await net.connect(("tps.test", port), timeout=2)
        sock.close()
        return True

    try:
        assert run(main(), timeout=5)
    finally:
        listener.close()


def test_connect_names_every_address_that_failed(monkeypatch):
    closed_v4, closed_v6 = free_port(), free_port()
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, family=0, kind=0, *args: (
        real("127.0.0.1", closed_v4, socket.AF_INET, kind) + real("::1", closed_v6, socket.AF_INET6, kind)))

    async def main():
        await net.connect(("tps.test", 1), timeout=2)

    with pytest.raises(ConnectionRefusedError, match=r"every address failed \(127\.0\.0\.1:\d+: Connection "
                                                     r"refused; \[::1\]:\d+: Connection refused\)"):
        run(main(), timeout=5)


def test_connect_keeps_to_the_family_asked_for():
    async def main():
        await net.connect(("127.0.0.1", 6604), timeout=2, family=socket.AF_INET6)

    with pytest.raises(socket.gaierror, match=r"'127\.0\.0\.1' does not resolve to an IPv6 address \(only to 127\.0\.0\.1\)"):
        run(main(), timeout=5)
