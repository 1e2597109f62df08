"""A load run in this process: one worker on a fresh scheduler."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from ..kernel import run
from .config import LoadConfig
from .engine import Control, Engine
from .result import LoadResult

RUN_GRACE = 30.0        # past duration + ramp + drain + connect timeouts: a bug, not a slow TPS


def run_worker(config: LoadConfig, *, name: str = "local",
               on_tick: Callable[[dict[str, Any]], None] | None = None,
               control: Control | None = None) -> dict[str, Any]:
    """One worker's result dict (see Engine), bounded by the run's own deadline."""
    engine = Engine(config, name=name, on_tick=on_tick, control=control)
    limit = config.ramp + config.duration + config.drain_time + 4 * config.timeout + RUN_GRACE
    result: dict[str, Any] = run(engine.run(), timeout=limit)
    return result


def run_local(config: LoadConfig, *, on_tick: Callable[[dict[str, Any]], None] | None = None,
              target: str | None = None) -> LoadResult:
    """The whole run in this process; Ctrl-C (SIGINT) ends it with a partial result."""
    control = Control()
    previous = None
    if threading.current_thread() is threading.main_thread():
        def interrupted(signum: int, frame: FrameType | None) -> None:
            control.stop = "interrupted"
        previous = signal.signal(signal.SIGINT, interrupted)
    try:
        part = run_worker(config, on_tick=on_tick, control=control)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return LoadResult([part], config.to_dict(), target)
