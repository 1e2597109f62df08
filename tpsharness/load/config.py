"""What a load run is asked to do, checked before anything connects."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..deadline import MAX_TIMEOUT
from ..defaults import AUTH_CODE, TIMEOUT
from ..errors import LoadUsageError
from .payload import HEADER_SIZE

__all__ = ["LoadConfig", "LoadUsageError"]

MAX_CLIENTS_PER_DEVICE = 1000       # more is not a load test but a typo
MAX_DURATION = 86_400.0             # a day: the per-second series stays a few tens of MB
MAX_RAMP = MAX_TIMEOUT
MAX_RATE = 10_000_000.0             # messages/s in total: no generator offers more
MAX_IN_FLIGHT = 1_000_000           # window x clients: messages in flight at once
MAX_CONNECTIONS = 1_000_000         # devices + clients of one run


@dataclass
class LoadConfig:
    """A load run: ``devices`` held devices, ``clients`` senders spread evenly over them.

    ``rate`` (messages/s in total, open loop) or ``window`` (messages in flight per
    client, closed loop); ``duration`` seconds of traffic after every device registered
    (over ``ramp`` seconds). ``reply_every``: every n-th message asks its device to
    answer (0: none). ``drain``: how long the end waits for messages still in flight
    (by default the timeout; it ends as soon as every message arrived).
    """

    address: tuple[str, int] | None = None
    devices: int = 100
    clients: int = 10
    duration: float = 10.0
    rate: float | None = None
    window: int | None = None     # 1 when neither rate nor window is given
    payload_size: int = 64
    ramp: float = 0.0
    heartbeat: bool = False
    reply_every: int = 0
    timeout: float = TIMEOUT
    drain: float | None = None             # default: the timeout (a drain ends once all arrived)
    auth_code: str = AUTH_CODE
    prefix: str | None = None              # serials' prefix; unique per run by default
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.address is not None:
            self.address = (str(self.address[0]), int(self.address[1]))
        if self.drain is None:
            self.drain = self.timeout
        self.validate()

    @property
    def drain_time(self) -> float:
        """How long the end waits for messages in flight: ``drain``, else the timeout."""
        return self.timeout if self.drain is None else self.drain

    @property
    def mode(self) -> str:
        return "open" if self.rate is not None else "closed"

    def validate(self) -> None:
        def need(condition: bool, message: str) -> None:
            if not condition:
                raise LoadUsageError(message)

        def seconds(name: str, value: float, low: float, high: float, above: bool = False) -> None:
            need(isinstance(value, (int, float)) and math.isfinite(value),
                 f"{name} must be a finite number of seconds, not {value!r}")
            if above:
                need(value > low, f"{name} must be above {low:g} s, not {value:g}")
            else:
                need(value >= low, f"{name} must be {low:g} s or more, not {value:g}")
            need(value <= high, f"{name} must be at most {high:g} s, not {value:g}")

        need(isinstance(self.devices, int) and self.devices >= 1, f"--devices must be at least 1, not {self.devices}")
        need(isinstance(self.clients, int) and self.clients >= 1, f"--clients must be at least 1, not {self.clients}")
        need(self.devices + self.clients <= MAX_CONNECTIONS,
             f"{self.devices + self.clients:,} connections is over {MAX_CONNECTIONS:,} for one run")
        need(self.clients <= self.devices * MAX_CLIENTS_PER_DEVICE,
             f"{self.clients} clients for {self.devices} devices is over {MAX_CLIENTS_PER_DEVICE} per device")
        seconds("--duration", self.duration, 0.0, MAX_DURATION, above=True)
        need(self.rate is None or self.window is None, "give --rate or --window, not both")
        if self.rate is None and self.window is None:
            self.window = 1
        if self.rate is not None:
            need(isinstance(self.rate, (int, float)) and math.isfinite(self.rate),
                 f"--rate must be a finite number of messages/s, not {self.rate!r}")
            need(self.rate > 0, f"--rate must be above 0 messages/s, not {self.rate:g}")
            need(self.rate <= MAX_RATE, f"--rate must be at most {MAX_RATE:,.0f} messages/s "
                 f"(more than a generator can offer), not {self.rate:g}")
        else:
            window = self.window
            need(isinstance(window, int) and window >= 1, f"--window must be at least 1, not {window}")
            assert isinstance(window, int)
            need(window * self.clients <= MAX_IN_FLIGHT,
                 f"--window {window} for {self.clients} clients is {window * self.clients:,} "
                 f"messages in flight, over {MAX_IN_FLIGHT:,}")
        need(isinstance(self.payload_size, int) and self.payload_size >= HEADER_SIZE,
             f"--payload-size {self.payload_size} is smaller than the {HEADER_SIZE}-byte header "
             "(sequence number, sender, send time, checksum)")
        need(self.payload_size <= 1024 * 1024, f"--payload-size {self.payload_size} is over 1 MiB")
        seconds("--ramp", self.ramp, 0.0, MAX_RAMP)
        need(isinstance(self.reply_every, int) and self.reply_every >= 0,
             f"--reply-every must be 0 or more, not {self.reply_every}")
        seconds("--timeout", self.timeout, 0.0, MAX_TIMEOUT, above=True)
        seconds("the drain time", self.drain_time, 0.0, MAX_TIMEOUT)

    def share(self, index: int, count: int) -> LoadConfig:
        """The part of this run worker ``index`` of ``count`` carries: its devices,
        clients and rate (the remainders go to the first workers)."""
        devices = self.devices // count + (index < self.devices % count)
        clients = self.clients // count + (index < self.clients % count)
        if devices < 1 or clients < 1:
            raise LoadUsageError(f"{count} workers cannot share {self.devices} devices and "
                                 f"{self.clients} clients: each needs at least one of both")
        values = asdict(self)
        values.update(devices=devices, clients=clients,
                      rate=None if self.rate is None else self.rate * clients / self.clients,
                      prefix=f"{self.prefix}w{index}-" if self.prefix else None)
        return LoadConfig(**values)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["address"] = list(self.address) if self.address else None
        return values
