"""The exporter's HTTP server: h11 on tpsharness's own kernel, probes on threads.

Why not ``http.server`` (or prometheus_client's server, built on it): it spends a
thread on every connection, idle or not, and times out a single read, not a request,
so a peer trickling a byte at a time, or 4,000 idle connections, hold 4,000 threads.
Here one kernel thread holds every connection as a small task, and h11 (the HTTP
library tpsharness already depends on) parses and writes HTTP/1.1:

- each request must arrive whole (TLS handshake included) within ``request_timeout``
  of its connection, or it gets 408 and a close; its head is bounded (431), its body
  too (413), and a malformed request gets 400;
- at ``max_connections`` a new connection evicts the oldest one still sending its
  request (a slow sender cannot keep scrapes out), or, when every connection is
  being answered, gets 503 at once; the listen backlog is 1024;
- a probe (name resolution and the check block) and a bcrypt comparison run on
  threads of their own, bounded: past the exporter's probe cap a scrape gets 503 at
  once, from the loop, without waiting for a thread;
- TLS is the ``ssl`` module's, through memory BIOs, so that a handshake waits
  on the kernel like any other read;
- ``shutdown`` stops accepting, closes at once the connections still sending their
  request (503 to one that began), lets those being answered finish within a
  grace, answers 503 to the probes still running, and closes the rest.

Every answer closes its connection (``Connection: close``): a scraper reconnects each
interval, and nothing idles between requests.
"""

from __future__ import annotations

import errno
import http
import logging
import socket
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar, cast

import h11

from .. import net
from ..deadline import Deadline
from ..defaults import HOST
from ..kernel import Scheduler
from ..syscalls import NewTask, ReadWait, Sleep, forget_fd, kill
from .app import Exporter, ProbeJob, Request, Response
from .auth import BasicAuth, parse_basic

T = TypeVar("T")
log = logging.getLogger("tpsharness.exporter")

DEFAULT_PORT = 9115                 # blackbox_exporter's
BACKLOG = 1024
MAX_CONNECTIONS = 1024
REQUEST_TIMEOUT = 5.0               # seconds for a whole request, from its connection
WRITE_TIMEOUT = 10.0                # seconds to hand an answer to a slow reader
SHUTDOWN_GRACE = 5.0                # seconds in-flight requests get once a stop is asked
MAX_HEAD = 16 * 1024                # bytes of request line and headers
MAX_BODY = 16 * 1024                # bytes of a request body (GET has none)
AUTH_THREADS = 4                    # bcrypt comparisons at once
MAX_REFUSING = 64                   # connections over the limit told 503 at once; more are closed
REFUSE_TIMEOUT = 1.0                # seconds a refused connection may take to close its side
_OVERLOAD = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
             b"Content-Length: 45\r\nConnection: close\r\n\r\n"
             b"too many connections at once; try again later\n")
_PLAIN_TO_TLS = (b"HTTP/1.0 400 Bad Request\r\nConnection: close\r\n\r\n"
                 b"Client sent an HTTP request to an HTTPS server.\n")


def encode(response: Response) -> bytes:
    """The bytes of ``response`` (h11 writes them), closing the connection after."""
    connection = h11.Connection(h11.SERVER)       # a server may answer from IDLE (a 408)
    headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body))),
               ("Connection", "close"), *response.headers]
    try:
        phrase = http.HTTPStatus(response.status).phrase
    except ValueError:
        phrase = ""
    return (connection.send(h11.Response(status_code=response.status, headers=headers,
                                         reason=phrase.encode()))
            + connection.send(h11.Data(data=response.body)) + connection.send(h11.EndOfMessage()))


class _PlainStream:
    """A connection's bytes, as they are."""

    __slots__ = ("sock",)

    def __init__(self, sock: net.Socket) -> None:
        self.sock = sock

    async def handshake(self, deadline: Deadline) -> None:
        return None

    async def recv(self, deadline: Deadline) -> bytes:
        return await self.sock.recv(net.RECV_SIZE, deadline=deadline)

    async def send(self, data: bytes, deadline: Deadline) -> None:
        await self.sock.sendall(data, deadline=deadline)

    def send_nowait(self, data: bytes) -> None:
        try:
            self.sock.send_nowait(data)
        except OSError:
            pass


class _TLSStream:
    """A connection's bytes through TLS: an ssl.SSLObject on memory BIOs (sans-IO
    TLS), the socket read and written by the kernel as any other."""

    __slots__ = ("sock", "context", "tls", "incoming", "outgoing", "first")

    def __init__(self, sock: net.Socket, context: ssl.SSLContext) -> None:
        self.sock = sock
        self.context = context
        self.tls: ssl.SSLObject | None = None   # made when the first bytes arrive
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.first = b""

    async def _flush(self, deadline: Deadline) -> None:
        data = self.outgoing.read()
        if data:
            await self.sock.sendall(data, deadline=deadline)

    async def _fill(self, deadline: Deadline) -> None:
        data = await self.sock.recv(net.RECV_SIZE, deadline=deadline)
        if not data:
            raise ConnectionResetError("the client closed the connection")
        if not self.first:
            self.first = data[:16]
        self.incoming.write(data)

    async def handshake(self, deadline: Deadline) -> None:
        await self._fill(deadline)
        self.tls = self.context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush(deadline)
                await self._fill(deadline)
                continue
            await self._flush(deadline)
            return

    async def recv(self, deadline: Deadline) -> bytes:
        assert self.tls is not None         # handshake() made it
        while True:
            try:
                return self.tls.read(net.RECV_SIZE)
            except ssl.SSLWantReadError:
                await self._flush(deadline)
                await self._fill(deadline)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    async def send(self, data: bytes, deadline: Deadline) -> None:
        assert self.tls is not None
        self.tls.write(data)
        await self._flush(deadline)

    def send_nowait(self, data: bytes) -> None:
        try:
            if self.tls is not None:
                self.tls.write(data)
                self.sock.send_nowait(self.outgoing.read())
        except (OSError, ssl.SSLError):
            pass


class _Connection:
    """One accepted connection: its stream, its task, and what it is doing
    ('reading' its request, 'working' on a thread, 'writing' the answer)."""

    __slots__ = ("sock", "stream", "tid", "state", "began")

    def __init__(self, sock: net.Socket, stream: _PlainStream | _TLSStream) -> None:
        self.sock = sock
        self.stream = stream
        self.tid = 0
        self.state = "new"          # its task has not run yet
        self.began = False          # a byte of its request arrived


class _Pending:
    """A call running on a thread of its own; a socketpair wakes the task that waits
    for it. The thread owns the writing end, the task the reading end, so that each
    closes its own."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.call = call
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as error:      # handed to the waiting task, which re-raises it
            self.error = error
        finally:
            try:
                self._writer.send(b"!")
            except OSError:
                pass                        # the task gave up and closed its end
            self.close_writer()

    def close_writer(self) -> None:
        self._writer.close()


class ExporterServer:
    """Serves an Exporter over HTTP (or HTTPS, with ``tls``); ``serve_forever`` runs
    the loop in the calling thread until ``shutdown`` (from any thread, or a signal
    handler) has taken effect."""

    def __init__(self, exporter: Exporter, host: str = HOST, port: int = DEFAULT_PORT, *,
                 tls: ssl.SSLContext | None = None, auth: BasicAuth | None = None,
                 max_connections: int = MAX_CONNECTIONS, request_timeout: float = REQUEST_TIMEOUT,
                 shutdown_grace: float = SHUTDOWN_GRACE, backlog: int = BACKLOG) -> None:
        self.exporter = exporter
        self.tls = tls
        self.auth = auth if auth is not None and auth.users else None
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.shutdown_grace = shutdown_grace
        self.listener = net.listen(host, port, backlog)     # OSError "listen on ...: why"
        bound = self.listener.sock.getsockname()
        self.server_address: tuple[str, int] = (bound[0], bound[1])
        self._connections: OrderedDict[int, _Connection] = OrderedDict()   # oldest first
        self._auth_slots = threading.BoundedSemaphore(AUTH_THREADS)    # released by the thread, when done
        self._refusing = 0              # connections over the limit, being told so
        self._wake_reader, self._wake_writer = socket.socketpair()
        for end in (self._wake_reader, self._wake_writer):
            end.setblocking(False)
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._loop_thread: int | None = None
        self.stopping = False

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    # -- control from outside ----------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until ``shutdown``; returns once every connection is answered or closed."""
        self._loop_thread = threading.get_ident()
        try:
            with Scheduler() as scheduler:
                acceptor = scheduler.new(self._accept())
                scheduler.new(self._control(acceptor))
                scheduler.run()
        finally:
            self._stopped.set()

    def shutdown(self, wait: bool = True) -> None:
        """Ask the loop to stop (thread-safe, and safe in a signal handler); with ``wait``,
        block until it has (at most the grace and a little more)."""
        self._stop.set()
        try:
            self._wake_writer.send(b"!")
        except OSError:
            pass                    # full (a wake-up is pending anyway) or closed
        if wait and threading.get_ident() != self._loop_thread:
            self._stopped.wait(self.shutdown_grace + 5)

    def server_close(self) -> None:
        self.listener.close()
        self._wake_reader.close()
        self._wake_writer.close()

    # -- the loop ----------------------------------------------------------------------

    async def _control(self, acceptor: int) -> None:
        """Wait for a stop; then the grace, then an answer or a close for what is left."""
        while not self._stop.is_set():
            try:
                await ReadWait(self._wake_reader)
                self._wake_reader.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
        self.stopping = True
        kill(acceptor)
        self.listener.close()
        for connection in list(self._connections.values()):
            if connection.state in ("new", "reading"):      # nothing to finish: no grace for it
                if connection.began:
                    connection.stream.send_nowait(encode(Response.text(503, "the exporter is shutting down")))
                self._close(connection)
        grace = Deadline(self.shutdown_grace)
        while self._connections and not grace.expired:
            await Sleep(min(0.05, grace.remaining()))
        for connection in list(self._connections.values()):
            if connection.state == "working":
                connection.stream.send_nowait(encode(self.exporter.refuse_stopping()))
            self._close(connection)

    async def _accept(self) -> None:
        while True:
            try:
                sock, _ = await self.listener.accept()
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    await Sleep(0.1)        # out of descriptors: the backlog holds them meanwhile
                    continue
                if error.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EAGAIN):
                    continue
                raise
            if len(self._connections) >= self.max_connections and not self._evict_one():
                self.exporter.dropped.labels("over the limit").inc()
                if self.tls is None and self._refusing < MAX_REFUSING:
                    self._refusing += 1
                    await NewTask(self._refuse(sock), daemon=True)
                else:
                    sock.close()
                continue
            stream = _TLSStream(sock, self.tls) if self.tls is not None else _PlainStream(sock)
            connection = _Connection(sock, stream)
            self._connections[id(connection)] = connection
            self.exporter.connections.inc()
            connection.tid = await NewTask(self._serve(connection), daemon=True)
            await _YIELD        # let it start reading (and so become evictable) before the next

    async def _refuse(self, sock: net.Socket) -> None:
        """503 to a connection over the limit. Its request is read and dropped before
        the close (closing with unread bytes would reset the connection, and the reset
        can reach the client before the 503 does)."""
        deadline = Deadline(REFUSE_TIMEOUT)
        try:
            sock.send_nowait(_OVERLOAD)
            sock.shutdown_write()
            while await sock.recv(net.RECV_SIZE, deadline=deadline):
                pass
        except (OSError, TimeoutError):
            pass
        finally:
            self._refusing -= 1
            sock.close()

    def _evict_one(self) -> bool:
        """Close the oldest connection still sending its request; False if none is."""
        oldest = next((c for c in self._connections.values() if c.state == "reading"), None)
        if oldest is None:
            return False
        self.exporter.dropped.labels("evicted").inc()
        self._close(oldest)
        return True

    def _close(self, connection: _Connection) -> None:
        """End a connection and its task (one that never ran has no ``finally`` to do it)."""
        kill(connection.tid)
        if self._connections.pop(id(connection), None) is not None:
            self.exporter.connections.dec()
        connection.sock.close()

    async def _serve(self, connection: _Connection) -> None:
        connection.state = "reading"
        try:
            answer = await self._answer(connection)
            if answer is not None:
                connection.state = "writing"
                await connection.stream.send(encode(answer), Deadline(WRITE_TIMEOUT))
        except (OSError, TimeoutError, ssl.SSLError):
            pass                    # the client went away, or would not read: nobody to tell
        except Exception:           # a bug: say so in the log, and answer 500
            log.exception("the exporter failed to answer a request")
            connection.stream.send_nowait(encode(Response.text(500, "internal error; see the "
                                                                    "exporter's log")))
        finally:
            if self._connections.pop(id(connection), None) is not None:
                self.exporter.connections.dec()
            connection.sock.close()

    async def _answer(self, connection: _Connection) -> Response | None:
        """What to answer this connection's request (None: drop it)."""
        deadline = Deadline(self.request_timeout)
        try:
            await connection.stream.handshake(deadline)
        except ssl.SSLError:
            self.exporter.dropped.labels("tls handshake").inc()
            first = connection.stream.first if isinstance(connection.stream, _TLSStream) else b""
            if first[:4] in (b"GET ", b"POST", b"HEAD", b"PUT ", b"OPTI", b"DELE"):
                connection.stream.sock.send_nowait(_PLAIN_TO_TLS)
            return None
        except TimeoutError:
            self.exporter.dropped.labels("tls handshake").inc()
            return None
        try:
            request = await self._read_request(connection, deadline)
        except TimeoutError:
            self.exporter.dropped.labels("request timeout").inc()
            return Response.text(408, f"the request did not arrive whole within "
                                      f"{self.request_timeout:g} s")
        if isinstance(request, Response):
            self.exporter.dropped.labels("malformed request").inc()
            return request
        connection.state = "working"
        if self.stopping:
            return self.exporter.refuse_stopping() if request.path == "/probe" else \
                Response.text(503, "the exporter is shutting down")
        if self.auth is not None:
            refusal = await self._authenticate(request, deadline)
            if refusal is not None:
                return refusal
        answer = self.exporter.handle(request)
        if isinstance(answer, ProbeJob):
            return await self._run_probe(answer)
        return answer

    async def _read_request(self, connection: _Connection, deadline: Deadline) -> Request | Response:
        """The request (h11 parses it), or the Response that refuses it (400, 413, 431).
        TimeoutError past ``deadline``; ConnectionError if the client closed first."""
        stream = connection.stream
        parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        request: h11.Request | None = None
        body = head = 0
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError as error:
                status = error.error_status_hint if error.error_status_hint in (400, 413, 431) else 400
                return Response.text(status, f"malformed request: {error}"[:200])
            if event is h11.NEED_DATA:
                data = await stream.recv(deadline)
                if not data:
                    raise ConnectionResetError("the client closed the connection")
                connection.began = True
                if request is None:
                    head += len(data)
                    if head > MAX_HEAD:      # h11 bounds only a head still incomplete
                        return Response.text(431, f"the request head is over {MAX_HEAD} bytes")
                parser.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
                length = dict(event.headers).get(b"content-length", b"0")
                if not length.isdigit() or int(length) > MAX_BODY:
                    return Response.text(413, f"a request body is at most {MAX_BODY} bytes")
            elif isinstance(event, h11.Data):
                body += len(event.data)
                if body > MAX_BODY:
                    return Response.text(413, f"a request body is at most {MAX_BODY} bytes")
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                target = request.target.decode("latin-1")
                path, _, query = target.partition("?")
                headers = {name.decode("latin-1"): value.decode("latin-1")
                           for name, value in request.headers}
                return Request(request.method.decode("latin-1"), path, query, headers)
            else:                       # ConnectionClosed, or a close mid-request
                raise ConnectionResetError("the client closed the connection")

    async def _authenticate(self, request: Request, deadline: Deadline) -> Response | None:
        """None when the request's credentials are right; else the 401 (or a 503 when too
        many comparisons run at once, or the request's deadline passes first). A slot is
        freed when its comparison ends, not when its request gives up: a comparison left
        running still counts."""
        assert self.auth is not None
        credentials = parse_basic(request.headers.get("authorization"))
        verdict = self.auth.known(credentials)
        if verdict is None and credentials is not None:
            slots = self._auth_slots
            if not slots.acquire(blocking=False):
                return Response.text(503, "too many authentications at once; try again later")
            auth, given = self.auth, credentials

            def compare() -> bool:
                try:
                    return auth.verify(given)
                finally:
                    slots.release()
            try:
                verdict = bool(await _on_thread(compare, deadline.remaining(), on_no_thread=slots.release))
            except TimeoutError:
                return Response.text(503, "the credentials could not be checked in time; try again later")
        if verdict:
            return None
        self.exporter.unauthorized.inc()
        return Response.text(401, "unauthorized: this exporter needs basic auth credentials",
                             ("WWW-Authenticate", 'Basic realm="tpsharness exporter", charset="UTF-8"'))

    async def _run_probe(self, job: ProbeJob) -> Response:
        try:
            answer = await _on_thread(job.run, job.deadline, on_no_thread=job.release)
        except TimeoutError:
            return Response.text(503, f"the probe did not end within {job.deadline:g} s "
                                      f"(a name resolution that hangs?)")
        except RuntimeError as error:
            if "thread" not in str(error):
                raise
            return Response.text(503, f"cannot start a thread for the probe ({error})")
        assert isinstance(answer, Response)
        return answer


_YIELD = Sleep(0)


async def _on_thread(call: Callable[[], T], seconds: float,
                     on_no_thread: Callable[[], None] | None = None) -> T:
    """``call()`` on a thread of its own, awaited from a kernel task; its result, or what
    it raised. TimeoutError after ``seconds`` (the thread is left to finish alone);
    RuntimeError when no thread can be started, after ``on_no_thread()`` (also for the
    OSError of a socketpair the fds ran out for: what the call held is given back)."""
    try:
        pending = _Pending(call)
    except OSError:
        if on_no_thread is not None:
            on_no_thread()
        raise
    try:
        threading.Thread(target=pending.run, name="tpsharness-exporter", daemon=True).start()
    except RuntimeError:
        pending.reader.close()
        pending.close_writer()
        if on_no_thread is not None:
            on_no_thread()
        raise
    try:
        try:
            await ReadWait(pending.reader, Deadline(seconds))
        finally:
            forget_fd(pending.reader.fileno())
    finally:
        pending.reader.close()
    if pending.error is not None:
        raise pending.error
    return cast(T, pending.result)      # what call() returned
