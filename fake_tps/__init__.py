"""The bundled fake TPS server, on the tpsharness kernel: ``from fake_tps import FakeTPS``.

The server module is imported on first use, so ``import fake_tps`` stays cheap.
"""

__all__ = ["FakeTPS", "FAULTS", "Stats"]


def __getattr__(name):
    if name in __all__:
        from . import server
        return getattr(server, name)
    raise AttributeError(f"module 'fake_tps' has no attribute {name!r}")
