"""The bundled fake TPS server, on the tpsharness kernel: ``from fake_tps import FakeTPS``.

The server module is imported on first use, so ``import fake_tps`` stays cheap.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:       # what mypy and the docs see; at run time __getattr__ imports it
    from .server import FAULTS, FakeTPS, Fault, Stats

__all__ = ["FakeTPS", "FAULTS", "Fault", "Stats"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from . import server
        return getattr(server, name)
    raise AttributeError(f"module 'fake_tps' has no attribute {name!r}")
