"""A load run in this process: one worker on a fresh scheduler."""

import signal
import threading

from ..kernel import run
from .engine import Control, Engine
from .result import LoadResult

RUN_GRACE = 30.0        # past duration + ramp + drain + connect timeouts: a bug, not a slow TPS


def run_worker(config, *, name="local", on_tick=None, control=None):
    """One worker's result dict (see Engine), bounded by the run's own deadline."""
    engine = Engine(config, name=name, on_tick=on_tick, control=control)
    limit = config.ramp + config.duration + config.drain + 4 * config.timeout + RUN_GRACE
    return run(engine.run(), timeout=limit)


def run_local(config, *, on_tick=None, target=None):
    """The whole run in this process; Ctrl-C (SIGINT) ends it with a partial result."""
    control = Control()
    previous = None
    if threading.current_thread() is threading.main_thread():
        def interrupted(signum, frame):
            control.stop = "interrupted"
        previous = signal.signal(signal.SIGINT, interrupted)
    try:
        part = run_worker(config, on_tick=on_tick, control=control)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return LoadResult([part], config.as_dict(), target)
