"""docs/fuzz.md's worked examples print what the page shows.

Every ```text block that begins with a ``$ `` command is run, in order (a later block
may use what an earlier one wrote: /tmp/fuzz-findings is a temporary directory here,
and a fake started with ``&`` listens on a free port that stands for the one shown).
What varies between two runs (times, rates, shares, ports, pids, the fuzzer's uuids)
is taken out of both sides; a line ``...`` stands for any lines, and progress lines
(``fuzz: ...``, rewritten as a run goes) are left out. Counts, signatures, programs,
evidence and exit statuses must match exactly: with --seed and --max-programs or
--max-findings, a run against the fake repeats.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port
from tpsharness.fuzz.watchdog import accepts

ROOT = Path(__file__).parent.parent
PAGE = ROOT / "docs" / "fuzz.md"
FINDINGS = "/tmp/fuzz-findings"
VARYING = [(re.compile(pattern), replacement) for pattern, replacement in [
    (r"127\.0\.0\.1:\d+", "127.0.0.1:PORT"), (r"port \d+", "port PORT"),
    (r"\d+(\.\d+)? ?(s|ms)\b", "T s"), (r"\d+ steps/s", "N steps/s"), (r"exploring \d+/s", "exploring N/s"),
    (r"\d+%", "N%"), (r"fz[0-9a-f]{8}", "fzUUID"), (r"==\d+==", "==PID=="), (r"in \d+\.\d+s\b", "in Ts")]]


def normal(line: str) -> str:
    for pattern, replacement in VARYING:
        line = pattern.sub(replacement, line)
    return line.rstrip()


def examples(text: str) -> list[list[tuple[str, list[str]]]]:
    """Each checked block as [(command, expected output lines)]."""
    blocks = []
    for block in re.findall(r"```text\n(.*?)```", text, re.S):
        if not block.startswith("$ "):
            continue
        steps: list[tuple[str, list[str]]] = []
        lines = block.splitlines()
        while lines:
            command = lines.pop(0)[2:]
            while command.endswith("\\"):
                command = command[:-1] + lines.pop(0).strip()
            output = []
            while lines and not lines[0].startswith("$ "):
                output.append(lines.pop(0))
            steps.append((command, output))
        blocks.append(steps)
    return blocks


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


@pytest.mark.slow
@pytest.mark.timeout(240)       # about ten fuzzing runs of seconds each, two pytest runs
def test_the_worked_examples_print_what_the_page_shows(tmp_path: Path) -> None:
    findings = tmp_path / "fuzz-findings"
    environment = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    ports: dict[str, str] = {}
    fakes: list[subprocess.Popen[bytes]] = []
    status = 0
    checked = 0
    try:
        for block in examples(PAGE.read_text(encoding="utf-8")):
            for command, expected in block:
                if "./tps_server" in command:
                    continue
                for shown, real in ports.items():
                    command = command.replace(shown, real)
                command = command.replace(FINDINGS, str(findings))
                if command == "echo $?":
                    assert expected == [str(status)], f"exit status {status}, the page says {expected}"
                    continue
                if command.endswith("&"):       # a fake in the background, on a port of our own
                    shown = re.search(r"--port (\d+)", command).group(1)     # type: ignore[union-attr]
                    real = ports.setdefault(shown, str(free_port()))
                    fakes.append(subprocess.Popen(command[:-1].replace(shown, real), shell=True, env=environment,
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                    deadline = time.monotonic() + 20
                    while not accepts(int(real)) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    continue
                done = subprocess.run(["bash", "-c", f"{{ {command} ; }} 2>&1"], cwd=ROOT, env=environment,
                                      capture_output=True, text=True, timeout=120)
                status = done.returncode
                actual = done.stdout.replace(str(findings), FINDINGS).splitlines()
                assert matches(expected, actual), \
                    f"$ {command}\nthe page shows:\n" + "\n".join(expected) + "\nit printed:\n" + done.stdout
                checked += 1
    finally:
        for fake in fakes:
            fake.terminate()
            fake.wait(10)
    assert checked >= 10


def test_the_fixture_shown_is_what_the_fuzzer_wrote(tmp_path: Path) -> None:
    import shlex
    text = PAGE.read_text(encoding="utf-8")
    shown = json.loads(re.search(r"```json\n(.*?)```", text, re.S).group(1))      # type: ignore[union-attr]
    command = next(line for block in examples(text) for line, _ in block if "-o /tmp/fuzz-findings" in line)
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
