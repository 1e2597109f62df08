"""Read a file a user named (a scenario, a configuration) without hanging or filling memory.

``open()`` of a FIFO waits for a writer for ever, and of a character device reads as
long as it gives: the file is opened without blocking and must be a regular file,
and no more than ``limit`` + 1 bytes are read, so that the caller can tell "too large".
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["read_bounded"]

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_bounded(path: str | os.PathLike[str], limit: int) -> bytes:
    """At most ``limit`` + 1 bytes of the regular file at ``path``; OSError otherwise
    (its strerror says why, as "not a regular file (a FIFO)")."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "of another kind")
            raise OSError(errno.EINVAL, f"not a regular file ({kind})", str(path))
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(descriptor, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(descriptor)
