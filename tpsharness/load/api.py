"""``tpsharness.load(...)``: a load run from Python, returning a LoadResult."""

from .config import LoadConfig
from .fake import FakeProcess
from .local import run_local
from .thresholds import apply, parse_all


def load(host=None, port=None, *, devices=100, clients=10, duration=10.0, rate=None, window=None,
         payload_size=64, ramp=0.0, heartbeat=False, reply_every=0, workers=1, tx=(),
         thresholds=(), timeout=5.0, drain=None, auth_code="0000", on_tick=None, fake_args=(),
         on_fake_started=None):
    """Drive ``devices`` held devices and ``clients`` senders against the TPS at
    (host, port) for ``duration`` seconds, open loop at ``rate`` messages/s in total or
    closed loop with ``window`` messages in flight per client.

    Without ``host``, the bundled fake TPS runs in a process of its own (``fake_args``
    are its options; ``on_fake_started(address)`` is called once it listens). ``workers`` > 1 or ``tx`` specs run workers through execnet.
    ``thresholds`` ('relay.p99<50ms', ...) are checked into ``result.thresholds``;
    ``result.exit_code`` is 0, 1 (a threshold failed) or 2 (the run could not be
    carried out). LoadUsageError for impossible parameters.
    """
    if host is not None and port is None:
        port = 6604
    checks = parse_all(thresholds)
    config = LoadConfig(None, devices=devices, clients=clients, duration=duration, rate=rate,
                        window=window, payload_size=payload_size, ramp=ramp, heartbeat=heartbeat,
                        reply_every=reply_every, timeout=timeout, drain=drain, auth_code=auth_code)
    specs = list(tx) + ["popen"] * (workers if workers > 1 and not tx else 0)
    if specs:
        from .distributed import check_specs
        check_specs(specs, config)
    if host is None:
        with FakeProcess(*fake_args) as address:
            config.address = address
            if on_fake_started is not None:
                on_fake_started(address)
            result = _run(config, specs, on_tick, f"{address[0]}:{address[1]} (bundled fake TPS)")
    else:
        config.address = (host, int(port))
        result = _run(config, specs, on_tick, f"{host}:{port}")
    return apply(result, checks)


def _run(config, specs, on_tick, target):
    if specs:
        from .distributed import run_distributed
        return run_distributed(config, specs, on_tick=on_tick, target=target)
    return run_local(config, on_tick=on_tick, target=target)
