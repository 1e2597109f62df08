"""What a load run is asked to do, checked before anything connects."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..defaults import AUTH_CODE, TIMEOUT

from .payload import HEADER_SIZE


from ..errors import LoadUsageError  # noqa: F401  (defined with every error; imported here as before)


MAX_CLIENTS_PER_DEVICE = 1000       # more is not a load test but a typo


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

        need(isinstance(self.devices, int) and self.devices >= 1, f"--devices must be at least 1, not {self.devices}")
        need(isinstance(self.clients, int) and self.clients >= 1, f"--clients must be at least 1, not {self.clients}")
        need(self.clients <= self.devices * MAX_CLIENTS_PER_DEVICE,
             f"{self.clients} clients for {self.devices} devices is over {MAX_CLIENTS_PER_DEVICE} per device")
        need(self.duration > 0, f"--duration must be above 0 s, not {self.duration:g}")
        need(self.rate is None or self.window is None, "give --rate or --window, not both")
        if self.rate is None and self.window is None:
            self.window = 1
        if self.rate is not None:
            need(self.rate > 0, f"--rate must be above 0 messages/s, not {self.rate:g}")
        else:
            need(isinstance(self.window, int) and self.window >= 1, f"--window must be at least 1, not {self.window}")
        need(isinstance(self.payload_size, int) and self.payload_size >= HEADER_SIZE,
             f"--payload-size {self.payload_size} is smaller than the {HEADER_SIZE}-byte header "
             "(sequence number, sender, send time, checksum)")
        need(self.payload_size <= 1024 * 1024, f"--payload-size {self.payload_size} is over 1 MiB")
        need(self.ramp >= 0, f"--ramp must be 0 s or more, not {self.ramp:g}")
        need(self.reply_every >= 0, f"--reply-every must be 0 or more, not {self.reply_every}")
        need(self.timeout > 0, f"the timeout must be above 0 s, not {self.timeout:g}")
        need(self.drain_time >= 0, f"the drain time must be 0 s or more, not {self.drain_time:g}")

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
