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

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import types
from collections.abc import Generator, Sequence
from typing import Any, TypeAlias

from .deadline import Deadline, Timeout
from .defaults import HOST
from .errors import InvalidArgument
from .syscalls import ReadWait, WriteWait, forget_fd
from .text import printable, quote_text

__all__ = ["Socket", "connect", "listen", "resolve", "format_address", "parse_address",
           "checked_address", "host_problem", "ip_address", "RECV_SIZE"]

# The default read size. recv(n) allocates n bytes and shrinks them to what came:
# here recv(65536) costs 0.65 us more per call than recv(16384), recv(262144) 12 us.
RECV_SIZE = 16 * 1024

Address: TypeAlias = tuple[str, int]
"""A (host, port) pair (an IPv6 peer's address has two more items: flowinfo, scope)."""


IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_NAME = 253      # characters in a DNS name, its trailing dot aside (RFC 1035)
MAX_LABEL = 63      # characters in one label of it
SHOWN_HOST = 100    # characters of a host that messages show


def format_address(address: object) -> str:
    """'127.0.0.1:6604' for a (host, port) pair; IPv6 hosts in brackets. A host that no
    resolver would take (a NUL, ESC, 10 kB) is shown escaped and cut."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = str(address[0]), address[1]
        if len(host) > SHOWN_HOST or not host.isprintable():
            host = printable(host, SHOWN_HOST)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)


def ip_address(text: str) -> IPAddress | None:
    """``text`` as an IP address, in every form a resolver reads as one: canonical
    (an IPv6 zone too), and the decimal, hex, octal and short IPv4 forms inet_aton
    takes (``2130706433``, ``0x7f.1``, ``0177.0.0.1``); an IPv4-mapped IPv6 address
    as its IPv4 address. None when ``text`` is a name."""
    try:
        address: IPAddress = ipaddress.ip_address(text)
    except ValueError:
        if not text or not text.isascii() or not text[0].isdigit():
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(text))
        except (OSError, ValueError):       # ValueError: a NUL in it
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def host_problem(host: str) -> str | None:
    """Why ``host`` can be neither an address nor a host name (None when it can be one):
    a NUL (the C resolver would stop there and look up the part before it), another
    control character, more than 253 characters, an empty label, a label over 63
    characters, or a name IDNA cannot encode. In words, for a failed connect stage."""
    if ip_address(host) is not None:
        return None
    bad = next((char for char in host if not char.isprintable() or char.isspace()), None)
    if bad is not None:
        return f"the name holds {bad!r}"
    name = host[:-1] if host.endswith(".") else host
    if not name:
        return "the name is empty"
    if len(name) > MAX_NAME:
        return f"the name is {len(name)} characters long, more than {MAX_NAME}"
    if "" in name.split("."):
        return "the name has an empty label"
    try:
        labels = name.encode("idna").split(b".")
    except UnicodeError as error:
        reason = str(error).partition("UnicodeError: ")[2].rstrip(")") or str(error)
        if "too long" in reason:
            return f"the name has a label longer than {MAX_LABEL} characters"
        return f"IDNA cannot encode the name: {printable(reason, 60)}"
    if any(len(label) > MAX_LABEL for label in labels):
        return f"the name has a label longer than {MAX_LABEL} characters"
    return None


def checked_address(address: Any) -> tuple[str, int]:      # any value: this checks it
    """``address`` as a (host, port) tuple; InvalidArgument unless host is a string and
    port a whole number 1-65535 (the socket layer would wrap 70000 to 4464). A host no
    resolver takes, the empty one included (Nagios's empty $HOSTADDRESS$), fails the
    connect later, in words (host_problem)."""
    try:
        host, port = address
    except (TypeError, ValueError):
        raise InvalidArgument(f"an address is (host, port), not {address!r}") from None
    if not isinstance(host, str):
        raise InvalidArgument(f"the host must be a string, not {host!r}")
    if isinstance(port, str) and port.isdigit() and port.isascii():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InvalidArgument(f"the port must be a whole number 1-65535, not {port!r}")
    return host, port


def parse_address(text: str, default_port: int, *,
                  allow_any_port: bool = False) -> tuple[str, int]:
    """'host', 'host:port', '[v6]:port' or a bare IPv6 address as (host, port).

    InvalidArgument naming the text otherwise; port 0 only with ``allow_any_port`` (to listen).
    """
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise InvalidArgument(f"{text!r} is not HOST:PORT")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, None        # a bare name, or a bare IPv6 address
    if not host:
        raise InvalidArgument(f"{text!r} names no host")
    if port_text is None:
        return host, default_port
    lowest = 0 if allow_any_port else 1
    if not (port_text.isdigit() and port_text.isascii()) or not lowest <= int(port_text) < 65536:
        raise InvalidArgument(f"{text!r}: the port must be {lowest}-65535")
    return host, int(port_text)


def _deadline(timeout: Any, deadline: Deadline | None) -> Deadline | None:
    """The one Deadline a wait runs to: ``deadline`` if given (or ``timeout`` if that
    is a Deadline), else ``timeout`` seconds from now; None waits for ever.

    ``timeout`` is a Timeout told apart by ``__class__`` (Any: mypy cannot follow that,
    and isinstance would cost more on every wait)."""
    if deadline is not None:
        return deadline if timeout is None or timeout.__class__ is Deadline else deadline.sooner(timeout)
    if timeout is None or timeout.__class__ is Deadline:
        return timeout
    return Deadline(timeout)


def _with_peer(error: OSError, action: str) -> OSError:
    """The same OSError type, its message naming what we were doing and with whom."""
    code = error.errno
    reason = os.strerror(code) if code else (str(error) or type(error).__name__)
    new = type(error)(code, f"{action}: {reason}") if code else type(error)(f"{action}: {reason}")
    return new


class Socket:
    """A non-blocking socket for kernel tasks; ``peer`` names the other end."""

    __slots__ = ("sock", "fd", "address", "_sent_since_recv")

    def __init__(self, sock: socket.socket, address: tuple[Any, ...] | None = None) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.address = address          # the peer's (host, port), or ours for a listener
        self._sent_since_recv = False

    @property
    def peer(self) -> str:
        """'host:port' of the other end, for messages (formatted only when needed)."""
        return format_address(self.address) if self.address is not None else "?"

    def __repr__(self) -> str:
        return f"<Socket fd={self.fd} peer={self.peer}>"

    @types.coroutine
    def accept(self, timeout: Timeout = None) -> Generator[ReadWait, None, tuple[Socket, tuple[Any, ...]]]:
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
    def recv(self, size: int = RECV_SIZE, timeout: Timeout = None, *,
             deadline: Deadline | None = None) -> Generator[ReadWait, None, bytes]:
        """Up to ``size`` bytes; b"" when the peer closed its side.

        Waits until ``deadline`` (a Deadline) or ``timeout`` seconds, whichever is
        given; bytes already there are returned at once, without a wait.
        """
        if self._sent_since_recv:
            self._sent_since_recv = False
        else:
            try:
                return self.sock.recv(size)
            except BlockingIOError:
                pass
            except OSError as error:
                raise _with_peer(error, f"recv from {self.peer}") from None
        deadline = _deadline(timeout, deadline)
        while True:
            try:
                yield ReadWait(self.fd, deadline)
            except TimeoutError:
                assert deadline is not None     # only a wait with a deadline times out
                raise TimeoutError(f"recv from {self.peer}: nothing arrived within "
                                   f"{deadline.seconds:g} s") from None
            try:
                return self.sock.recv(size)
            except BlockingIOError:
                continue
            except OSError as error:
                raise _with_peer(error, f"recv from {self.peer}") from None

    @types.coroutine
    def sendall(self, data: bytes | bytearray | memoryview, timeout: Timeout = None, *,
                deadline: Deadline | None = None) -> Generator[WriteWait, None, None]:
        """Send all of ``data``; the deadline (or timeout) covers the whole of it."""
        sent = self.send_nowait(data)
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        deadline = _deadline(timeout, deadline)
        while view:
            try:
                yield WriteWait(self.fd, deadline)
            except TimeoutError:
                assert deadline is not None     # only a wait with a deadline times out
                raise TimeoutError(f"send to {self.peer}: {len(view)} of {len(data)} bytes "
                                   f"still unsent after {deadline.seconds:g} s") from None
            view = view[self.send_nowait(view):]

    def recv_nowait(self, size: int = RECV_SIZE) -> bytes | None:
        """What has arrived (b"" when the peer closed), or None if nothing has yet."""
        try:
            return self.sock.recv(size)
        except BlockingIOError:
            return None
        except OSError as error:
            raise _with_peer(error, f"recv from {self.peer}") from None

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Send what the socket takes now, without waiting; the count sent (maybe 0)."""
        self._sent_since_recv = True
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as error:
            raise _with_peer(error, f"send to {self.peer}") from None

    def shutdown_write(self) -> None:
        """Half-close: send FIN, keep reading."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        """Close now (synchronous, so a killed task's ``finally`` can call it)."""
        if self.fd >= 0:
            forget_fd(self.fd)
            self.fd = -1
            self.sock.close()

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def reset(self) -> None:
        """Close with RST instead of FIN (SO_LINGER 0): for fault injection."""
        if self.fd >= 0:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close()


AddrInfo: TypeAlias = tuple[Any, ...]
"""One of getaddrinfo's answers: (family, type, proto, canonname, sockaddr)."""

_FAMILY_NAMES: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}


def _addrinfo(host: str, port: int, family: int, flags: int = 0) -> list[AddrInfo]:
    """getaddrinfo for a stream socket; socket.gaierror with a sentence that names the
    host (escaped and cut) and why: a malformed name is refused before any lookup."""
    shown = quote_text(host, SHOWN_HOST)
    problem = host_problem(host)
    if problem is not None:
        raise socket.gaierror(socket.EAI_NONAME, f"cannot resolve {shown} ({problem})")
    try:
        infos: list[AddrInfo] = [*socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, flags)]
        return infos
    except (UnicodeError, ValueError) as error:      # what host_problem should have said
        raise socket.gaierror(socket.EAI_NONAME, f"cannot resolve {shown} ({error})") from None
    except socket.gaierror as error:
        reason = error.strerror or str(error)
        if family in _FAMILY_NAMES and not flags:
            try:
                others = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            except (OSError, UnicodeError, ValueError):
                others = []
            if others:
                found = ", ".join(dict.fromkeys(str(info[4][0]) for info in others))
                raise socket.gaierror(error.errno, f"{shown} does not resolve to an "
                                                   f"{_FAMILY_NAMES[family]} address (only to "
                                                   f"{printable(found, SHOWN_HOST)})") from None
        raise socket.gaierror(error.errno, f"cannot resolve {shown} ({reason})") from None


def resolve(address: Address, family: int = 0) -> list[str]:
    """The IP addresses (host, port) resolves to, each once, in the resolver's order:
    what ``connect(..., addresses=...)`` then connects to without a second lookup
    (the exporter checks them against its allowlist in between).

    socket.gaierror with a sentence naming the host when it does not resolve or is
    no host name at all (a NUL, an empty label, 10 kB)."""
    host, port = address
    return list(dict.fromkeys(str(info[4][0]) for info in _addrinfo(host, port, family)))


@types.coroutine
def connect(address: Address, timeout: Timeout = None, *, deadline: Deadline | None = None,
            family: int = 0, addresses: Sequence[str] | None = None
            ) -> Generator[WriteWait, None, Socket]:
    """Connect to (host, port); a Socket with TCP_NODELAY set.

    Name resolution uses getaddrinfo (blocking; instant for addresses and
    /etc/hosts names); ``family`` (socket.AF_INET or AF_INET6, 0 for either) keeps
    only the addresses of one family. ``addresses`` (IP addresses, as ``resolve``
    gives them) are connected to instead, and the name is not looked up at all.
    Each address is tried in turn until one accepts, each with a fair share of what
    is left of the deadline (the last with all of it). Raises socket.gaierror
    naming the host when it does not resolve (or not in ``family``),
    ConnectionRefusedError etc. naming the address (every address tried, when there
    were several), TimeoutError.
    """
    host, port = address
    label = format_address(address)
    deadline = _deadline(timeout, deadline)
    try:
        if addresses is None:
            infos = _addrinfo(host, port, family)
        else:
            infos = [info for ip in addresses
                     for info in _addrinfo(ip, port, 0, socket.AI_NUMERICHOST)
                     if not family or info[0] == family]
    except socket.gaierror as error:
        raise socket.gaierror(error.errno, f"connect to {label}: {error.strerror}") from None
    if not infos:
        raise socket.gaierror(socket.EAI_NONAME, f"connect to {label}: no address to connect to")
    failures = []
    for number, (family_found, kind, proto, _, sockaddr) in enumerate(infos):
        left = len(infos) - number
        attempt = deadline if deadline is None or left == 1 else deadline.sooner(deadline.remaining() / left)
        try:
            sock = yield from _connect_one(family_found, kind, proto, sockaddr, attempt, label)
        except OSError as error:
            failures.append((sockaddr, error))
            continue
        return Socket(sock, address)
    if len(failures) == 1:
        raise failures[0][1]
    last = failures[-1][1]
    tried = "; ".join(f"{format_address(sockaddr)}: {_reason(error)}" for sockaddr, error in failures)
    code = last.errno if isinstance(last, OSError) and last.errno else None
    message = f"connect to {label}: every address failed ({tried})"
    raise type(last)(code, message) if code else type(last)(message)


def _reason(error: OSError) -> str:
    return os.strerror(error.errno) if error.errno else str(error).rpartition(": ")[2]


@types.coroutine
def _connect_one(family: int, kind: int, proto: int, sockaddr: Any, deadline: Deadline | None,
                 label: str) -> Generator[WriteWait, None, socket.socket]:
    """One non-blocking connect to ``sockaddr``: the connected socket.socket."""
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(sockaddr)
        if code in (errno.EINPROGRESS, errno.EAGAIN):
            try:
                yield WriteWait(sock.fileno(), deadline)
            except TimeoutError:
                assert deadline is not None     # only a wait with a deadline times out
                raise TimeoutError(f"connect to {label}: no answer within "
                                   f"{deadline.seconds:g} s") from None
            finally:
                forget_fd(sock.fileno())
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            error_type = _ERRNO_TYPES.get(code, OSError)
            raise error_type(code, f"connect to {label}: {os.strerror(code)}")
    except BaseException:
        sock.close()
        raise
    return sock


_ERRNO_TYPES = {
    errno.ECONNREFUSED: ConnectionRefusedError,
    errno.ECONNRESET: ConnectionResetError,
    errno.ECONNABORTED: ConnectionAbortedError,
    errno.ETIMEDOUT: TimeoutError,
}


def listen(host: str = HOST, port: int = 0, backlog: int = 1024) -> Socket:
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
