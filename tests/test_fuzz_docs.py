"""docs/fuzz.md's worked examples print what the page shows.

Every ```text block that begins with a ``$ `` command is run, in order (a later block
may use what an earlier one wrote: /tmp/fuzz-findings is a temporary directory here,
and a fake started with ``&`` listens on a free port that stands for the one shown).
What varies between two runs (times, rates, shares, ports, pids, the fuzzer's uuids)
is taken out of both sides; a line ``...`` stands for any lines, and progress lines
(``fuzz: ...``, rewritten as a run goes) are left out. Counts, signatures, programs,
evidence and exit statuses must match exactly: with --seed and --max-programs or
--max-findings, a run against the fake repeats.

When a change makes them differ for good (another fake, another generator),
``python tests/test_fuzz_docs.py --write`` runs the examples and writes what they
print into the page (the ``...`` lines stay where they are).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import free_port  # noqa: E402  (run as a script too)
from tpsharness.fuzz.watchdog import accepts  # noqa: E402

ROOT = Path(__file__).parent.parent
PAGE = ROOT / "docs" / "fuzz.md"
FINDINGS = "/tmp/fuzz-findings"
VARYING = [(re.compile(pattern), replacement) for pattern, replacement in [
    (r"127\.0\.0\.1:\d+", "127.0.0.1:PORT"), (r"port \d+", "port PORT"),
    (r"\d+(\.\d+)? ?(s|ms)\b", "T s"), (r"\d+ steps/s", "N steps/s"), (r"exploring \d+/s", "exploring N/s"),
    (r"\d+%", "N%"), (r"fz[0-9a-f]{8}", "fzUUID"), (r"==\d+==", "==PID=="), (r"in \d+\.\d+s\b", "in Ts")]]


@dataclass
class Command:
    """One ``$`` line of a block (with its continuation lines) and the output shown."""

    lines: list[str]
    expected: list[str]
    actual: list[str] | None = None     # what it printed, once run

    @property
    def text(self) -> str:
        return " ".join(line.strip().rstrip("\\").strip() for line in self.lines)[2:]


@dataclass
class Block:
    start: int
    end: int
    commands: list[Command] = field(default_factory=list)


def normal(line: str) -> str:
    for pattern, replacement in VARYING:
        line = pattern.sub(replacement, line)
    return line.rstrip()


def blocks(text: str) -> list[Block]:
    """Each checked block, with where it is in ``text``."""
    found = []
    for match in re.finditer(r"```text\n(.*?)```", text, re.S):
        if not match.group(1).startswith("$ "):
            continue
        block = Block(match.start(1), match.end(1))
        lines = match.group(1).splitlines()
        while lines:
            command = [lines.pop(0)]
            while command[-1].endswith("\\"):
                command.append(lines.pop(0))
            output = []
            while lines and not lines[0].startswith("$ "):
                output.append(lines.pop(0))
            block.commands.append(Command(command, output))
        found.append(block)
    return found


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line after normal(), ``...`` matching any lines."""
    want = [normal(line) for line in expected if not line.startswith("fuzz: ")]
    have = [normal(line) for line in actual if not line.startswith("fuzz: ")]

    def at(w: int, h: int) -> bool:
        if w == len(want):
            return h == len(have)
        if want[w].strip() == "...":
            return any(at(w + 1, later) for later in range(h, len(have) + 1))
        return h < len(have) and want[w] == have[h] and at(w + 1, h + 1)
    return at(0, 0)


def run(found: list[Block], scratch: Path) -> Iterator[Command]:
    """Run the blocks' commands in order, filling in what each printed; yield each."""
    findings = scratch / "fuzz-findings"
    environment = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    ports: dict[str, str] = {}
    fakes: list[subprocess.Popen[bytes]] = []
    status = 0
    try:
        for block in found:
            for command in block.commands:
                text = command.text
                if "./tps_server" in text:
                    continue
                for shown, real in ports.items():
                    text = text.replace(shown, real)
                text = text.replace(FINDINGS, str(findings))
                if text == "echo $?":
                    command.actual = [str(status)]
                elif text.endswith("&"):       # a fake in the background, on a port of our own
                    shown = re.search(r"--port (\d+)", text).group(1)     # type: ignore[union-attr]
                    real = ports.setdefault(shown, str(free_port()))
                    fakes.append(subprocess.Popen(["bash", "-c", "exec " + text[:-1].replace(shown, real)],
                                                  env=environment, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL))     # (exec: stopped below)
                    deadline = time.monotonic() + 20
                    while not accepts(int(real)) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    command.actual = []
                else:
                    done = subprocess.run(["bash", "-c", f"{{ {text} ; }} 2>&1"], cwd=ROOT, env=environment,
                                          capture_output=True, text=True, timeout=120)
                    status = done.returncode
                    printed = done.stdout.replace(str(findings), FINDINGS)
                    for shown, real in ports.items():
                        printed = printed.replace(f"127.0.0.1:{real}", f"127.0.0.1:{shown}")
                    command.actual = printed.splitlines()
                yield command
    finally:
        for fake in fakes:
            fake.terminate()
            fake.wait(10)


@pytest.mark.slow
@pytest.mark.timeout(240)       # about ten fuzzing runs of seconds each, two pytest runs
def test_the_worked_examples_print_what_the_page_shows(tmp_path: Path) -> None:
    checked = 0
    for command in run(blocks(PAGE.read_text(encoding="utf-8")), tmp_path):
        assert command.actual is not None
        assert matches(command.expected, command.actual), \
            f"$ {command.text}\nthe page shows:\n" + "\n".join(command.expected) + \
            "\nit printed:\n" + "\n".join(command.actual) + \
            "\n(if the change is meant: python tests/test_fuzz_docs.py --write)"
        checked += 1
    assert checked >= 15


def test_the_fixture_shown_is_what_the_fuzzer_wrote(tmp_path: Path) -> None:
    import shlex
    text = PAGE.read_text(encoding="utf-8")
    shown = json.loads(re.search(r"```json\n(.*?)```", text, re.S).group(1))      # type: ignore[union-attr]
    command = next(command.text for block in blocks(text) for command in block.commands
                   if "-o /tmp/fuzz-findings" in command.text)
    argv = shlex.split(command.replace(FINDINGS, str(tmp_path)).replace(" 2>/dev/null", ""))
    argv[0] = sys.executable
    argv[argv.index("--server-cmd") + 1] = argv[argv.index("--server-cmd") + 1].replace(
        "python", sys.executable, 1)
    subprocess.run(argv, capture_output=True, timeout=120)
    written = json.loads(next(tmp_path.glob("*.tps.json")).read_text())
    uuid = re.compile(r"fz[0-9a-f]{8}")

    def same(data: object) -> object:
        return json.loads(uuid.sub("fzUUID", json.dumps(data)))
    for part in (written, shown):
        part["recorded"].pop("target")
    assert same(written) == same(shown)


def write() -> None:
    """Put what each example prints into the page, keeping its ``...`` lines."""
    text = PAGE.read_text(encoding="utf-8")
    found = blocks(text)
    with tempfile.TemporaryDirectory() as scratch:
        for _ in run(found, Path(scratch)):
            pass
        fixture = json.loads(next((Path(scratch) / "fuzz-findings").glob("*.tps.json")).read_text())
    shown = re.search(r"```json\n(.*?)```", text, re.S)
    assert shown is not None
    text = text[:shown.start(1)] + compact(fixture) + "\n" + text[shown.end(1):]
    for block in reversed(found):
        lines = []
        for command in block.commands:
            lines += command.lines
            actual = command.actual if command.actual is not None else command.expected
            gap = next((index for index, line in enumerate(command.expected) if line.strip() == "..."), None)
            if gap is None:
                lines += actual
            else:
                after = len(command.expected) - gap - 1
                lines += actual[:gap] + [command.expected[gap]] + (actual[-after:] if after else [])
        text = text[:block.start] + "\n".join(lines) + "\n" + text[block.end:]
    PAGE.write_text(text, encoding="utf-8")


def compact(scenario: dict[str, object]) -> str:
    """A scenario as the page shows it: one actor and one step a line."""
    actors = scenario["actors"]
    steps = scenario["steps"]
    assert isinstance(actors, dict) and isinstance(steps, list)
    recorded = json.dumps(scenario["recorded"], indent=2).replace("\n", "\n  ")
    return "\n".join([
        "{", f'  "description": {json.dumps(scenario["description"])},', f'  "recorded": {recorded},',
        '  "actors": {', ",\n".join(f"    {json.dumps(name)}: {json.dumps(actor)}" for name, actor in actors.items()),
        "  },", '  "steps": [', ",\n".join(f"    {json.dumps(step)}" for step in steps), "  ]", "}"])


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_fuzz_docs.py --write")
    write()
