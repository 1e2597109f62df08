"""Workers on every core and host, through execnet (pytest-xdist's engine).

Each worker (a ``popen`` gateway, or ``ssh=user@host//python=...``) holds its share
of the devices and clients, connects, and reports ready; the coordinator gives every
worker the same start time, merges their per-second snapshots for the progress line
(histograms merged exactly), and their results at the end.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .config import LoadConfig, LoadUsageError
from .histograms import encode, merge
from .result import LoadResult

if TYPE_CHECKING:
    import execnet

START_DELAY = 0.3           # seconds between the last worker ready and the common start
GRACE = 60.0


def check_specs(specs: list[str], config: LoadConfig) -> None:
    """LoadUsageError for a spec execnet cannot read or shares too small to run."""
    import execnet

    for spec in specs:
        try:
            xspec = execnet.XSpec(spec)
        except Exception as error:          # execnet raises plain ValueError/AttributeError
            raise LoadUsageError(f"bad --tx spec {spec!r}: {error}") from None
        if not (xspec.popen or xspec.ssh or xspec.socket or xspec.vagrant_ssh):
            raise LoadUsageError(f"bad --tx spec {spec!r}: use popen or ssh=user@host//python=PATH")
    for index in range(len(specs)):
        config.share(index, len(specs))


def run_distributed(config: LoadConfig, specs: list[str], *,
                    on_tick: Callable[[dict[str, Any]], None] | None = None,
                    target: str | None = None) -> LoadResult:
    import execnet

    from . import worker as worker_module

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    group = execnet.Group()
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        channels, names = [], []
        for index, spec in enumerate(specs):
            name = f"{index}:{spec.split('//')[0]}"
            try:
                gateway = group.makegateway(spec)
            except Exception as error:
                raise RuntimeError(f"cannot start worker {name}: {error}") from None
            channel = gateway.remote_exec(worker_module)
            share = config.share(index, len(specs))
            local = execnet.XSpec(spec).popen
            channel.send({"config": share.to_dict(), "name": name, "path": root if local else None})
            channels.append(channel)
            names.append(name)
        parts, aborted = _coordinate(config, channels, names, stop, on_tick)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        group.terminate(timeout=5)
    result = LoadResult(parts, config.to_dict(), target)
    if aborted:
        result.aborted = aborted
        result.interrupted = False      # the others were stopped because of it, not by Ctrl-C
    return result


class _Worker:
    """What the coordinator knows of one worker: its name, what it said when ready,
    its per-second snapshots (the figures so far, should it die), its result."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready: dict[str, Any] | None = None
        self.ticks: list[dict[str, Any]] = []
        self.part: dict[str, Any] | None = None
        self.gone: str | None = None        # why it ended without a result

    def partial(self) -> dict[str, Any]:
        """A part made of the snapshots a worker sent before it died: its counters and
        relay latencies until its last second (what it had in flight is unknown, so
        nothing is counted lost for it)."""
        last = self.ticks[-1] if self.ticks else {}
        counters = dict(last.get("counters") or {})
        counters["lost"] = 0
        series = [{key: tick[key] for key in ("t", "span", "sent", "delivered", "errors", "cpu", "relay")}
                  for tick in self.ticks]
        seconds = sum(tick["span"] for tick in series)
        ready = self.ready or {}
        return {"counters": counters,
                "histograms": {"relay": encode(merge(tick["relay"] for tick in series))},
                "errors": {"worker lost": {"count": 1, "example": f"worker {self.name}: {self.gone}"}},
                "series": series, "duration": seconds, "aborted": None, "interrupted": False,
                "acks": None, "workers": [{"name": self.name, "cpu_seconds": last.get("cpu_seconds", 0.0),
                                           "wall_seconds": seconds, "devices": ready.get("devices", 0),
                                           "clients": ready.get("clients", 0),
                                           "delivered": counters.get("delivered", 0)}]}


def _coordinate(config: LoadConfig, channels: list[execnet.Channel], names: list[str],
                stop: threading.Event, on_tick: Callable[[dict[str, Any]], None] | None,
                ) -> tuple[list[dict[str, Any]], str | None]:
    """Start the workers together, merge their snapshots, collect their results:
    (parts, why the run could not be carried out). A worker that dies or fails
    mid-run stops the others; its figures so far are kept, and it is named."""
    inbox = execnet_queue(channels)
    workers = {channel: _Worker(name) for channel, name in zip(channels, names)}
    deadline = time.monotonic() + config.ramp + config.duration + config.drain_time + 4 * config.timeout + 120 + GRACE
    started: float | None = None
    ticks: dict[int, list[dict[str, Any]]] = {}
    stopped = False
    aborted: str | None = None

    def stop_all() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            for channel in channels:
                _send(channel, ("stop",))

    while any(w.part is None and w.gone is None for w in workers.values()):
        if stop.is_set():
            stop_all()
        if time.monotonic() > deadline:
            late = [w.name for w in workers.values() if w.part is None and w.gone is None]
            raise RuntimeError(f"the workers did not finish in time: {', '.join(late)}")
        try:
            channel, item = inbox.get(timeout=0.1)
        except queue.Empty:
            continue
        worker = workers[channel]
        if item is _CLOSED or not isinstance(item, tuple) or item[0] == "error":
            if worker.part is not None:
                continue
            what = (item[1] if isinstance(item, tuple) and len(item) > 1
                    else "its process exited, or its connection was lost")
            pid = f" (pid {worker.ready['pid']})" if worker.ready and worker.ready.get("pid") else ""
            when = f"{time.monotonic() - started:.1f} s into the traffic" if started else "before the traffic"
            worker.gone = f"ended without a result {when}: {what}"
            if started is None:
                stop_all()
                raise RuntimeError(f"worker {worker.name}{pid} {worker.gone}")
            aborted = aborted or f"worker {worker.name}{pid} {worker.gone}; the figures are those until then"
            stop_all()
            continue
        kind = item[0]
        if kind == "ready":
            worker.ready = item[1]
            if all(w.ready is not None for w in workers.values()):
                started = time.monotonic() + START_DELAY
                for other in channels:
                    _send(other, start_message(started))
        elif kind == "tick":
            snapshot = item[1]
            worker.ticks.append(snapshot)
            live = sum(w.part is None and w.gone is None for w in workers.values())
            ticks.setdefault(snapshot["t"], []).append(snapshot)
            if len(ticks[snapshot["t"]]) >= live:
                merged = _merge_ticks(ticks.pop(snapshot["t"]))
                if on_tick is not None:
                    on_tick(merged)
        elif kind == "result":
            worker.part = item[1]
    parts = [w.part if w.part is not None else w.partial() for w in workers.values()]
    return parts, aborted


def start_message(started: float) -> tuple[str, float]:
    """("start", seconds from now) for a common start at ``started`` (this host's
    monotonic clock): a delay, never a wall-clock time, so that a worker whose clock
    is off still starts with the others."""
    return ("start", max(0.0, started - time.monotonic()))


_CLOSED = object()


def execnet_queue(channels: list[execnet.Channel]) -> queue.Queue[tuple[execnet.Channel, object]]:
    """One queue of (channel, item) from every channel; _CLOSED when one ends."""
    inbox: queue.Queue[tuple[execnet.Channel, object]] = queue.Queue()
    for channel in channels:
        def put(item: object, channel: execnet.Channel = channel) -> None:
            inbox.put((channel, item))
        channel.setcallback(put, endmarker=_CLOSED)
    return inbox


def _send(channel: execnet.Channel, item: tuple[object, ...]) -> None:
    try:
        channel.send(item)
    except Exception:           # a worker already gone (execnet raises its own types): nothing to steer
        pass


def _merge_ticks(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    merged = dict(snapshots[0])
    for name in ("sent", "delivered", "errors", "total_sent", "total_delivered", "total_errors", "total_wrong"):
        merged[name] = sum(s.get(name, 0) for s in snapshots)
    merged["cpu"] = max(s["cpu"] for s in snapshots)
    merged["relay"] = encode(merge(s["relay"] for s in snapshots))
    merged["worker"] = "all"
    return merged
