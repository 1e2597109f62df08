"""Writing a file the user keeps (a recorded scenario, a fuzz finding) so that it is
never lost half-written and nothing is overwritten by surprise.

The text goes to a temporary file in the target directory, opened without following
a symlink and flushed to disk; then it is linked under the first name nothing holds
(``name``, then ``name`` numbered before its first dot: ``test_x.tps.json``,
``test_x_2.tps.json``...), or with ``force`` renamed over ``name``. A link never
replaces anything, a symlink included, and a rename replaces the directory entry: a
symlink in the way is never written through, so nothing outside the directory is
touched. Every name is taken relative to the directory's open descriptor.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

MAX_NAMES = 1000            # numbered names tried before giving up


def write_file(directory: str | os.PathLike[str], name: str, text: str, *, force: bool = False,
               numbered: bool = True) -> Path:
    """Write ``text`` as ``directory/name``, whole or not at all; the path written.

    Without ``force``, a name that is taken is passed over for the next numbered one
    (``numbered``), or is FileExistsError (not ``numbered``); with ``force`` the entry
    ``name`` is replaced. ``directory`` is made if it is missing."""
    folder_path = Path(directory)
    folder_path.mkdir(parents=True, exist_ok=True)
    folder = os.open(folder_path, os.O_RDONLY | os.O_DIRECTORY)
    temporary = f".{name}.{os.urandom(4).hex()}.tmp"      # os.urandom: secrets costs 4 MB of imports
    try:
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666,
                         dir_fd=folder)     # the umask applies, as with open()
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as output:
                output.write(text)
                output.flush()
                os.fsync(output.fileno())
            if force:
                os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
                return folder_path / name
            for candidate in _names(name) if numbered else (name,):
                try:
                    os.link(temporary, candidate, src_dir_fd=folder, dst_dir_fd=folder,
                            follow_symlinks=False)
                    return folder_path / candidate
                except FileExistsError:
                    continue
            if not numbered:
                raise FileExistsError(f"{folder_path / name} exists")
            raise FileExistsError(f"{folder_path / name} and {MAX_NAMES - 1} other names like it exist")
        finally:
            try:
                os.unlink(temporary, dir_fd=folder)
            except FileNotFoundError:       # renamed into place
                pass
    finally:
        os.close(folder)


def write_atomically(path: str | os.PathLike[str], text: str, *, force: bool) -> Path:
    """Write ``text`` at ``path`` itself, whole or not at all; FileExistsError if
    something is there and not ``force`` (``write_file`` without numbered names)."""
    path = Path(path)
    return write_file(path.parent, path.name, text, force=force, numbered=False)


def _names(name: str) -> Iterator[str]:
    """``name``, then ``name`` numbered before its first dot: test_x.tps.json, test_x_2.tps.json..."""
    stem, dot, suffix = name.partition(".")
    yield name
    for number in range(2, MAX_NAMES + 1):
        yield f"{stem}_{number}{dot}{suffix}"
