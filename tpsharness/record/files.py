"""Writing scenario files so that none is lost or half-written, and nothing is
overwritten by surprise: each file is written to a temporary file in its directory,
then linked into place under a name nothing holds (``test_x.tps.json``, then
``test_x_2.tps.json``...), or with ``force`` renamed over the old one. A symlink in
the way is a name that is taken: it is never written through.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

SUFFIX = ".tps.json"
MAX_NAMES = 1000        # numbered names tried before giving up


def slug(text: str, *, limit: int = 80, default: str = "session") -> str:
    """``text`` as a safe part of a file name: letters, digits, ``_`` and ``-``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text)[:limit] or default


def unique_stems(stems: list[str]) -> list[str]:
    """``stems`` with each repeat numbered (``s_cam``, ``s_cam_2``), never onto a stem
    the list holds: the files of one run never take each other's names."""
    taken = set(stems)
    used: set[str] = set()
    out = []
    for stem in stems:
        name, number = stem, 1
        while name in used or (name != stem and name in taken):
            number += 1
            name = f"{stem}_{number}"
        used.add(name)
        out.append(name)
    return out


def scenario_text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def write_atomically(path: Path, text: str, *, force: bool) -> Path:
    """Write ``text`` at ``path``; FileExistsError if something is there and not ``force``."""
    temporary = str(path.parent / f".tpsharness-{secrets.token_hex(8)}.part")
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)    # umask applies, as with open()
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if force:
            os.replace(temporary, path)
        else:
            os.link(temporary, path, follow_symlinks=False)    # fails if the name is taken
            os.unlink(temporary)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise
    return path


def write_new(directory: Path, stem: str, text: str, *, force: bool) -> Path:
    """Write ``text`` as ``directory/test_<stem>.tps.json`` (with ``force`` over what is
    there), or under the first numbered name that is free; the path written."""
    directory.mkdir(parents=True, exist_ok=True)
    for number in range(1, MAX_NAMES + 1):
        name = f"test_{stem}{'' if number == 1 else f'_{number}'}{SUFFIX}"
        try:
            return write_atomically(directory / name, text, force=force)
        except FileExistsError:
            continue
    raise FileExistsError(f"{directory}: test_{stem}{SUFFIX} and {MAX_NAMES - 1} numbered names are taken")
