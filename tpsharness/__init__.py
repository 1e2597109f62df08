"""tpsharness: a test harness for TPS (TransProxy Server) relays.

Simulated IP cameras (devices) and apps (clients) run as coroutines on our own
cooperative kernel (``tpsharness.kernel``) and talk the TPS protocol
(``tpsharness.protocol``) to a real server or the bundled fake (``fake_tps``).

The names below are imported when first used (a module ``__getattr__``), so that
``import tpsharness.kernel`` loads neither the protocol nor h11.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_names
from .version import __version__

if TYPE_CHECKING:       # what mypy and mkdocstrings see; at run time, __getattr__ below
    from .checker import CheckResult, check
    from .client import Client
    from .device import Device
    from .errors import TPSHarnessError
    from .harness import Harness
    from .load import LoadResult, load

__all__ = ["__version__", "check", "CheckResult", "Harness", "Device", "Client", "TPSHarnessError",
           "load", "LoadResult"]

# name -> the module that defines it (relative to this package)
_HOMES = {"check": ".checker", "CheckResult": ".checker", "Harness": ".harness", "Device": ".device",
          "Client": ".client", "TPSHarnessError": ".errors", "load": ".load", "LoadResult": ".load"}


__getattr__ = lazy_names(__name__, _HOMES)
"""The names of ``__all__`` (the check, the blocking harness, the actors, the root
error, the load run), imported with their dependencies only when asked for."""


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
