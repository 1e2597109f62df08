"""Only system calls touch the kernel (docs: DESIGN, issue 10): code outside the kernel
reaches it through ``tpsharness.syscalls``, ``kernel.run``, ``Scheduler``'s public
methods and ``ReadGroup``, never through ``current_scheduler()`` or a private name."""

import ast
from pathlib import Path

import tpsharness.kernel as kernel

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tpsharness", "fake_tps")
# syscalls.py is the kernel's own interface: its immediate operations (spawn, kill,
# forget_fd) are where synchronous code in a task meets the running scheduler, which
# run_context.py holds.
KERNEL_FILES = {Path("tpsharness/kernel.py"), Path("tpsharness/syscalls.py"), Path("tpsharness/run_context.py")}


def _private_names_of_the_kernel() -> set[str]:
    """The private names of Scheduler, ReadGroup and the kernel module."""
    names = set(vars(kernel.Scheduler())) | set(dir(kernel.Scheduler)) | set(vars(kernel))
    names |= set(kernel.ReadGroup.__slots__)
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def _sources() -> list[tuple[Path, ast.Module]]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found.append((path.relative_to(ROOT), ast.parse(path.read_text(), str(path))))
    return found


def _reaches_past_the_kernel(tree: ast.AST, private: set[str]) -> list[str]:
    """Where ``tree`` names current_scheduler, imports a private kernel name, or reads a
    private kernel attribute of anything but ``self``."""
    offences = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "current_scheduler":
            offences.append(f"{node.lineno}: current_scheduler")
        elif isinstance(node, ast.Attribute):
            if node.attr == "current_scheduler":
                offences.append(f"{node.lineno}: .current_scheduler")
            elif node.attr in private and not (isinstance(node.value, ast.Name)
                                               and node.value.id in ("self", "cls")):
                offences.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").endswith("kernel"):
            offences.extend(f"{node.lineno}: import {alias.name}" for alias in node.names
                            if alias.name == "current_scheduler" or alias.name.startswith("_"))
    return offences


def test_nothing_outside_the_kernel_calls_current_scheduler_or_its_private_names() -> None:
    private = _private_names_of_the_kernel()
    assert {"_tasks", "_watch", "_ready"} <= private       # the scan looks for real names
    offences = [f"{path}:{where}" for path, tree in _sources() if path not in KERNEL_FILES
                for where in _reaches_past_the_kernel(tree, private)]
    assert offences == []


def test_readgroup_uses_only_public_scheduler_methods() -> None:
    """ReadGroup is the kernel's public face for a server's connections: it goes through
    the Scheduler's documented methods, as any other caller would."""
    tree = ast.parse((ROOT / "tpsharness/kernel.py").read_text())
    group = next(node for node in tree.body
                 if isinstance(node, ast.ClassDef) and node.name == "ReadGroup")
    private_calls = [f"{node.lineno}: .{node.attr}" for node in ast.walk(group)
                     if isinstance(node, ast.Attribute) and node.attr.startswith("_")
                     and not node.attr.startswith("__")
                     and not (isinstance(node.value, ast.Name) and node.value.id == "self")]
    assert private_calls == []


def test_the_scan_finds_a_reach_past_the_kernel() -> None:
    private = _private_names_of_the_kernel()
    source = ("from tpsharness.kernel import current_scheduler\n"
              "current_scheduler().new(coro)\n"
              "scheduler._tasks.clear()\n"
              "self._tasks = {}\n")
    offences = sorted(_reaches_past_the_kernel(ast.parse(source), private))
    assert offences == ["1: import current_scheduler", "2: current_scheduler", "3: ._tasks"]
