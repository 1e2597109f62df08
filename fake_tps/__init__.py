"""The bundled fake TPS server, on the tpsharness kernel: ``from fake_tps import FakeTPS``.

Callers import from the package, never from its modules (their layout may change).
The server is imported on first use, so ``import fake_tps`` stays cheap.
"""

from typing import TYPE_CHECKING

from tpsharness.lazy import lazy_names

if TYPE_CHECKING:       # what mypy and the docs see; at run time __getattr__ imports them
    from .events import Event, Stats
    from .faults import FAULTS, Fault
    from .options import OPTIONS, FakeOptions
    from .peer import Peer
    from .server import FakeTPS

_HOMES = {"FakeTPS": ".server", "FakeOptions": ".options", "OPTIONS": ".options", "FAULTS": ".faults",
          "Fault": ".faults", "Stats": ".events", "Event": ".events", "Peer": ".peer"}

__all__ = list(_HOMES)

__getattr__ = lazy_names(__name__, _HOMES)
