"""Dependencies point one way: no module of tpsharness or fake_tps imports a private
name of another, and no two modules import each other, directly or round a loop.

Every import counts: at the top, inside a function (a lazy import defers the cost,
not the dependency) and under ``TYPE_CHECKING`` (a reader follows a type-only
import as any other; the cycles this test was written for, fuzz/compare.py and
fuzz/executor.py, and kernel.py and syscalls.py, were partly type-only)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tpsharness", "fake_tps")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, tuple[Path, ast.Module]]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = (path, ast.parse(path.read_text(), str(path)))
    return found


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute name of what ``node`` imports from, seen from ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, tree: ast.Module, known: set[str], is_package: bool = False
            ) -> list[tuple[int, str, str | None]]:
    """(line, imported module, imported name or None) for every import in ``tree``
    of a module in ``known`` (a name that is a module counts as that module)."""
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names if alias.name in known]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, is_package, node)
            for alias in node.names:
                if f"{source}.{alias.name}" in known:
                    found.append((node.lineno, f"{source}.{alias.name}", None))
                elif source in known:
                    found.append((node.lineno, source, alias.name))
    return found


def private_imports(sources: dict[str, tuple[Path, ast.Module]]) -> list[str]:
    known = set(sources)
    offences = []
    for module, (path, tree) in sources.items():
        for line, target, name in imports(module, tree, known, path.name == "__init__.py"):
            private_module = any(part.startswith("_") and not part.startswith("__")
                                 for part in target.split("."))
            private_name = name is not None and name.startswith("_") and not name.startswith("__")
            if target != module and (private_module or private_name):
                offences.append(f"{module}:{line} imports {target}{'.' + name if name else ''}")
    return offences


def cycles(sources: dict[str, tuple[Path, ast.Module]]) -> list[list[str]]:
    """Every cycle of the import graph, each once, as the modules round it."""
    known = set(sources)
    graph = {module: sorted({target for _, target, _ in imports(module, tree, known, path.name == "__init__.py")
                             if target != module and not module.startswith(target + ".")})
             for module, (path, tree) in sources.items()}
    found, seen = [], set()
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    loop = frozenset(trail)
                    if loop not in seen:
                        seen.add(loop)
                        found.append(trail + [start])
                elif nxt not in trail and nxt > start:
                    stack.append((nxt, trail + [nxt]))
    return found


def test_no_module_imports_a_private_name_of_another() -> None:
    assert private_imports(_sources()) == []


def test_no_modules_import_each_other_directly_or_round_a_loop() -> None:
    assert cycles(_sources()) == []


def test_the_scan_finds_a_planted_cycle_and_a_planted_private_import() -> None:
    planted = {
        "pkg.a": "from . import b\n",
        "pkg.b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import Thing\n",
        "pkg.c": "def later():\n    from pkg.a import _helper\n",
        "pkg.d": "import pkg.a\n",
    }
    sources = {name: (Path(name.replace(".", "/") + ".py"), ast.parse(text)) for name, text in planted.items()}
    assert cycles(sources) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert private_imports(sources) == ["pkg.c:2 imports pkg.a._helper"]
