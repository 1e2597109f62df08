"""``tpsharness.load(...)``: a load run from Python, returning a LoadResult."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..defaults import AUTH_CODE, PORT, TIMEOUT
from .config import LoadConfig, LoadUsageError
from .fake import FakeProcess, check_fake_args
from .local import run_local
from .result import LoadResult
from .thresholds import apply, parse_all


def load(host: str | None = None, port: int | None = None, *, devices: int = 100, clients: int = 10,
         duration: float = 10.0, rate: float | None = None, window: int | None = None,
         payload_size: int = 64, ramp: float = 0.0, heartbeat: bool = False, reply_every: int = 0,
         workers: int = 1, tx: Iterable[str] = (), thresholds: Iterable[str] = (),
         integrity: bool = True, timeout: float = TIMEOUT, drain: float | None = None, auth_code: str = AUTH_CODE,
         on_tick: Callable[[dict[str, Any]], None] | None = None, fake_args: Sequence[str] = (),
         on_fake_started: Callable[[tuple[str, int]], None] | None = None) -> LoadResult:
    """Drive ``devices`` held devices and ``clients`` senders against the TPS at
    (host, port) for ``duration`` seconds, open loop at ``rate`` messages/s in total or
    closed loop with ``window`` messages in flight per client.

    Without ``host``, the bundled fake TPS runs in a process of its own (``fake_args``
    are its options; ``on_fake_started(address)`` is called once it listens). ``workers`` > 1 or ``tx`` specs run workers through execnet.
    ``thresholds`` ('relay.p99<50ms', ...) are checked into ``result.thresholds``,
    after the integrity defaults (``misrouted==0``, ``lost==0``, ``corrupted==0``,
    ``duplicated==0``, ``reordered==0``, ``rejected==0``; a threshold of the user's on one of those
    counts replaces its default; ``integrity=False`` drops them). ``result.verdict``
    says the run in one line; ``result.exit_code`` is 0, 1 (a threshold failed) or 2
    (the run could not be carried out). LoadUsageError for impossible parameters.
    """
    checks = parse_all(thresholds, integrity=integrity)
    config = LoadConfig(None, devices=devices, clients=clients, duration=duration, rate=rate,
                        window=window, payload_size=payload_size, ramp=ramp, heartbeat=heartbeat,
                        reply_every=reply_every, timeout=timeout, drain=drain, auth_code=auth_code)
    specs = list(tx) + ["popen"] * (workers if workers > 1 and not tx else 0)
    if specs:
        from .distributed import check_specs
        check_specs(specs, config)
    if host is not None and fake_args:
        raise LoadUsageError("--fake-option is for the bundled fake TPS, which runs only without a HOST")
    if host is None:
        check_fake_args(fake_args)
        with FakeProcess(*fake_args) as address:
            config.address = address
            if on_fake_started is not None:
                on_fake_started(address)
            result = _run(config, specs, on_tick, f"{address[0]}:{address[1]} (bundled fake TPS)")
    else:
        port = PORT if port is None else port
        config.address = (host, int(port))
        result = _run(config, specs, on_tick, f"{host}:{port}")
    return apply(result, checks)


def _run(config: LoadConfig, specs: list[str],
         on_tick: Callable[[dict[str, Any]], None] | None, target: str) -> LoadResult:
    if specs:
        from .distributed import run_distributed
        return run_distributed(config, specs, on_tick=on_tick, target=target)
    return run_local(config, on_tick=on_tick, target=target)
