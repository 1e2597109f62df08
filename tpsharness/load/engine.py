"""One worker's load run, on the kernel: held devices, senders, the clock.

Every device and client connection is read by ONE EndpointPool task; what happens
to a message is decided in its callback (arrivals.py), without a task switch: a
device accounts a delivery and (closed loop) its sender sends the next message at
once; a client matches acks in order. The open-loop pacer sends each message at its
scheduled time and stamps it with that time, so a stalled server shows as latency
(coordinated omission corrected, as wrk2 does) instead of as fewer samples.
"""

from __future__ import annotations

import logging
import math
import os
import resource
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any

from .. import net
from ..defaults import KEEPALIVE_INTERVAL
from ..errors import LoadUsageError, TPSError
from ..outbox import Outbox
from ..protocol import PrivateDataTemplate, register_request
from ..syscalls import KillTask, NewTask, Sleep, WaitTask
from . import payload as payload_format
from .accounting import Counters, Streams, cause_of
from .arrivals import Evidence, LoadEndpoint, Send, make_on_read
from .config import LoadConfig
from .endpoints import LoadClient, LoadDevice, LoadPool
from .histograms import encode, new_histogram

CONCURRENT_CONNECTS = 256       # devices connecting and registering at once
MAX_BACKLOG = 1 << 20           # bytes queued for one connection before messages are refused
MAX_ACKS_AWAITED = 1 << 20      # send times kept to match acks, all clients together
MIN_ACKS_AWAITED = 64           # ... and at least this many per client
START_TIMEOUT = 120.0           # a worker waits this long for the common start
MAX_BURST = 10_000              # messages one wake of a driver sends before it lets others run
SETTLE = 0.05                   # the end waits this long after the last arrival or ack for more
FD_MARGIN = 64                  # descriptors kept for everything but the connections

OnTick = Callable[[dict[str, Any]], None]
log = logging.getLogger(__name__)


class Control:
    """How the outside steers a run: ``stop`` (a reason) ends it early; with
    ``wait_for_start``, the run calls ``ready(info)`` once connected and waits until
    ``start_at`` (a time.monotonic() of this process) is set."""

    def __init__(self, wait_for_start: bool = False,
                 ready: Callable[[dict[str, Any]], None] | None = None) -> None:
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
        self.pool = LoadPool(on_lost=self._on_close)
        prefix = config.prefix or f"load-{os.urandom(3).hex()}-"
        address = config.address
        if address is None:         # the CLI and load() put the bundled fake's address here
            raise LoadUsageError("a load engine needs the TPS address (config.address)")
        _enough_descriptors(config.devices + config.clients)
        self.devices = [LoadDevice(address, f"{prefix}cam-{i}", i, auth_code=config.auth_code,
                                   timeout=config.timeout) for i in range(config.devices)]
        self.clients = [LoadClient(address, f"{prefix}app-{i}", i, auth_code=config.auth_code,
                                   timeout=config.timeout) for i in range(config.clients)]
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
        self.ack_overflows = 0           # clients whose acks stopped being matched
        self.evidence = Evidence()

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
        streams = self._build_pairs()
        if self.control.wait_for_start:
            await self._wait_for_start()
            if self.aborted or self.control.stop:
                self._close_all()
                return self._result(0.0)
        self.start = monotonic()
        self._cpu_start = self._cpu_last = _cpu_seconds()
        self._send = self._make_send(streams)
        self.pool.on_read = make_on_read(self, streams, self.counters, self.evidence, self.clients,
                                         self._answers, self._send, self._write, self.start,
                                         closed_loop=config.rate is None)
        reader = await NewTask(self._read_all())
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
        await self._drain()
        await KillTask(ticker)
        elapsed = monotonic() - self.start
        self._tick(len(self.series) + 1, elapsed - len(self.series))
        await KillTask(reader)
        self._close_all()
        if self.aborted:
            self.aborted += await self._probe()
        return self._result(elapsed)

    async def _drain(self) -> None:
        """Wait (up to the drain time) until every message arrived or was refused and
        acked, and every answer a device wrote came back; or, once the counts only say
        so with corrupted ones counted in, until nothing more came for SETTLE (a
        corrupted payload may not say which message it was, and a TPS that coalesces
        acks never sends the rest)."""
        drain_end = monotonic() + (self.config.drain_time if not self.aborted else 0.0)
        counters, streams = self.counters, self.streams
        assert streams is not None          # the pairs are built before the traffic

        def progress() -> tuple[int, int, int, int, int]:
            return streams.arrived, streams.corrupted, counters.acked, counters.rejected, counters.replies

        last, settled = progress(), monotonic()
        while monotonic() < drain_end and not self.aborted:
            missing = self.sent - streams.arrived - streams.damaged - counters.rejected
            if (missing <= 0 and counters.acked + counters.rejected >= self.sent
                    and counters.replies >= counters.answers):
                break
            await Sleep(0.01)
            now = progress()
            if now != last:
                last, settled = now, monotonic()
            elif missing - streams.corrupted <= 0 and monotonic() - settled >= SETTLE:
                break

    async def _read_all(self) -> None:
        """The pool's reading; a bug in it ends the run (exit 2), never leaves it
        running uncounted."""
        try:
            await self.pool.run()
        except Exception as error:
            log.exception("the load engine's reader stopped")
            self.aborted = f"internal error: the reader stopped ({type(error).__name__}: {error})"

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

    async def _wait_for_start(self) -> None:
        control = self.control
        if control.ready is not None:
            control.ready({"devices": self.live_devices, "clients": self.live_clients,
                           "pid": os.getpid()})
        give_up = monotonic() + START_TIMEOUT
        while control.start_at is None and not control.stop:
            if monotonic() > give_up:
                self.aborted = f"no common start time within {START_TIMEOUT:g} s"
                return
            await Sleep(0.005)
        if control.start_at is not None:
            delay = control.start_at - monotonic()
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
            counters.errors.add(cause_of(error, device.label), f"device {device.uuid}: {error}")
            counters.unregistered += 1
            return
        counters.latency["register"].buffer.append(int((monotonic() - started) * 1e6))
        device.partial = True           # the register's reading may have left part of a message
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
            self.counters.errors.add(cause_of(error, client.label), f"client {client.uuid}: {error}")
            return
        self.pool.add(client)
        self.live_clients += 1
        self.counters.clients += 1

    def _build_pairs(self) -> Streams:
        """Spread clients evenly over the registered devices: max(N, M) streams."""
        devices = [d for d in self.devices if not d.closed]
        clients = [c for c in self.clients if not c.closed]
        pairs = max(len(devices), len(clients))
        size = self.config.payload_size
        client_of: list[int] = []
        device_of: list[int] = []
        heads: list[bytes] = []
        answers: list[Callable[[bytes], bytes]] = []
        known: dict[bytes, tuple[str, int]] = {}       # every pair's header block, for every device
        for pair in range(pairs):
            client, device = clients[pair % len(clients)], devices[pair % len(devices)]
            client.pairs.append(pair)
            client_of.append(client.index)
            device_of.append(device.index)
            build = PrivateDataTemplate(client.uuid, device.uuid, host=client.host_header,
                                        auth_code=client.auth_code).build
            head = build(bytes(size))[:-size]       # every payload has one size: the header block is fixed
            heads.append(head)
            known[head] = (client.uuid, size)        # what a device frames without parsing
            if self.config.reply_every:
                answers.append(PrivateDataTemplate(device.uuid, client.uuid, host=device.host_header,
                                                   auth_code=device.auth_code).build)
        for device in devices:
            device.relay_heads = known        # one table: a misrouted message is framed as fast
        cap = max(MIN_ACKS_AWAITED, self._acks_in_flight(len(clients)))
        for client in clients:
            client.ack_cap = cap
        streams = self.streams = Streams(client_of, device_of)
        self._heads, self._answers = heads, answers
        self.sending_clients = clients
        return streams

    def _acks_in_flight(self, clients: int) -> int:
        """How many messages one client may fairly have awaiting an ack: past it, its
        acks are not one per message (coalesced or lost), and matching them stops."""
        config = self.config
        if config.rate is None:
            fair = 4 * self.window
        else:
            fair = math.ceil(2 * config.rate / clients * config.timeout)
        return min(fair, MAX_ACKS_AWAITED // clients)

    # -- the hot path ----------------------------------------------------------------------------

    def _make_send(self, streams: Streams) -> Send:
        config = self.config
        make = payload_format.PayloadMaker(config.payload_size).make
        heads = self._heads
        next_seq = streams.next_seq
        reply_every = config.reply_every
        ask = payload_format.ASK_REPLY
        outbox_of = self._outbox
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
            if outbox is None:
                outbox = outbox_of(client)
            elif outbox.queued > MAX_BACKLOG:
                errors.add("generator backlog full", f"client {client.uuid}: over {MAX_BACKLOG} bytes "
                           "queued (the TPS does not read fast enough); message not sent")
                return False
            seq = next_seq[pair]
            next_seq[pair] = seq + 1
            self.sent += 1
            client.in_flight += 1
            due_times = client.due_times
            if len(due_times) < client.ack_cap:
                due_times.append(due)
            elif client.ack_cap:
                self._stop_matching_acks(client)
            outbox.write(heads[pair] + make(client.index, pair, seq, due, flags))
            return True

        return send

    def _stop_matching_acks(self, client: LoadClient) -> None:
        """More of ``client``'s messages await an ack than can be in flight: its acks
        are not one per message, so none of them is matched to a message any more."""
        client.ack_cap = 0
        client.due_times.clear()
        self.ack_overflows += 1

    def _write(self, endpoint: LoadEndpoint, data: bytes) -> None:
        """Send ``data`` in one piece if the socket takes it; the rest waits in its Outbox."""
        (endpoint.outbox or self._outbox(endpoint)).write(data)

    def _outbox(self, endpoint: LoadEndpoint) -> Outbox:
        """``endpoint``'s Outbox, made at its first write (most devices are never written)."""
        sock = endpoint.sock
        assert sock is not None         # a written endpoint is connected
        outbox = endpoint.outbox = Outbox(sock, lambda error: self._write_failed(endpoint, error),
                                          self.config.timeout)
        return outbox

    def _write_failed(self, endpoint: LoadEndpoint, error: OSError) -> None:
        if isinstance(error, TimeoutError):
            self._lose(endpoint, f"TPS {endpoint.label} did not read for {self.config.timeout:g} s",
                       "timeout")
        else:
            self._lose(endpoint, f"TPS {endpoint.label} {_describe(error)}", _cause(error))

    def _lose(self, endpoint: LoadEndpoint, reason: str, cause: str) -> None:
        if endpoint.closed:
            return
        self.pool.discard(endpoint)
        endpoint.close()
        self._on_close(endpoint, cause, reason)

    def _on_close(self, endpoint: LoadEndpoint, cause: str, reason: str) -> None:
        if endpoint.closed:
            return
        endpoint.closed = True
        what = "device" if endpoint.__class__ is LoadDevice else "client"
        self.counters.errors.add(cause, f"{what} {endpoint.uuid}: {reason}")
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
        burst = 0
        for client in self.sending_clients:
            client.last_progress = monotonic()
            for _ in range(window):
                if not self.sending:
                    return
                send(client, monotonic())
                burst += 1
                if burst >= MAX_BURST:
                    burst = 0
                    await Sleep(0)
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
        """Send the paced messages due by ``now`` that have not gone yet, at most
        MAX_BURST at once (a generator that falls behind stays responsive; what it
        never sent is counted as unsent)."""
        send, rate, start = self._send, self.config.rate, self.start
        assert rate is not None and start is not None       # an open loop, started
        clients = self.sending_clients
        count = len(clients)
        i = self._paced
        due_now = min(int((now - start) * rate) + 1, self._pace_total, i + MAX_BURST)
        while i < due_now:
            send(clients[i % count], start + i / rate)
            i += 1
        self._paced = i

    async def _heartbeats(self) -> None:
        """Re-register every device before its KeepAliveIntervel ends, spread evenly."""
        devices = [d for d in self.devices if not d.closed]
        if not devices:
            return
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
            values = self._counter_values()
            wrong = sum(values[kind] for kind in ("misrouted", "misattributed", "corrupted", "duplicated", "reordered"))
            self.on_tick(dict(entry, worker=self.name, total_sent=self.sent, total_delivered=delivered,
                              total_errors=errors, total_wrong=wrong, counters=values,
                              cpu_seconds=round(cpu - (self._cpu_start or cpu), 4)))

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

    def _counter_values(self) -> dict[str, int]:
        counters = self.counters
        streams = self.streams
        arrived = (streams.arrived + streams.damaged) if streams else 0
        return {
            "sent": self.sent, "acked": counters.acked,
            "delivered": streams.delivered if streams else 0,
            "misrouted": streams.misrouted if streams else 0,
            "misattributed": streams.misattributed if streams else 0,
            "lost": max(0, self.sent - arrived - counters.rejected),
            "duplicated": streams.duplicated if streams else 0,
            "reordered": streams.reordered if streams else 0,
            "corrupted": streams.corrupted if streams else 0,
            "rejected": counters.rejected, "replies": counters.replies, "answers": counters.answers,
            "unanswered": max(0, counters.answers - counters.replies),
            "unregistered": counters.unregistered,
            "heartbeats": counters.heartbeats, "devices": counters.devices, "clients": counters.clients,
            "unsent": max(0, self._pace_total - self._paced) if self.start is not None else 0,
        }

    def _acks(self, values: dict[str, int]) -> dict[str, Any]:
        """What the acks say: how many came for how many messages, and whether they
        could be matched to messages one by one (then the ack latency means something)."""
        streams = self.streams
        return {"acked": values["acked"], "expected": values["sent"] - values["rejected"],
                "arrived": streams.arrived if streams else 0, "unmatched_clients": self.ack_overflows}

    def _integrity(self) -> dict[str, list[dict[str, Any]]]:
        """The first few witnesses of each kind of anomaly, with the endpoints' names."""
        streams = self.streams
        if streams is None:
            return {}

        found: dict[str, list[dict[str, Any]]] = {}
        for kind, examples in streams.examples.items():
            found[kind] = [{"sender": self.clients[streams.client_of[pair]].uuid,
                            "to": self.devices[streams.device_of[pair]].uuid, "message": seq,
                            "at": self._name(at), **({"after": after} if after >= 0 else {})}
                           for pair, seq, at, after in examples]
        found["corrupted"] = list(self.evidence.corrupted)
        values_lost = self._counter_values()["lost"]
        found["lost"] = [{"sender": self.clients[streams.client_of[pair]].uuid,
                          "to": self.devices[streams.device_of[pair]].uuid, "message": seq}
                         for pair, seq in streams.never_arrived()] if values_lost else []
        return found

    def _result(self, elapsed: float) -> dict[str, Any]:
        counters = self.counters
        for latencies in counters.latency.values():
            if latencies.buffer:
                latencies.flush()
        values = self._counter_values()
        acks = self._acks(values)
        histograms = {phase: encode(l.total) for phase, l in counters.latency.items()}
        if acks["acked"] != acks["expected"] or acks["unmatched_clients"]:
            histograms["ack"] = encode(new_histogram())     # matched in order, they mean nothing
        cpu = (_cpu_seconds() - self._cpu_start) if self._cpu_start is not None else 0.0
        return {
            "counters": values,
            "histograms": histograms,
            "errors": counters.errors.to_dict(),
            "integrity": self._integrity(),
            "evidence": self.evidence.to_dict(self._name),
            "acks": acks,
            "series": self.series,
            "duration": round(elapsed, 6),
            "aborted": self.aborted,
            "interrupted": bool(self.control.stop) and not self.aborted,
            "workers": [{"name": self.name, "cpu_seconds": round(cpu, 4), "wall_seconds": round(elapsed, 6),
                         "devices": counters.devices, "clients": counters.clients,
                         "delivered": values["delivered"]}],
        }

    def _name(self, code: int) -> str:
        return self.devices[code].uuid if code >= 0 else self.clients[-1 - code].uuid


def _enough_descriptors(connections: int) -> None:
    """Raise the soft open-file limit as far as this run needs (up to the hard one);
    LoadUsageError when even the hard limit is too low."""
    needed = connections + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise LoadUsageError(f"{connections:,} connections need {needed:,} open files; the limit "
                                 f"here is {hard:,} (ulimit -n; docs/load.md, 'More cores, more hosts'), or "
                                 "spread them over workers on several hosts (--tx)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _cause(error: OSError) -> str:
    if isinstance(error, ConnectionResetError):
        return "reset"
    if isinstance(error, (BrokenPipeError, ConnectionAbortedError)):
        return "closed by the TPS"
    return "other"


def _describe(error: OSError) -> str:
    if isinstance(error, ConnectionResetError):
        return "reset the connection"
    if isinstance(error, (BrokenPipeError, ConnectionAbortedError)):
        return "closed the connection"
    return f"failed: {error}"

