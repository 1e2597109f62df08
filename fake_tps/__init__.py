"""The bundled fake TPS server, on the tpsharness kernel: ``from fake_tps import FakeTPS``.

Callers import from the package, never from its modules (their layout may change).
The server is imported on first use, so ``import fake_tps`` stays cheap.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:       # what mypy and the docs see; at run time __getattr__ imports them
    from .events import Event, Stats
    from .faults import FAULTS, Fault
    from .options import OPTIONS, FakeOptions
    from .peer import Peer
    from .server import FakeTPS

_HOMES = {"FakeTPS": "server", "FakeOptions": "options", "OPTIONS": "options", "FAULTS": "faults",
          "Fault": "faults", "Stats": "events", "Event": "events", "Peer": "peer"}

__all__ = list(_HOMES)


def __getattr__(name: str) -> object:
    if name in _HOMES:
        import importlib
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module 'fake_tps' has no attribute {name!r}")
