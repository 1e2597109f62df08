"""Cooperative sockets: non-blocking sockets that wait through the kernel.

Every operation tries the socket first and waits (ReadWait/WriteWait) only when
it would block, so a busy connection costs no extra system calls; the exception is
a recv right after a send, which in request/response traffic almost always finds
nothing yet: it waits for readiness first and saves a failed recv. The methods are
generator-based coroutines: ``await sock.recv(n)`` in an ``async def`` task and
``yield from sock.recv(n)`` in a generator task both work.

Errors are the usual OSError subclasses (ConnectionRefusedError,
ConnectionResetError, ...) and TimeoutError, with the peer address in the message.
"""

import errno
import os
import socket
import struct
import types
from time import monotonic

from .kernel import forget_fd
from .syscalls import ReadWait, WriteWait

__all__ = ["Socket", "connect", "listen", "format_address", "parse_address", "RECV_SIZE"]

# The default read size. recv(n) allocates n bytes and shrinks them to what came:
# here recv(65536) costs 0.65 us more per call than recv(16384), recv(262144) 12 us.
RECV_SIZE = 16 * 1024


def format_address(address):
    """'127.0.0.1:6604' for a (host, port) pair; IPv6 hosts in brackets."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def parse_address(text, default_port, *, allow_any_port=False):
    """'host', 'host:port', '[v6]:port' or a bare IPv6 address as (host, port).

    ValueError naming the text otherwise; port 0 only with ``allow_any_port`` (to listen).
    """
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not HOST:PORT")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, None        # a bare name, or a bare IPv6 address
    if not host:
        raise ValueError(f"{text!r} names no host")
    if port_text is None:
        return host, default_port
    lowest = 0 if allow_any_port else 1
    if not (port_text.isdigit() and port_text.isascii()) or not lowest <= int(port_text) < 65536:
        raise ValueError(f"{text!r}: the port must be {lowest}-65535")
    return host, int(port_text)


def _remaining(deadline):
    return None if deadline is None else max(0.0, deadline - monotonic())


def _with_peer(error, action):
    """The same OSError type, its message naming what we were doing and with whom."""
    code = error.errno
    reason = os.strerror(code) if code else (str(error) or type(error).__name__)
    new = type(error)(code, f"{action}: {reason}") if code else type(error)(f"{action}: {reason}")
    return new


class Socket:
    """A non-blocking socket for kernel tasks; ``peer`` names the other end."""

    __slots__ = ("sock", "fd", "address", "_sent_since_recv")

    def __init__(self, sock, address=None):
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.address = address          # the peer's (host, port), or ours for a listener
        self._sent_since_recv = False

    @property
    def peer(self):
        """'host:port' of the other end, for messages (formatted only when needed)."""
        return format_address(self.address) if self.address is not None else "?"

    def __repr__(self):
        return f"<Socket fd={self.fd} peer={self.peer}>"

    @types.coroutine
    def accept(self, timeout=None):
        """Accept one connection: (Socket, address). TCP_NODELAY is set on it."""
        while True:
            try:
                conn, address = self.sock.accept()
            except BlockingIOError:
                yield ReadWait(self.fd, timeout)
                continue
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return Socket(conn, address), address

    @types.coroutine
    def recv(self, size=RECV_SIZE, timeout=None):
        """Up to ``size`` bytes; b"" when the peer closed its side."""
        if self._sent_since_recv:
            self._sent_since_recv = False
        else:
            try:
                return self.sock.recv(size)
            except BlockingIOError:
                pass
            except OSError as error:
                raise _with_peer(error, f"recv from {self.peer}") from None
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            try:
                yield ReadWait(self.fd, None if deadline is None else _remaining(deadline))
            except TimeoutError:
                raise TimeoutError(f"recv from {self.peer}: nothing arrived within "
                                   f"{timeout:g} s") from None
            try:
                return self.sock.recv(size)
            except BlockingIOError:
                continue
            except OSError as error:
                raise _with_peer(error, f"recv from {self.peer}") from None

    @types.coroutine
    def sendall(self, data, timeout=None):
        """Send all of ``data``; the deadline covers the whole of it."""
        sent = self.send_nowait(data)
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        deadline = None if timeout is None else monotonic() + timeout
        while view:
            try:
                yield WriteWait(self.fd, _remaining(deadline))
            except TimeoutError:
                raise TimeoutError(f"send to {self.peer}: {len(view)} of {len(data)} bytes "
                                   f"still unsent after {timeout:g} s") from None
            view = view[self.send_nowait(view):]

    def recv_nowait(self, size=RECV_SIZE):
        """What has arrived (b"" when the peer closed), or None if nothing has yet."""
        try:
            return self.sock.recv(size)
        except BlockingIOError:
            return None
        except OSError as error:
            raise _with_peer(error, f"recv from {self.peer}") from None

    def send_nowait(self, data):
        """Send what the socket takes now, without waiting; the count sent (maybe 0)."""
        self._sent_since_recv = True
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as error:
            raise _with_peer(error, f"send to {self.peer}") from None

    def shutdown_write(self):
        """Half-close: send FIN, keep reading."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        """Close now (synchronous, so a killed task's ``finally`` can call it)."""
        if self.fd >= 0:
            forget_fd(self.fd)
            self.fd = -1
            self.sock.close()

    @property
    def closed(self):
        return self.fd < 0

    def reset(self):
        """Close with RST instead of FIN (SO_LINGER 0): for fault injection."""
        if self.fd >= 0:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close()


@types.coroutine
def connect(address, timeout=None):
    """Connect to (host, port); a Socket with TCP_NODELAY set.

    Name resolution uses getaddrinfo (blocking; instant for addresses and
    /etc/hosts names). Raises socket.gaierror naming the host when it does not
    resolve, ConnectionRefusedError etc. naming the address, TimeoutError.
    """
    host, port = address
    label = format_address(address)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise socket.gaierror(error.errno, f"connect to {label}: cannot resolve "
                                           f"{host!r}: {error.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(sockaddr)
        if code in (errno.EINPROGRESS, errno.EAGAIN):
            try:
                yield WriteWait(sock.fileno(), timeout)
            except TimeoutError:
                raise TimeoutError(f"connect to {label}: no answer within {timeout:g} s") from None
            finally:
                forget_fd(sock.fileno())
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            error_type = _ERRNO_TYPES.get(code, OSError)
            raise error_type(code, f"connect to {label}: {os.strerror(code)}")
    except BaseException:
        sock.close()
        raise
    return Socket(sock, address)


_ERRNO_TYPES = {
    errno.ECONNREFUSED: ConnectionRefusedError,
    errno.ECONNRESET: ConnectionResetError,
    errno.ECONNABORTED: ConnectionAbortedError,
    errno.ETIMEDOUT: TimeoutError,
}


def listen(host="127.0.0.1", port=0, backlog=1024):
    """A listening Socket on (host, port); port 0 picks a free one (see .address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        raise _with_peer(error, f"listen on {format_address((host, port))}") from None
    bound = sock.getsockname()
    return Socket(sock, bound)
