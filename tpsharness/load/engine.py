"""One worker's load run, on the kernel: held devices, senders, the clock.

Every device and client connection is read by ONE EndpointPool task; what happens
to a message is decided in its callback, without a task switch: a device accounts a
delivery and (closed loop) its sender sends the next message at once; a client
matches acks in order. The open-loop pacer sends each message at its scheduled time
and stamps it with that time, so a stalled server shows as latency (coordinated
omission corrected, as wrk2 does) instead of as fewer samples.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine
from time import monotonic
from typing import Any
from zlib import crc32

from hdrh.histogram import HdrHistogram

from .. import net
from ..defaults import KEEPALIVE_INTERVAL
from ..errors import LoadUsageError, TPSError
from ..outbox import Outbox
from ..protocol import PrivateData, PrivateDataTemplate, RegisterReply, Reply, quote, register_request
from ..syscalls import KillTask, NewTask, Sleep, WaitTask
from . import payload as payload_format
from .accounting import Counters, Streams, reason_of, status_reason
from .config import LoadConfig
from .endpoints import LoadClient, LoadDevice, LoadPool, Message
from .histograms import encode

CONCURRENT_CONNECTS = 256       # devices connecting and registering at once
MAX_BACKLOG = 1 << 20           # bytes queued for one connection before messages are refused
MAX_ACKS_AWAITED = 1 << 20      # due times kept per client to match acks
START_TIMEOUT = 120.0           # a worker waits this long for the common start

LoadEndpoint = LoadDevice | LoadClient
OnTick = Callable[[dict[str, Any]], None]
Send = Callable[[LoadClient, float], bool]


class Control:
    """How the outside steers a run: ``stop`` (a reason) ends it early; with
    ``wait_for_start``, the run calls ``ready(info)`` once connected and waits until
    ``start_at`` (a time.time()) is set."""

    def __init__(self, wait_for_start: bool = False,
                 ready: Callable[[dict[str, int]], None] | None = None) -> None:
        self.stop: str | None = None
        self.start_at: float | None = None
        self.wait_for_start = wait_for_start
        self.ready = ready


class Engine:
    """Runs ``config`` (a LoadConfig) on the current scheduler: ``await engine.run()``
    returns the worker's result as a dict of plain data (see result.py)."""

    def __init__(self, config: LoadConfig, *, name: str = "local", on_tick: OnTick | None = None,
                 control: Control | None = None) -> None:
        self.config = config
        self.name = name
        self.on_tick = on_tick
        self.control = control or Control()
        self.counters = Counters()
        self.pool = LoadPool(on_close=self._on_close)
        prefix = config.prefix or f"load-{os.urandom(3).hex()}-"
        address = config.address
        if address is None:         # the CLI and load() put the bundled fake's address here
            raise LoadUsageError("a load engine needs the TPS address (config.address)")
        self.devices: list[LoadDevice] = []
        for i in range(config.devices):
            device = LoadDevice(address, f"{prefix}cam-{i}", auth_code=config.auth_code,
                                timeout=config.timeout)
            device.index, device.outbox, device.closed, device.relay_heads = i, None, False, None
            self.devices.append(device)
        self.clients: list[LoadClient] = []
        for i in range(config.clients):
            client = LoadClient(address, f"{prefix}app-{i}", auth_code=config.auth_code,
                                timeout=config.timeout)
            client.index, client.pairs, client.turn, client.count = i, [], 0, 0
            client.due_times, client.in_flight, client.outbox, client.closed = deque(), 0, None, False
            client.last_progress = 0.0
            self.clients.append(client)
        self.live_devices = 0
        self.live_clients = 0
        self.streams: Streams | None = None     # once the pairs are built
        self.sent = 0
        self._paced = 0                  # open loop: messages paced so far
        self._pace_total = math.ceil(config.rate * config.duration) if config.rate is not None else 0
        self.window = config.window if config.window is not None else 1     # closed loop
        self.sending = False
        self.aborted: str | None = None
        self.start: float | None = None
        self.series: list[dict[str, Any]] = []
        self._last = (0, 0, 0)           # sent, delivered, errors at the last tick
        self._cpu_start: float | None = None
        self._cpu_last = 0.0
        self._cpu = (0.0, 0.0)           # CPU seconds, wall seconds of the traffic phase

    # -- the run --------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        config = self.config
        await self._register_devices()
        if self.live_devices and not self.control.stop:
            await self._connect_clients()
        if not self.live_devices:
            self.aborted = self.aborted or f"no device could register: {self._first_error()}"
        elif not self.live_clients and not self.control.stop:
            self.aborted = self.aborted or f"no client could connect: {self._first_error()}"
        if self.aborted or self.control.stop:
            self._close_all()
            return self._result(0.0)
        self._build_pairs()
        if self.control.wait_for_start:
            await self._wait_for_start()
        self.start = monotonic()
        self._cpu_start = self._cpu_last = _cpu_seconds()
        reader = await NewTask(self.pool.run())
        ticker = await NewTask(self._tick_loop())
        self.sending = True
        driver = await NewTask(self._pace() if config.rate is not None else self._open_windows())
        beats = await NewTask(self._heartbeats()) if config.heartbeat else None
        end = self.start + config.duration
        while not self.aborted and not self.control.stop:
            left = end - monotonic()
            if left <= 0:
                break
            await Sleep(min(left, 0.05))
        if config.rate is not None and not self.aborted and not self.control.stop:
            self._send_due(end)         # the pacer may not have woken since the last were due
        self.sending = False
        await KillTask(driver)
        if beats is not None:
            await KillTask(beats)
        drain_end = monotonic() + (config.drain_time if not self.aborted else 0.0)
        while monotonic() < drain_end and not self.aborted and self._in_flight() > 0:
            await Sleep(0.01)
        await KillTask(ticker)
        elapsed = monotonic() - self.start
        self._tick(len(self.series) + 1, elapsed - len(self.series))
        await KillTask(reader)
        self._close_all()
        if self.aborted:
            self.aborted += await self._probe()
        return self._result(elapsed)

    async def _probe(self) -> str:
        """Whether the TPS still accepts connections, said after the reason for stopping."""
        address = self.config.address
        assert address is not None, "__init__ refused a config without one"
        try:
            sock = await net.connect(address, timeout=min(1.0, self.config.timeout))
        except (OSError, TimeoutError) as error:
            return f"; it no longer accepts connections ({error})"
        sock.close()
        return "; it still accepts connections"

    def _in_flight(self) -> int:
        streams = self.streams
        if streams is None:
            return 0
        return self.sent - streams.delivered - streams.corrupted - self.counters.rejected

    async def _wait_for_start(self) -> None:
        control = self.control
        if control.ready is not None:
            control.ready({"devices": self.live_devices, "clients": self.live_clients})
        give_up = monotonic() + START_TIMEOUT
        while control.start_at is None and not control.stop:
            if monotonic() > give_up:
                self.aborted = f"no common start time within {START_TIMEOUT:g} s"
                return
            await Sleep(0.005)
        if control.start_at is not None:
            delay = control.start_at - time.time()
            if delay > 0:
                await Sleep(delay)

    # -- connecting ---------------------------------------------------------------------------

    async def _register_devices(self) -> None:
        ramp, count = self.config.ramp, len(self.devices)
        started = monotonic()
        pending: deque[int] = deque()
        for device in self.devices:
            if self.control.stop:
                break
            if ramp:
                delay = started + ramp * device.index / count - monotonic()
                if delay > 0:
                    await Sleep(delay)
            pending.append(await NewTask(self._register(device)))
            if len(pending) >= CONCURRENT_CONNECTS:
                await WaitTask(pending.popleft())
        while pending:
            await WaitTask(pending.popleft())

    async def _register(self, device: LoadDevice) -> None:
        counters = self.counters
        try:
            await device.connect()
            started = monotonic()
            await device.register()
        except TPSError as error:
            device.close()
            device.closed = True
            counters.errors.add(_reason(error), f"device {device.uuid}: {error}")
            return
        counters.latency["register"].buffer.append(int((monotonic() - started) * 1e6))
        if self.config.heartbeat:
            device.heartbeat_request = (device.keepalive_interval or KEEPALIVE_INTERVAL, register_request(
                device.uuid, host=device.host_header, cseq="2", auth_code=device.auth_code))
        self.pool.add(device)
        self.live_devices += 1
        counters.devices += 1

    async def _connect_clients(self) -> None:
        pending: deque[int] = deque()
        for client in self.clients:
            pending.append(await NewTask(self._connect(client)))
            if len(pending) >= CONCURRENT_CONNECTS:
                await WaitTask(pending.popleft())
        while pending:
            await WaitTask(pending.popleft())

    async def _connect(self, client: LoadClient) -> None:
        try:
            await client.connect()
        except TPSError as error:
            client.closed = True
            self.counters.errors.add(_reason(error), f"client {client.uuid}: {error}")
            return
        self.pool.add(client)
        self.live_clients += 1
        self.counters.clients += 1

    def _build_pairs(self) -> None:
        """Spread clients evenly over the registered devices: max(N, M) streams."""
        devices = [d for d in self.devices if not d.closed]
        clients = [c for c in self.clients if not c.closed]
        pairs = max(len(devices), len(clients))
        size = self.config.payload_size
        client_of: list[int] = []
        device_of: list[int] = []
        heads: list[bytes] = []
        answers: list[Callable[[bytes], bytes]] = []
        for pair in range(pairs):
            client, device = clients[pair % len(clients)], devices[pair % len(devices)]
            client.pairs.append(pair)
            client_of.append(client.index)
            device_of.append(device.index)
            build = PrivateDataTemplate(client.uuid, device.uuid, host=client.host_header,
                                        auth_code=client.auth_code).build
            head = build(bytes(size))[:-size]       # every payload has one size: the header block is fixed
            heads.append(head)
            if device.relay_heads is None:
                device.relay_heads = {}
            device.relay_heads[head] = (client.uuid, size)       # what the device frames without parsing
            if self.config.reply_every:
                answers.append(PrivateDataTemplate(device.uuid, client.uuid, host=device.host_header,
                                                   auth_code=device.auth_code).build)
        streams = self.streams = Streams(client_of, device_of)
        self._heads, self._answers = heads, answers
        self.sending_clients = clients
        self.pool.on_read = self._make_on_read(streams)

    # -- the hot path ----------------------------------------------------------------------------

    def _make_send(self, streams: Streams) -> Send:
        config = self.config
        make = payload_format.PayloadMaker(config.payload_size).make
        heads = self._heads
        next_seq = streams.next_seq
        reply_every = config.reply_every
        ask = payload_format.ASK_REPLY
        write = self._write
        errors = self.counters.errors

        def send(client: LoadClient, due: float) -> bool:
            """Send ``client``'s next message, due at ``due``; False if it could not."""
            if client.closed:
                return False
            pairs = client.pairs
            turn = client.turn
            pair = pairs[turn]
            turn += 1
            client.turn = 0 if turn == len(pairs) else turn
            flags = 0
            if reply_every:
                client.count += 1
                if client.count % reply_every == 0:
                    flags = ask
            outbox = client.outbox
            if outbox is not None and outbox.queued > MAX_BACKLOG:
                errors.add("generator backlog full", f"client {client.uuid}: over {MAX_BACKLOG} bytes "
                           "queued (the TPS does not read fast enough); message not sent")
                return False
            seq = next_seq[pair]
            next_seq[pair] = seq + 1
            self.sent += 1
            client.in_flight += 1
            due_times = client.due_times
            if len(due_times) < MAX_ACKS_AWAITED:
                due_times.append(due)
            write(client, heads[pair] + make(client.index, pair, seq, due, flags))
            return True

        return send

    def _make_on_read(self, streams: Streams) -> Callable[[LoadEndpoint, bytes], None]:
        counters = self.counters
        receive = streams.receive
        device_of = streams.device_of
        pairs = len(device_of)
        relay = counters.latency["relay"]
        ack = counters.latency["ack"]
        ack_append = ack.buffer.append          # the buffers are emptied in place: bound once
        relay_append = relay.buffer.append
        reply = counters.latency["reply"]
        read = payload_format.read
        unpack_header = payload_format.unpack_header
        header_size = payload_format.HEADER_SIZE
        ask = payload_format.ASK_REPLY
        answers = self._answers
        clients = self.clients
        by_src = {client.uuid: client for client in clients}
        closed_loop = self.config.rate is None
        send = self._send = self._make_send(streams)
        write = self._write
        errors = counters.errors

        def refill(client: LoadClient, now: float) -> None:
            client.in_flight -= 1
            client.last_progress = now
            if closed_loop and self.sending:
                send(client, now)

        def on_read(endpoint: LoadEndpoint, data: bytes) -> None:
            """One read's messages: a device's relays, a client's acks and answers."""
            now = monotonic()
            if endpoint.__class__ is LoadDevice:
                for message in endpoint.frame(data, relayed, now):
                    if message.__class__ is PrivateData:
                        relayed(endpoint, message.src, message.body, now)
                    elif not isinstance(message, (Reply, RegisterReply)):
                        unexpected(endpoint, message)
                    elif message.status != 200:
                        errors.add(status_reason(message), f"device {endpoint.uuid}: TPS answered "
                                   f"{message.status} {message.reason} to a heartbeat or an answer")
                return
            client: LoadClient = endpoint   # type: ignore[assignment]  # the pool holds devices and clients
            acks = client.whole_acks(data)
            if acks:
                counters.acked += acks
                due_times = client.due_times
                for _ in range(acks):
                    if due_times:
                        ack_append(int((now - due_times.popleft()) * 1e6))
                return
            for message in client.messages(data):
                on_client_message(client, message, now)

        def relayed(endpoint: LoadDevice, src: str, body: bytes, now: float) -> None:
            """Private data relayed to device ``endpoint`` from ``src``: account it."""
            if len(body) >= header_size:              # payload.read(), inline
                check, sender, pair, seq, due, flags = unpack_header(body)
                if check != crc32(body[4:]) or pair >= pairs or device_of[pair] != endpoint.index:
                    sender = None
            else:
                sender = None
            if sender is None:
                streams.corrupted += 1
                client = by_src.get(src)
                if client is not None:
                    refill(client, now)
                return
            if receive(pair, seq):
                relay_append(int((now - due) * 1e6))
                if flags & ask:
                    write(endpoint, answers[pair](body))
                client = clients[sender]
                client.in_flight -= 1                   # refill(), inline
                client.last_progress = now
                if closed_loop and self.sending:
                    send(client, now)

        def on_client_message(endpoint: LoadClient, message: Message, now: float) -> None:
            """A client's message: an ack (in order) or a device's answer."""
            if message.__class__ is PrivateData:
                fields = read(message.body)
                if fields is not None:
                    counters.replies += 1
                    reply.buffer.append(int((now - fields[3]) * 1e6))
                return
            if not isinstance(message, (Reply, RegisterReply)):
                unexpected(endpoint, message)
                return
            due_times = endpoint.due_times
            due = due_times.popleft() if due_times else None
            if message.status == 200:
                counters.acked += 1
                if due is not None:
                    ack.buffer.append(int((now - due) * 1e6))
            else:
                counters.rejected += 1
                errors.add(status_reason(message), f"client {endpoint.uuid}: TPS answered "
                           f"{message.status} {message.reason} to private data")
                refill(endpoint, now)

        def unexpected(endpoint: LoadEndpoint, message: Message) -> None:
            """A request no TPS sends its peers (a register, an unknown path): an error
            counted, not the end of every connection's reading."""
            what = "device" if endpoint.__class__ is LoadDevice else "client"
            errors.add("protocol error", f"{what} {endpoint.uuid}: TPS sent a request that is "
                       f"neither private data nor a reply: {quote(message.raw)}")

        return on_read

    def _write(self, endpoint: LoadEndpoint, data: bytes) -> None:
        """Send ``data`` in one piece if the socket takes it; the rest waits in its Outbox."""
        outbox = endpoint.outbox
        if outbox is None:
            sock = endpoint.sock
            assert sock is not None         # a written endpoint is connected
            outbox = endpoint.outbox = Outbox(sock, lambda error: self._write_failed(endpoint, error),
                                              self.config.timeout)
        outbox.write(data)

    def _write_failed(self, endpoint: LoadEndpoint, error: OSError) -> None:
        if isinstance(error, TimeoutError):
            self._lose(endpoint, f"TPS {endpoint.label} did not read for {self.config.timeout:g} s")
        else:
            self._lose(endpoint, f"TPS {endpoint.label} {_describe(error)}")

    def _lose(self, endpoint: LoadEndpoint, reason: str) -> None:
        if endpoint.closed:
            return
        self.pool.discard(endpoint)
        endpoint.close()
        self._on_close(endpoint, reason)

    def _on_close(self, endpoint: LoadEndpoint, reason: str) -> None:
        if endpoint.closed:
            return
        endpoint.closed = True
        what = "device" if endpoint.__class__ is LoadDevice else "client"
        self.counters.errors.add(reason_of(reason), f"{what} {endpoint.uuid}: {reason}")
        if what == "device":
            self.live_devices -= 1
        else:
            self.live_clients -= 1
        if self.start is not None and (not self.live_devices or not self.live_clients) and not self.aborted:
            every = "device" if not self.live_devices else "client"
            self.aborted = f"the TPS dropped every {every} connection; the first: {self._first_error()}"

    # -- drivers -------------------------------------------------------------------------------

    async def _open_windows(self) -> None:
        """Closed loop: each client puts ``window`` messages in flight; each delivery
        (on_message) sends the next."""
        send, window = self._send, self.window
        for client in self.sending_clients:
            client.last_progress = monotonic()
            for _ in range(window):
                send(client, monotonic())
        await Sleep(float("inf"))

    async def _pace(self) -> None:
        """Open loop: message i is due at start + i/rate, from client i mod M, for i
        below rate x duration."""
        rate, start = self.config.rate, self.start
        assert rate is not None and start is not None       # an open loop, started
        while self._paced < self._pace_total:
            self._send_due(monotonic())
            wait = start + self._paced / rate - monotonic()
            await Sleep(wait if wait > 0.001 else 0.001)
        await Sleep(float("inf"))

    def _send_due(self, now: float) -> None:
        """Send every paced message due by ``now`` that has not gone yet."""
        send, rate, start = self._send, self.config.rate, self.start
        assert rate is not None and start is not None       # an open loop, started
        clients = self.sending_clients
        count = len(clients)
        i = self._paced
        due_now = min(int((now - start) * rate) + 1, self._pace_total)
        while i < due_now:
            send(clients[i % count], start + i / rate)
            i += 1
        self._paced = i

    async def _heartbeats(self) -> None:
        """Re-register every device before its KeepAliveIntervel ends, spread evenly."""
        devices = [d for d in self.devices if not d.closed]
        period = min(d.heartbeat_request[0] for d in devices) * 0.8
        started = monotonic()
        i = 0
        while True:
            due_now = int((monotonic() - started) / period * len(devices)) + 1
            while i < due_now:
                device = devices[i % len(devices)]
                if not device.closed:
                    self._write(device, device.heartbeat_request[1])
                    self.counters.heartbeats += 1
                i += 1
            await Sleep(max(0.001, started + i * period / len(devices) - monotonic()))

    # -- the clock ---------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        start = self.start
        assert start is not None
        second = 1
        while True:
            await Sleep(max(0.0, start + second - monotonic()))
            self._tick(second, 1.0)
            second += 1

    def _tick(self, second: int, span: float) -> None:
        """Close one second of the time series (``span`` long: the last may be shorter)."""
        counters = self.counters
        for latencies in counters.latency.values():
            latencies.flush()
        relay_second = counters.latency["relay"].second
        delivered = self.streams.delivered if self.streams else 0
        errors = counters.errors.total()
        cpu = _cpu_seconds()
        last_sent, last_delivered, last_errors = self._last
        entry = {"t": second, "span": round(span, 6), "sent": self.sent - last_sent,
                 "delivered": delivered - last_delivered, "errors": errors - last_errors,
                 "cpu": round((cpu - self._cpu_last) / span, 4) if span > 0 else 0.0,
                 "relay": encode(relay_second)}
        self._last = (self.sent, delivered, errors)
        self._cpu_last = cpu
        self.series.append(entry)
        if self.config.rate is None and self.sending:
            self._sweep_stalled()
        if self.on_tick is not None:
            self.on_tick(dict(entry, worker=self.name, total_sent=self.sent, total_delivered=delivered,
                              total_errors=errors))

    def _sweep_stalled(self) -> None:
        """Closed loop: a client whose messages all vanished for ``timeout`` seconds
        counts them as timed out and opens its window again."""
        now = monotonic()
        timeout = self.config.timeout
        for client in self.sending_clients:
            if client.in_flight > 0 and not client.closed and now - client.last_progress > timeout:
                self.counters.errors.add("timeout", f"client {client.uuid}: {client.in_flight} "
                                         f"messages not delivered within {timeout:g} s")
                client.in_flight = 0
                client.last_progress = now
                for _ in range(self.window):
                    self._send(client, monotonic())

    # -- the end ---------------------------------------------------------------------------------

    def _first_error(self) -> str:
        errors = self.counters.errors
        if not errors.examples:
            return "no reason given"
        return next(iter(errors.examples.values()))

    def _close_all(self) -> None:
        for endpoint in self.devices + self.clients:
            if endpoint.sock is None:
                continue
            if not endpoint.closed:
                self.pool.discard(endpoint)
                endpoint.closed = True
            endpoint.close()

    def _result(self, elapsed: float) -> dict[str, Any]:
        counters = self.counters
        for latencies in counters.latency.values():
            if latencies.buffer:
                latencies.flush()
        streams = self.streams
        delivered = streams.delivered if streams else 0
        cpu = (_cpu_seconds() - self._cpu_start) if self._cpu_start is not None else 0.0
        values = {
            "sent": self.sent, "acked": counters.acked, "delivered": delivered,
            "lost": max(0, self.sent - delivered - counters.rejected - (streams.corrupted if streams else 0)),
            "duplicated": streams.duplicated if streams else 0,
            "reordered": streams.reordered if streams else 0,
            "corrupted": streams.corrupted if streams else 0,
            "rejected": counters.rejected, "replies": counters.replies,
            "heartbeats": counters.heartbeats, "devices": counters.devices, "clients": counters.clients,
        }
        return {
            "counters": values,
            "histograms": {phase: encode(l.total) for phase, l in counters.latency.items()},
            "errors": counters.errors.to_dict(),
            "series": self.series,
            "duration": round(elapsed, 6),
            "aborted": self.aborted,
            "interrupted": bool(self.control.stop) and not self.aborted,
            "workers": [{"name": self.name, "cpu_seconds": round(cpu, 4), "wall_seconds": round(elapsed, 6),
                         "devices": counters.devices, "clients": counters.clients,
                         "delivered": delivered}],
        }


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _reason(error: TPSError) -> str:
    return reason_of(str(error), error.timed_out)


def _describe(error: OSError) -> str:
    if isinstance(error, ConnectionResetError):
        return "reset the connection"
    if isinstance(error, (BrokenPipeError, ConnectionAbortedError)):
        return "closed the connection"
    return f"failed: {error}"
