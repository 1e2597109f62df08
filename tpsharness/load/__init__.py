"""Load mode: thousands of simulated cameras and apps against a TPS, with latency
percentiles (HdrHistogram), loss accounting at the devices, thresholds, and workers
on every core or host (execnet). Needs the ``load`` extra (hdrhistogram, execnet).

Its modules are imported when first used, so that the command line (and ``check``)
does not pay for hdrhistogram unless a load run happens.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..lazy import lazy_names

if TYPE_CHECKING:
    from .config import LoadConfig, LoadUsageError
    from .result import LoadResult

__all__ = ["load", "LoadConfig", "LoadResult", "LoadUsageError"]
_HOMES = {"LoadConfig": ".config", "LoadUsageError": ".config", "LoadResult": ".result"}


_EXTRA = ("hdrh", "execnet")      # the load extra's modules


if TYPE_CHECKING:       # type checkers and IDEs see load's real signature
    from .api import load
else:
    def load(*args, **kwargs):
        try:
            from .api import load as run_load
            return run_load(*args, **kwargs)
        except ModuleNotFoundError as error:
            if (error.name or "").split(".")[0] not in _EXTRA:
                raise
            raise ModuleNotFoundError(f"tpsharness.load needs the 'load' extra: pip install "
                                      f"'tpsharness[load]' ({error})", name=error.name) from None

    load.__doc__ = "See tpsharness.load.api.load: a load run from Python, returning a LoadResult."


__getattr__ = lazy_names(__name__, _HOMES)


class _CallablePackage(ModuleType):
    """``tpsharness.load(...)`` works even when a submodule was imported first (then
    the name ``tpsharness.load`` is this package, not the function)."""

    def __call__(self, *args: Any, **kwargs: Any) -> LoadResult:
        return load(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
