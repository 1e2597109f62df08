"""tpsharness: a test harness for TPS (TransProxy Server) relays.

Simulated IP cameras (devices) and apps (clients) run as coroutines on our own
cooperative kernel (``tpsharness.kernel``) and talk the TPS protocol
(``tpsharness.protocol``) to a real server or the bundled fake (``fake_tps``).
"""

__version__ = "0.1.0"

# Bound after the submodule of the same name is imported, so that
# ``tpsharness.check`` stays the function the README documents.
from .check import CheckResult, check  # noqa: E402

__all__ = ["__version__", "check", "CheckResult", "load", "LoadResult"]


def __getattr__(name):
    """``tpsharness.load`` and ``LoadResult`` import the load package (and its extra)
    only when asked for."""
    if name in ("load", "LoadResult"):
        import importlib
        value = getattr(importlib.import_module(".load", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tpsharness' has no attribute {name!r}")
