"""Crash triage: what a dead server left (its exit status, its last output) as evidence,
and the root cause that bins it.

As AFL and the sanitizers do, a crash is known by its signal and its stack, not by
the step before it. The output's tail is searched, newest first, for what tells
the cause: a sanitizer report (AddressSanitizer, UBSan, LeakSanitizer...) with its
first frames; an uncaught C++ exception (``terminate called after throwing an
instance of ...``); a failed assertion; a glibc heap check; a crash handler's line
(easylogging's ``CRASH HANDLED ... [SIGSEGV]``); a Python traceback; a Go or Rust
panic. The bin (``cause``) is the kind of evidence, the signal or exit status, and
the top frames of the server's own code (the runtime's frames are skipped), or the
recognised line with what varies run to run (addresses, numbers, the fuzzer's
uuids) taken out. With only a status and a last line, the bin also takes the shape
of the crashing step (``shape``), so that two unrelated bugs that print nothing do
not share a bin.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from ..text import printable
from .process import ExitStatus

FRAMES = 3                      # own frames that name a cause
LINES_KEPT = 20                 # lines of the last output a finding carries
LINE_SHOWN = 200                # characters of one line kept

# A sanitizer's report header, e.g. "==17644==ERROR: AddressSanitizer: heap-use-after-free on address".
_SANITIZER = re.compile(r"==\d+==\s*(?:ERROR|WARNING): (\w+Sanitizer): ([\w-]+(?: on unknown address)?)")
_UBSAN = re.compile(r"^(\S+?:\d+(?::\d+)?): runtime error: (.*)$")
# A stack frame, sanitizer style: "    #0 0x44c1de in Peer::handle_transmsg(bufferevent*) /src/device.cpp:86"
_FRAME = re.compile(r"^\s*#(\d+)\s+0x[0-9a-fA-F]+\s+in\s+(.+?)(?:\s+(\S+:\d+)(?::\d+)?|\s+\(([^)]*)\))?\s*$")
_TERMINATE = re.compile(r"terminate called after throwing an instance of '([^']+)'")
_WHAT = re.compile(r"^\s*what\(\):\s*(.*)$")
_ASSERTION = re.compile(r"^(?:\S+: )?(\S+:\d+): (.*?): Assertion `(.*)' failed\.?$")
_GLIBC = re.compile(r"^(?:\*\*\* )?((?:double free|free\(\)|malloc\(\)|realloc\(\)|munmap_chunk\(\)|corrupted|"
                    r"stack smashing detected)[^*]*?)(?: \*\*\*)?(?:: terminated)?$")
_HANDLER = re.compile(r"crashed due to \[(SIG\w+)\]|Caught signal (\d+) \((SIG\w+)\)|received signal (SIG\w+)")
_PYTHON_LAST = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Warning)|AssertionError)(?::\s*(.*))?$")
_PYTHON_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)')
_GO_PANIC = re.compile(r"^panic: (.*)$")
_RUST_PANIC = re.compile(r"^thread '([^']*)' panicked at (.*)$")
_DYING = re.compile(rb"==\d+==\s*ERROR: \w+Sanitizer|\w+Sanitizer:DEADLYSIGNAL|: runtime error: |"
                    rb"terminate called after throwing|Assertion `.*' failed|CRASH HANDLED|crashed due to \[SIG|"
                    rb"^Traceback \(most recent call last\)|^panic: |panicked at |double free|"
                    rb"stack smashing detected", re.M)
# What varies between two runs of one bug: addresses, pids, numbers, the fuzzer's uuids.
_VARYING = [(re.compile(r"fz[0-9a-f]{8}-(?:u\d+|nobody)"), "<uuid>"), (re.compile(r"0x[0-9a-fA-F]+"), "0x?"),
            (re.compile(r"\d+"), "N")]
# A crash with no report is binned on its last line's words (``_gist``).
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`']*'")
_WORD = re.compile(r"(?![A-Za-z]*([A-Za-z])\1\1)[A-Za-z][A-Za-z_]{0,23}")      # no run of three
_PUNCTUATION = "[](){}<>|:;,.!?=-'\"`"
# Runtime frames: below the server's own code, the same for every crash.
_RUNTIME = re.compile(r"(^|[\s/])(libc|libstdc\+\+|libgcc|ld-linux|nptl|sysdeps|csu|assert|stdlib|"
                      r"libsanitizer|compiler-rt|asan_|ubsan_|sanitizer_common)|"
                      r"^(__|_start|abort|raise|gsignal|std::terminate|__cxa_|__gnu_cxx::__verbose|"
                      r"__pthread_kill|pthread_kill|__interceptor_|operator new|operator delete|malloc|free)")
# A sanitizer's shadow memory and its legend: never worth a line of a finding.
_LEGEND = re.compile(r"^(\s*0x[0-9a-f]+:\s|=>0x|Shadow byte|\s*(Addressable|Partially addressable|Heap (left|right) "
                     r"redzone|Freed heap region|Stack (left|mid|right) redzone|Stack after return|Stack use after "
                     r"scope|Global redzone|Global init order|Poisoned by user|Container overflow|Array cookie|"
                     r"Intra object redzone|ASan internal|Left alloca redzone|Right alloca redzone):)")
# Lines that only echo the status or wrap a report: never the distinctive one.
_NOISE = re.compile(r"^(==\d+==\s*ABORTING|SUMMARY: |Aborted|Segmentation fault|Killed|.*core dumped|"
                    r"AddressSanitizer:DEADLYSIGNAL|AddressSanitizer can not provide|Shadow |"
                    r"\s*0x[0-9a-f]+:|\s*(Addressable|Partially|Heap|Freed|Stack|Global|Poisoned|Container|"
                    r"Array|Intra|ASan|Left|Right) |.*Aborting application\.|"
                    r"sh: (line )?\d+: .*(Segmentation|Aborted|Killed))")


@dataclass(frozen=True)
class Evidence:
    """What a crashed server left: how it ended and what its output says."""

    status: str                         # "killed by SIGSEGV", "exited with status 1", "still running"
    kind: str                           # "AddressSanitizer: heap-use-after-free", "uncaught std::length_error"...
    label: str = ""                     # short: "heap-use-after-free/Peer::handle_transmsg"
    line: str = ""                      # the line that tells the cause, as printed (cut)
    frames: tuple[str, ...] = ()        # the server's own top frames: "Peer::handle_transmsg device.cpp:86"
    tail: tuple[str, ...] = field(default=(), compare=False)   # the last lines of output
    cause: str = ""                     # the bin: what stays the same between two runs of one bug

    def describe(self) -> str:
        """One line: the status, the kind, where."""
        if self.frames:
            return f"{self.status}; {self.kind} in {self.frames[0]}"
        if self.line.startswith(self.kind):
            return f"{self.status}; {self.line}"
        return f"{self.status}; {self.kind}" + (f": {self.line}" if self.line else "")

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "kind": self.kind, "line": self.line, "frames": list(self.frames),
                "last_output": list(self.tail), "cause": self.cause}


def triage(status: ExitStatus | None, output: bytes, shape: str = "", printed: bytes | None = None) -> Evidence:
    """The evidence of a crash: ``status`` (None: the server still ran, stopped
    listening), ``output`` its last output, ``shape`` the crashing step's kind and state.
    ``printed`` is what it printed during the crashing program, the end of ``output``:
    only there is the cause looked for (an earlier report, one it outlived, is not this
    crash's); ``output`` gives the tail shown. None: all of ``output``."""
    lines = _lines(output)
    state = "still running, no longer listening" if status is None else str(status)
    signal_name = None if status is None else status.signal_name
    tail = tuple(_cut(line) for line in lines if line.strip() and not _LEGEND.match(line))[-LINES_KEPT:]
    if printed is not None:
        lines = _lines(printed)
    found = _sanitizer(lines) or _terminate(lines) or _assertion(lines) or _python(lines) or \
        _panic(lines) or _handler(lines)
    how = signal_name or ("running" if status is None else f"exit {status.code}")
    if found is None:
        kind = f"{signal_name} with no report" if signal_name else state
        found = _Found(kind, f"{how}/{shape.replace('/', '-')}" if shape else how, _last_distinctive(lines),
                       [], strong=False)
    frames = found.frames[:FRAMES]
    line = _normal(found.line) if found.strong else _gist(found.line)
    parts = [found.kind, how, *map(_function, frames)] if frames else [found.kind, how, line]
    if not found.strong and not frames:
        parts.append(shape)
    label = found.label + (f"/{_function(frames[0]).split('(')[0]}" if frames and found.frame_label else "")
    return Evidence(state, _cut(found.kind), _slug(label), _cut(found.line), tuple(map(_cut, frames)), tail,
                    " | ".join(parts))


def _lines(output: bytes) -> list[str]:
    return [line.rstrip("\r") for line in output.decode("utf-8", "replace").splitlines()]


MALLOC_FILL = re.compile(r"0x(be){4,}", re.IGNORECASE)     # AddressSanitizer's fill of new memory
MALLOC_FILL_HINT = ("0xbebebebe... is AddressSanitizer's fill of new memory: the server read memory it never "
                    "initialised (a real bug; max_malloc_fill_size=0 in ASAN_OPTIONS turns the fill off, to look "
                    "past it)")


def hint(evidence: Evidence) -> str | None:
    """A word on what the evidence shows that its kind does not say, or None."""
    shown = (evidence.line, *evidence.frames, *evidence.tail)
    return MALLOC_FILL_HINT if any(MALLOC_FILL.search(text) for text in shown) else None


def dying(output: bytes) -> bool:
    """Whether ``output`` holds the start of a crash report: a server can take a while
    to die after printing one (a sanitizer symbolizing its frames), and still accept
    connections meanwhile."""
    return _DYING.search(output) is not None


def signature_of(evidence: Evidence) -> str:
    """``crash/<label>@<digest of the cause>``: readable, and stable between runs."""
    digest = hashlib.sha1(evidence.cause.encode()).hexdigest()[:6]
    return f"crash/{evidence.label or 'unknown'}@{digest}"


# -- what each kind of report looks like ------------------------------------------------

@dataclass
class _Found:
    """What one recogniser found: the kind, a short label, the telling line, the own
    frames, and whether the line alone names the cause (``strong``)."""

    kind: str
    label: str
    line: str
    frames: list[str]
    strong: bool = True
    frame_label: bool = True        # the label gets the top frame's function


def _sanitizer(lines: list[str]) -> _Found | None:
    for index in range(len(lines) - 1, -1, -1):
        header = _SANITIZER.search(lines[index])
        ubsan = None if header else _UBSAN.match(lines[index].strip())
        if header is None and ubsan is None:
            continue
        frames = _frames(lines[index + 1:])
        if header is not None:
            kind = f"{header.group(1)}: {header.group(2)}"
            return _Found(kind, header.group(2).split(" on ")[0], lines[index].strip(), frames)
        assert ubsan is not None
        where = ubsan.group(1).rsplit("/", 1)[-1]
        return _Found(f"UndefinedBehaviorSanitizer: {_normal(ubsan.group(2))} at {where}",
                      f"ubsan/{where}", lines[index].strip(), frames, frame_label=False)
    return None


def _frames(lines: list[str]) -> list[str]:
    """The own frames of the first stack in ``lines`` (runtime frames skipped)."""
    frames: list[str] = []
    started = False
    for line in lines:
        match = _FRAME.match(line)
        if match is None:
            if started:
                break
            continue
        started = True
        function, where, module = match.group(2), match.group(3), match.group(4)
        if _RUNTIME.search(function) or (where and _RUNTIME.search(where)):
            continue
        place = where.rsplit("/", 1)[-1] if where else (module or "").rsplit("/", 1)[-1].split("+")[0]
        frames.append(f"{function}  {place}".strip())
        if len(frames) == FRAMES:
            break
    return frames


def _terminate(lines: list[str]) -> _Found | None:
    for index in range(len(lines) - 1, -1, -1):
        match = _TERMINATE.search(lines[index])
        if match is None:
            continue
        what = next((m.group(1) for m in map(_WHAT.match, lines[index + 1:index + 3]) if m), "")
        kind = f"uncaught {match.group(1)}"
        line = f"{kind}: {what}" if what else kind
        return _Found(kind, f"uncaught/{match.group(1)}", line, _frames(lines[index + 1:]), frame_label=False)
    return None


def _assertion(lines: list[str]) -> _Found | None:
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index].strip()
        match = _ASSERTION.match(line)
        if match is not None:
            where = match.group(1).rsplit("/", 1)[-1]
            return _Found("assertion failed", f"assert/{where}", f"{where}: {match.group(2)}: {match.group(3)}",
                          _frames(lines[index + 1:]), frame_label=False)
        glibc = _GLIBC.match(line)
        if glibc is not None:
            return _Found(f"glibc: {glibc.group(1).strip()}", f"glibc/{glibc.group(1).strip()}", line,
                          _frames(lines[index + 1:]))
    return None


def _python(lines: list[str]) -> _Found | None:
    for index in range(len(lines) - 1, -1, -1):
        if not lines[index].startswith("Traceback (most recent call last)"):
            continue
        frames = []
        last = ""
        for line in lines[index + 1:]:
            frame = _PYTHON_FRAME.match(line)
            if frame is not None:
                frames.append(f"{frame.group(3)}  {frame.group(1).rsplit('/', 1)[-1]}:{frame.group(2)}")
            elif _PYTHON_LAST.match(line):
                last = line
                break
        exception = _PYTHON_LAST.match(last)
        name = exception.group(1) if exception else "traceback"
        return _Found(f"Python {name}", f"python/{name}", last, list(reversed(frames))[:FRAMES])
    return None


def _panic(lines: list[str]) -> _Found | None:
    for index in range(len(lines) - 1, -1, -1):
        if _GO_PANIC.match(lines[index]):
            return _Found("Go panic", "go-panic", lines[index], [])
        if _RUST_PANIC.match(lines[index]):
            return _Found("Rust panic", "rust-panic", lines[index], [])
    return None


def _handler(lines: list[str]) -> _Found | None:
    """A crash handler's line (the server's own SIGSEGV handler): the signal it caught,
    which the exit status hides (such a handler often ends in abort())."""
    for index in range(len(lines) - 1, -1, -1):
        match = _HANDLER.search(lines[index])
        if match is not None:
            caught = next(group for group in (match.group(1), match.group(3), match.group(4)) if group)
            return _Found(f"{caught} (caught by the server's own handler)", f"{caught}-handled",
                          lines[index].strip(), _frames(lines[index + 1:]), strong=False)
    return None


def _last_distinctive(lines: list[str]) -> str:
    for line in reversed(lines):
        if line.strip() and not _NOISE.match(line.strip()):
            return line.strip()
    return ""


def _normal(line: str) -> str:
    """``line`` without what varies between two runs of one bug."""
    for pattern, replacement in _VARYING:
        line = pattern.sub(replacement, line)
    return line


def _gist(line: str) -> str:
    """``line`` reduced to its plain words, for a crash with no report: a server that
    echoes what it was sent in its log must not split one crash into a bin per input.
    Quoted text, and every token that is not a word (a value, a path, a number, a
    uuid, a long run of one letter), become one ``?``."""
    words: list[str] = []
    for token in _QUOTED.sub(" ? ", line).split():
        core = token.strip(_PUNCTUATION)
        kept = token if not core or _WORD.fullmatch(core) else "?"
        if kept != "?" or not words or words[-1] != "?":
            words.append(kept)
    return " ".join(words)


def _function(frame: str) -> str:
    """A frame without its place (file:line moves from build to build; the function does not)."""
    return frame.split("  ")[0]


def _slug(label: str) -> str:
    return "/".join(re.sub(r"[^A-Za-z0-9:_.+-]+", "-", part).strip("-")[:48] for part in label.split("/"))


def _cut(line: str) -> str:
    """A line of the server's output as it may be shown: cut, and every character that
    is not printable escaped (an ESC or a BEL it printed must not drive the terminal)."""
    return printable(line, LINE_SHOWN)
