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
        channels = []
        for index, spec in enumerate(specs):
            try:
                gateway = group.makegateway(spec)
            except Exception as error:
                raise RuntimeError(f"cannot start worker {spec!r}: {error}") from None
            channel = gateway.remote_exec(worker_module)
            share = config.share(index, len(specs))
            local = execnet.XSpec(spec).popen
            channel.send({"config": share.to_dict(), "name": f"{index}:{spec.split('//')[0]}",
                          "path": root if local else None})
            channels.append(channel)
        parts = _coordinate(config, channels, stop, on_tick)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        group.terminate(timeout=5)
    return LoadResult(parts, config.to_dict(), target)


def _coordinate(config: LoadConfig, channels: list[execnet.Channel], stop: threading.Event,
                on_tick: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    inbox = execnet_queue(channels)
    count = len(channels)
    deadline = time.monotonic() + config.ramp + config.duration + config.drain_time + 4 * config.timeout + 120 + GRACE
    ready = 0
    parts: dict[execnet.Channel, dict[str, Any]] = {}
    ticks: dict[int, list[dict[str, Any]]] = {}
    stopped = False
    while len(parts) < count:
        if stop.is_set() and not stopped:
            stopped = True
            for channel in channels:
                _send(channel, ("stop",))
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not finish in time")
        try:
            channel, item = inbox.get(timeout=0.1)
        except queue.Empty:
            continue
        if item is _CLOSED or not isinstance(item, tuple):
            if channel not in parts:
                raise RuntimeError(f"a worker ended without a result: {_spec(channel)}")
            continue
        kind = item[0]
        if kind == "error":
            for other in channels:
                _send(other, ("stop",))
            raise RuntimeError(f"worker {_spec(channel)}: {item[1]}")
        if kind == "ready":
            ready += 1
            if ready == count:
                start_at = time.time() + START_DELAY
                for other in channels:
                    _send(other, ("start", start_at))
        elif kind == "tick":
            snapshot = item[1]
            ticks.setdefault(snapshot["t"], []).append(snapshot)
            if len(ticks[snapshot["t"]]) == count - len(parts):
                merged = _merge_ticks(ticks.pop(snapshot["t"]))
                if on_tick is not None:
                    on_tick(merged)
        elif kind == "result":
            parts[channel] = item[1]
    return [parts[channel] for channel in channels]


_CLOSED = object()


def execnet_queue(channels: list[execnet.Channel]) -> queue.Queue[tuple[execnet.Channel, object]]:
    """One queue of (channel, item) from every channel; _CLOSED when one ends."""
    inbox: queue.Queue[tuple[execnet.Channel, object]] = queue.Queue()
    for channel in channels:
        def put(item: object, channel: execnet.Channel = channel) -> None:
            inbox.put((channel, item))
        channel.setcallback(put, endmarker=_CLOSED)
    return inbox


def _spec(channel: execnet.Channel) -> object:
    """The spec its worker was started from (execnet's makegateway sets it on the gateway)."""
    return getattr(channel.gateway, "spec", "?")


def _send(channel: execnet.Channel, item: tuple[object, ...]) -> None:
    try:
        channel.send(item)
    except Exception:           # a worker already gone (execnet raises its own types): nothing to steer
        pass


def _merge_ticks(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    merged = dict(snapshots[0])
    for name in ("sent", "delivered", "errors", "total_sent", "total_delivered", "total_errors"):
        merged[name] = sum(s[name] for s in snapshots)
    merged["cpu"] = max(s["cpu"] for s in snapshots)
    merged["relay"] = encode(merge(s["relay"] for s in snapshots))
    merged["worker"] = "all"
    return merged
