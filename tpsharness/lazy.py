"""Names a package exports but imports only when first used (a module ``__getattr__``),
so that importing the package costs nothing its caller does not need: the command line
can then say in one line that an optional extra is missing."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_names(package: str, homes: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: each name of ``homes`` imported from
    its module (relative to the package) when asked for, then kept in the package."""
    def __getattr__(name: str) -> object:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home, package), name)
        setattr(importlib.import_module(package), name, value)
        return value
    return __getattr__
