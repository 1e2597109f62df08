"""The names and text of the scenario files record writes (``tpsharness.files``
writes them: whole or not at all, never over a file by surprise).
"""

from __future__ import annotations

import json
import re
from typing import Any

SUFFIX = ".tps.json"


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


def scenario_name(stem: str) -> str:
    """The file name of a recorded scenario: ``test_<stem>.tps.json`` (pytest collects it)."""
    return f"test_{stem}{SUFFIX}"


def scenario_text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"
