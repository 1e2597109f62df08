"""The worker side of a distributed load run: execnet runs this module's source in
a worker process (``remote_exec``), which needs tpsharness importable.

Protocol on the channel: in, the setup {"config", "name", "path"}, then ("start",
seconds from now: a delay, since the hosts' clocks may differ) or ("stop",); out, ("ready", info), ("tick", snapshot) each
second, and at the end ("result", part) or ("error", text).
"""

from __future__ import annotations

import signal
import sys
from time import monotonic
from typing import TYPE_CHECKING, Any

MAX_START_DELAY = 10.0      # seconds a start may be asked to wait (the coordinator asks 0.3)

if TYPE_CHECKING:
    import execnet

    channel: execnet.Channel      # execnet defines it in the module it runs (remote_exec)


def serve(channel: execnet.Channel) -> None:
    setup = channel.receive()
    if setup.get("path"):
        sys.path.insert(0, setup["path"])
    try:
        from tpsharness.load.config import LoadConfig
        from tpsharness.load.engine import Control
        from tpsharness.load.local import run_worker
    except ImportError as error:
        channel.send(("error", f"cannot import tpsharness.load on this worker ({error}): install "
                               "tpsharness[load] in the Python the spec names"))
        return
    values = dict(setup["config"])
    values["address"] = tuple(values["address"])
    control = Control(wait_for_start=True, ready=lambda info: channel.send(("ready", info)))

    def steer(item: tuple[Any, ...]) -> None:            # runs in execnet's receiving thread
        if item[0] == "start":
            control.start_at = monotonic() + min(max(0.0, float(item[1])), MAX_START_DELAY)
        elif item[0] == "stop":
            control.stop = "interrupted"

    channel.setcallback(steer)
    try:
        part = run_worker(LoadConfig(**values), name=setup["name"], control=control,
                          on_tick=lambda snapshot: channel.send(("tick", snapshot)))
    except Exception as error:          # reported to the coordinator, which says so
        channel.send(("error", f"{type(error).__name__}: {error}"))
        return
    channel.send(("result", part))


if __name__ == "__channelexec__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # the coordinator handles Ctrl-C
    serve(channel)
