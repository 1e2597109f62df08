"""A peer's text, made safe to show: in a message, on a terminal, in a status line.

What a server or a scraper sends (a reason phrase, a host name from a URL) can hold
ESC sequences that drive the terminal it reaches, CR or LF that start a new line of
plugin output, or megabytes. Whatever tpsharness shows of it passes through here:
quoted or escaped, and cut to a bound that says how long the original was.
"""

from __future__ import annotations

__all__ = ["quote", "quote_text", "printable"]


def quote(data: bytes | bytearray | memoryview, limit: int = 80) -> str:
    """The first ``limit`` bytes of ``data`` as a Python literal, for error messages."""
    data = bytes(data)
    if len(data) <= limit:
        return repr(data)
    return f"{data[:limit]!r}... ({len(data)} bytes)"


def quote_text(value: object, limit: int = 80) -> str:
    """``value`` (a peer's field: text, or any JSON value) as a Python literal cut to
    about ``limit`` characters: a reason stays short however long the peer made it."""
    if not isinstance(value, str):
        text = repr(value)
        return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def printable(text: str, limit: int = 80) -> str:
    """``text`` unquoted where it is plain, as a reason phrase is shown: every character
    that is not printable (ESC, CR, LF, NUL, bidirectional controls) escaped as in a
    Python literal, and cut to ``limit`` characters, saying how many there were."""
    cut = text[:limit]
    if not cut.isprintable():
        cut = "".join(char if char.isprintable() else repr(char)[1:-1] for char in cut)
    return cut if len(text) <= limit else f"{cut}... ({len(text)} characters)"
