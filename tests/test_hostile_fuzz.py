"""tpsharness fuzz against hostile server commands and output directories (issue 16,
items 6-8; issue 19's shell command): nothing left running, output bounded, nothing
overwritten or written outside -o DIR.

Each test here failed on the main branch before this work.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import free_port, wait_until
from test_fuzz import run_against
from tpsharness.fuzz.compare import Difference
from tpsharness.fuzz.differential import Outcome
from tpsharness.fuzz.fixture import write
from tpsharness.fuzz import cli as fuzz_cli
from tpsharness.fuzz import process
from tpsharness.fuzz.process import ServerProcess, _Watchdog
from tpsharness.fuzz.programs import Program, RawData, Step
from tpsharness.fuzz.uuids import Uuids
from tpsharness.fuzz import runner
from tpsharness.fuzz.runner import Finding, Fuzzer, Options, Report
from tpsharness.fuzz.values import Hostile
from tpsharness.scenario import ScenarioFailure, load, play
from tpsharness.fuzz.watchdog import ENVIRONMENT, accepts

FAKE = f"{sys.executable} -m fake_tps --port {{port}}"

# A server that forks: a worker that stays in its session; the server itself as a
# daemon (fork, setsid, fork) listening on {port}; and a "database" daemon on a port
# of its own, a shared service that is not the server. Each writes "<pid> <port>"
# to a file named after it once it is up; the leader then waits.
FORKING_SERVER = textwrap.dedent("""\
    import os, runpy, socket, sys, time
    port, prefix = sys.argv[1], sys.argv[2]

    def announce(name, listening=0):
        with open(f"{prefix}.{name}.tmp", "w") as handle:
            handle.write(f"{os.getpid()} {listening}")
        os.rename(f"{prefix}.{name}.tmp", f"{prefix}.{name}")

    def daemon():
        if os.fork():
            return False
        os.setsid()
        if os.fork():
            os._exit(0)
        return True

    if daemon():
        helper = socket.socket()
        helper.bind(("127.0.0.1", 0))
        helper.listen()
        announce("database", helper.getsockname()[1])
        time.sleep(60)
        os._exit(0)
    if daemon():
        announce("daemon", int(port))
        sys.argv = ["fake_tps", "--port", port]
        runpy.run_module("fake_tps", run_name="__main__")
        os._exit(0)
    if os.fork() == 0:
        announce("worker")
        time.sleep(60)
        os._exit(0)
    announce("leader")
    time.sleep(60)
    """)


def gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie waiting for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def refuses(port: int) -> bool:
    return not accepts(port)


def forking_command(tmp_path: Path) -> tuple[str, Path]:
    script = tmp_path / "forking.py"
    script.write_text(FORKING_SERVER)
    prefix = tmp_path / "started"
    return f"{sys.executable} {script} {{port}} {prefix}", prefix


def started(prefix: Path, name: str) -> tuple[int, int]:
    path = Path(f"{prefix}.{name}")
    assert wait_until(path.exists, timeout=20), f"{name} never started"
    pid, port = path.read_text().split()
    return int(pid), int(port)


def test_a_shell_server_command_with_cd_works(tmp_path: Path) -> None:
    where = tmp_path / "server dir"
    where.mkdir()
    # the form users write: cd DIR && exec ./server -s {port}
    server = ServerProcess(f"cd '{where}' && {sys.executable} -c \"open('here', 'w')\" && exec {FAKE}")
    try:
        server.start()
        assert not refuses(server.port)
        assert (where / "here").exists()
    finally:
        server.close()
    assert refuses(server.port)


def test_a_forking_server_leaves_nothing_running_or_listening(tmp_path: Path) -> None:
    command, prefix = forking_command(tmp_path)
    server = ServerProcess(command)
    try:
        server.start()
        leader, _ = started(prefix, "leader")
        worker, _ = started(prefix, "worker")
        daemon, port = started(prefix, "daemon")
        database, database_port = started(prefix, "database")
        assert port == server.port and not refuses(port)
    finally:
        server.close()
    try:
        assert wait_until(lambda: gone(leader) and gone(worker) and gone(daemon), timeout=10)
        assert refuses(port)
        assert not gone(database) and not refuses(database_port)    # a shared service stays
    finally:
        os.kill(database, signal.SIGKILL)


def test_a_restart_stops_what_the_previous_server_left_behind(tmp_path: Path) -> None:
    command, prefix = forking_command(tmp_path)
    server = ServerProcess(command, port=free_port())      # a port of our choosing: no spares
    try:
        server.start()
        worker, _ = started(prefix, "worker")
        daemon, port = started(prefix, "daemon")
        database, _ = started(prefix, "database")
        os.kill(database, signal.SIGKILL)
        for name in ("worker", "daemon", "database"):
            Path(f"{prefix}.{name}").unlink()
        server.restart()
        assert wait_until(lambda: gone(worker) and gone(daemon), timeout=10)
        assert server.alive() and not refuses(server.port)
        started(prefix, "worker")       # the new server's own are up
        os.kill(started(prefix, "database")[0], signal.SIGKILL)
    finally:
        server.close()


def test_a_server_command_whose_shell_exits_is_still_owned(tmp_path: Path) -> None:
    # "server &": the shell (the group's leader) exits 0 at once; the server runs on.
    server = ServerProcess(f"{FAKE} &")
    try:
        server.start()
        assert not refuses(server.port) and server.alive()
    finally:
        server.close()
    assert wait_until(lambda: refuses(server.port), timeout=10)


def fuzz_process(command: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tpsharness", "fuzz", "--server-cmd", command,
                             "--budget", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_fuzzer_stopped_by_a_signal_leaves_nothing_running(tmp_path: Path, how: signal.Signals) -> None:
    command, prefix = forking_command(tmp_path)
    fuzzer = fuzz_process(command)
    try:
        leader, _ = started(prefix, "leader")
        worker, _ = started(prefix, "worker")
        daemon, port = started(prefix, "daemon")
        database, _ = started(prefix, "database")
        assert fuzzer.stderr is not None
        first = fuzzer.stderr.readline()        # the first progress line: programs are running
        assert first.startswith("fuzz:"), first
        fuzzer.send_signal(how)
        out, err = fuzzer.communicate(timeout=20)
        err = first + err
    finally:
        fuzzer.kill()
        fuzzer.wait()
    try:
        assert wait_until(lambda: gone(leader) and gone(worker) and gone(daemon), timeout=10), (out, err)
        assert refuses(port)
    finally:
        os.kill(database, signal.SIGKILL)
    if how == signal.SIGTERM:       # it had time to say what it did
        assert fuzzer.returncode == 2, (out, err)
        assert "stopped by SIGTERM" in out and "terminated" in err


def test_a_server_that_prints_100_mb_costs_no_memory(tmp_path: Path) -> None:
    printer = tmp_path / "chatty.py"
    printer.write_text("import sys\nchunk = b'chatter ' * 8192\n"
                       "for _ in range(100 * 2 ** 20 // len(chunk)):\n    sys.stdout.buffer.write(chunk)\n"
                       "sys.stdout.buffer.write(b'\\nlicence expired\\n')\nsys.exit(4)\n")
    # A wrapper runs the fuzzer and reports the peak memory of what it waited for: the
    # fuzzer (and the small printer it waited for), not this test process.
    wrapper = ("import resource, subprocess, sys\n"
               "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
               "sys.stderr.buffer.write(done.stderr)\n"
               "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    done = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "tpsharness", "fuzz", "--server-cmd",
                           f"{sys.executable} {printer} {{port}}"], capture_output=True, timeout=60)
    status, peak = map(int, done.stdout.split())
    err = done.stderr
    assert status == 2, err[-2000:]
    assert b"exited with status 4" in err and b"licence expired" in err
    assert len(err) < 4000, len(err)        # its last output is quoted, bounded
    assert peak < 100 * 1024, f"{peak} KiB"


def test_the_output_of_a_chatty_server_is_kept_in_a_bounded_ring(tmp_path: Path) -> None:
    printer = tmp_path / "chatty.py"
    printer.write_text("import runpy, sys\nchunk = b'chatter ' * 8192\n"
                       "for _ in range(20 * 2 ** 20 // len(chunk)):\n    sys.stdout.buffer.write(chunk)\n"
                       "sys.stdout.buffer.write(b'the last line\\n')\nsys.stdout.flush()\n"
                       "sys.argv = ['fake_tps', '--port', sys.argv[1]]\n"
                       "runpy.run_module('fake_tps', run_name='__main__')\n")
    server = ServerProcess(f"{sys.executable} {printer} {{port}}")
    try:
        server.start()
        assert wait_until(lambda: b"fake TPS listening" in server.output(), timeout=10)
        output = server.output()
    finally:
        server.close()
    assert len(output) <= 64 * 1024
    assert b"the last line\n" in output


def a_finding(signature: str = "wrong-status/register/first/200:400") -> Finding:
    program = Program((("cam1", 0), ("cam2", 1), ("app", 2)), (Step("register", "cam1", (("serial", None),
                                                                                       ("variant", "plain"))),))
    outcome = Outcome(program, Uuids("fz00000001"), "127.0.0.1:6604", model_points={0: [{}]},
                      features={0: "first"}, connects={0})
    outcome.difference = Difference("wrong status", 0, "register", "first", "cam1",
                                    "reply 200 (register reply, ErrorNum 200)", "reply 400", "200:400")
    return Finding(signature, outcome, confirmed=True)


def test_a_finding_never_overwrites_a_file_of_the_same_name(tmp_path: Path) -> None:
    curated = tmp_path / "test_wrong_status_register_first_200_400.tps.json"
    curated.write_text('{"hand": "edited"}\n')
    path = write(a_finding(), tmp_path)
    assert curated.read_text() == '{"hand": "edited"}\n'
    assert path.name == "test_wrong_status_register_first_200_400_2.tps.json"
    assert json.loads(path.read_text())["recorded"]["signature"] == "wrong-status/register/first/200:400"
    assert write(a_finding(), tmp_path).name.endswith("_3.tps.json")


def test_a_finding_never_follows_a_symlink_out_of_the_directory(tmp_path: Path) -> None:
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me\n")
    findings = tmp_path / "findings"
    findings.mkdir()
    (findings / "test_wrong_status_register_first_200_400.tps.json").symlink_to(outside)
    path = write(a_finding(), findings)
    assert outside.read_text() == "keep me\n" and path.parent == findings and not path.is_symlink()
    forced = write(a_finding(), findings, force=True)     # replaces the link itself, not its target
    assert outside.read_text() == "keep me\n"
    assert forced.name == "test_wrong_status_register_first_200_400.tps.json" and not forced.is_symlink()
    assert sorted(p.name for p in findings.iterdir()) == [
        "test_wrong_status_register_first_200_400.tps.json",
        "test_wrong_status_register_first_200_400_2.tps.json"]      # no temporary file left


def test_a_missing_fuzz_extra_is_one_line_and_exit_3() -> None:
    done = subprocess.run([sys.executable, "-c", "import sys; sys.modules['hypothesis'] = None\n"
                           "from tpsharness.cli import main\nsys.exit(main(['fuzz', '--budget', '1']))"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 3
    assert done.stderr == "tpsharness fuzz: needs the 'fuzz' extra: pip install 'tpsharness[fuzz]'\n"


def test_a_spare_that_died_before_its_turn_is_skipped_not_fatal(tmp_path: Path) -> None:
    server = ServerProcess(FAKE)
    try:
        server.start()
        server.restart()                # the first restart starts the first spare
        spare = server._spare_queue[0]
        assert wait_until(lambda: accepts(spare.port), timeout=20)
        os.kill(spare.process.pid, signal.SIGKILL)      # something of the machine's killed it
        assert wait_until(lambda: not spare.alive(), timeout=10)
        server.restart()
        assert server.alive() and accepts(server.port) and server.lost_spares == 1
        assert server.port != spare.port
    finally:
        server.close()


# -- a server whose output holds crash reports it outlives (review of the fuzz engine) --

@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_server_that_prints_a_ubsan_report_and_carries_on_is_explored_at_full_rate(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Every log line of the fake carries a prefix; with UBSan's "runtime error" the fuzzer
    # used to wait TRIAGE_WAIT for an exit after each program (2 programs in 10 s).
    monkeypatch.setattr(runner, "TRIAGE_WAIT", 1.0)

    def programs_with(prefix: str) -> int:
        command = f"{FAKE} --log - | sed -u 's/^/{prefix}/'"
        return run_against(command, budget=3.0, seed=3, settle=0.05).programs

    control = programs_with("a.cpp:1:2: info ")
    reports = programs_with("a.cpp:1:2: runtime error: signed integer overflow: 1 + 1 ")
    assert control >= 20, control
    assert reports >= control / 3, (reports, control)


def test_a_crash_is_triaged_by_what_its_program_made_the_server_print(tmp_path: Path) -> None:
    # An old report from earlier in the server's life (printed at its start here) is
    # not the cause of a later crash: the crash is known by its own report.
    server = ServerProcess(f"echo 'a.cpp:10:2: runtime error: an old report it outlived'; "
                           f"exec {FAKE} --fault die-on-long-header")
    server.start()
    fuzzer = Fuzzer(Options(target=server.address, server=server, settle=0.1))
    fuzzer.started = time.monotonic()
    fuzzer.deadline = fuzzer.started + 20
    program = Program((("cam1", 0), ("cam2", 1), ("app", 2)), (
        Step("send_raw", "cam1", (("raw", Hostile("private_data", "header:AuthCode", "long", 1025)),)),))
    try:
        outcome = fuzzer._execute(program, fuzzer.settle, fuzzer.reference_settles[0])
    finally:
        server.close()
    assert outcome.difference is not None and outcome.difference.evidence is not None
    evidence = outcome.difference.evidence
    assert evidence.kind == "uncaught std::length_error", evidence
    assert "an old report" in " ".join(evidence.tail)       # the tail shown still has all of it


# -- what the fuzzer stops, and when (review of the fuzz engine) --

def test_the_watchdog_never_kills_a_process_that_only_reuses_a_session_id() -> None:
    # A start's leader is reaped when it stops: its pid, its session id, may then be
    # another program's, which the watchdog's sweep at the end must leave alone.
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    keeper = _Watchdog("0123456789abcdef")
    try:
        keeper.watch(stranger.pid, free_port())
        keeper.close()
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_the_watchdog_forgets_a_start_once_it_was_stopped() -> None:
    token = "0123456789abcdef"
    environment = dict(os.environ, **{ENVIRONMENT: f"{token}:1."})
    reused = subprocess.Popen(["sleep", "60"], start_new_session=True, env=environment)
    keeper = _Watchdog(token)
    try:
        keeper.watch(reused.pid, free_port())
        keeper.forget(reused.pid)
        keeper.close()
        assert reused.poll() is None
    finally:
        reused.kill()
        reused.wait()


BACKGROUND_SERVER = textwrap.dedent("""\
    import signal, socket, sys, time
    port, flag = int(sys.argv[1]), sys.argv[2]

    def cleanly(number, frame):
        time.sleep(0.2)         # a server's clean shutdown takes a moment
        with open(flag, "w") as handle:
            handle.write("stopped cleanly")
        sys.exit(0)

    signal.signal(signal.SIGTERM, cleanly)
    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    listener.listen()
    while True:
        listener.accept()[0].close()
    """)


def test_a_server_in_the_background_gets_its_grace_between_sigterm_and_sigkill(tmp_path: Path) -> None:
    script, flag = tmp_path / "background.py", tmp_path / "stopped"
    script.write_text(BACKGROUND_SERVER)
    server = ServerProcess(f"{sys.executable} {script} {{port}} {flag} >/dev/null 2>&1 &")
    server.start()
    server.close()
    assert flag.read_text() == "stopped cleanly"


def test_a_ctrl_c_just_as_the_server_command_starts_leaves_nothing_running(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[subprocess.Popen[bytes]] = []
    real = subprocess.Popen

    def popen(args: list[str], **options: object) -> subprocess.Popen[bytes]:
        child = real(args, **options)  # type: ignore[call-overload]
        if args[0] == process.SHELL:
            started.append(child)
            os.kill(os.getpid(), signal.SIGINT)     # arrives before the start is known
        return child

    monkeypatch.setattr(process.subprocess, "Popen", popen)
    server = ServerProcess(f"exec {FAKE}")
    try:
        with pytest.raises(KeyboardInterrupt):
            server.start()
        server.close()
        (child,) = started
        assert child.poll() is not None
    finally:
        for child in started:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def test_a_crash_fixture_fails_against_a_server_that_still_accepts_for_a_moment_as_it_dies(tmp_path: Path) -> None:
    # A sanitizer writing its report: the listener stays open a moment after the crash.
    program = Program((("cam1", 0), ("cam2", 1), ("app", 2)), (Step("connect", "cam1", ()),))
    outcome = Outcome(program, Uuids("fz00000003"), "127.0.0.1:6604", model_points={0: [{}]},
                      features={0: "first"}, connects=set())
    outcome.difference = Difference("crash", 0, "connect", "first", "cam1", "the server still accepting",
                                    "connection refused", "refused", side="server")
    path = write(Finding("crash/connect/first", outcome, confirmed=True), tmp_path)
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def dying() -> None:
        accepted.append(listener.accept()[0])
        time.sleep(0.3)
        listener.close()

    thread = threading.Thread(target=dying, daemon=True)
    thread.start()
    try:
        with pytest.raises(ScenarioFailure, match="check_alive"):
            play(load(path), listener.getsockname(), timeout=2)
    finally:
        thread.join(5)
        for connection in accepted:
            connection.close()


def test_two_findings_whose_names_fold_together_are_two_files_even_with_force(tmp_path: Path) -> None:
    report = Report()
    signatures = ("wrong-status/register/first/200:400", "wrong_status/register/FIRST/200/400")
    report.findings = {signature: a_finding(signature) for signature in signatures}
    args = argparse.Namespace(output=str(tmp_path), model="strict", force=True)
    paths = fuzz_cli._write(report, args, ("127.0.0.1", 6604))
    assert sorted(paths) == sorted(signatures) and len(set(paths.values())) == 2
    written = {json.loads(Path(path).read_text())["recorded"]["signature"] for path in paths.values()}
    assert written == set(signatures)


LATE_REPORTER = textwrap.dedent("""\
    import os, socket, sys, threading, time
    listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))

    def report_late():
        time.sleep(0.3)         # after the program that caused it ended
        print("server.c:12: handle: Assertion `peer != NULL' failed.", flush=True)

    while True:
        connection, _ = listener.accept()
        connection.settimeout(0.2)
        try:
            data = connection.recv(65536)
        except OSError:
            data = b""
        if b"late" in data:
            threading.Thread(target=report_late).start()
        elif b"die" in data:
            os.abort()
        connection.close()
    """)


def test_a_report_printed_after_its_program_ended_is_still_the_next_crash_s_cause(tmp_path: Path) -> None:
    # A server's report can come late (the last bytes handled after the probe): the
    # crash it announces is triaged with it, not as a bare SIGABRT.
    script = tmp_path / "late.py"
    script.write_text(LATE_REPORTER)
    server = ServerProcess(f"exec {sys.executable} {script} {{port}}")
    server.start()
    fuzzer = Fuzzer(Options(target=server.address, server=server, settle=0.05))
    fuzzer.started = time.monotonic()
    fuzzer.deadline = fuzzer.started + 20

    def garbage(data: bytes) -> Program:
        return Program((("cam1", 0), ("cam2", 1), ("app", 2)),
                       (Step("send_raw", "cam1", (("raw", RawData("garbage", data)),)),))

    try:
        fuzzer._execute(garbage(b"late\r\n\r\n"), fuzzer.settle, fuzzer.reference_settles[0])
        assert wait_until(lambda: b"Assertion" in server.output(), timeout=5)
        outcome = fuzzer._execute(garbage(b"die\r\n\r\n"), fuzzer.settle, fuzzer.reference_settles[0])
    finally:
        server.close()
    assert outcome.difference is not None and outcome.difference.evidence is not None
    assert outcome.difference.evidence.kind == "assertion failed", outcome.difference.evidence


def progress_until(fuzzer: subprocess.Popen[bytes], terminal: int, seconds: int) -> str:
    """Read the progress lines the fuzzer rewrites on ``terminal`` (its stderr, a pty)
    until one says ``seconds`` of the run went by; all that was read."""
    import re
    import select
    seen = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and fuzzer.poll() is None:
        if select.select([terminal], [], [], 0.5)[0]:
            seen += os.read(terminal, 4096)
            if any(int(elapsed) >= seconds for elapsed in re.findall(rb"fuzz: +(\d+) s", seen)):
                return seen.decode(errors="replace")
    raise AssertionError(f"no progress line of {seconds} s: {seen!r}")


@pytest.mark.slow
@pytest.mark.timeout(120)       # seven runs of the CLI, each a few seconds
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_the_run_cleanly_without_a_traceback(how: signal.Signals) -> None:
    # A KeyboardInterrupt raised in a kernel task was logged as "task 1 ended with an
    # exception nobody collected" with its traceback (9 runs in 11); repeated so that a
    # lucky pass is unlikely, the signal landing at another point of the run each time.
    import pty
    for attempt in range(5 if how == signal.SIGTERM else 2):
        terminal, stderr = pty.openpty()        # a terminal: the progress line comes every second
        fuzzer = subprocess.Popen([sys.executable, "-m", "tpsharness", "fuzz", "--server-cmd", f"exec {FAKE}",
                                   "--budget", "60"], stdout=subprocess.PIPE, stderr=stderr)
        os.close(stderr)
        try:
            err = progress_until(fuzzer, terminal, 1 + attempt % 3)
            fuzzer.send_signal(how)
            sent = time.monotonic()
            out = fuzzer.communicate(timeout=20)[0].decode()
            took = time.monotonic() - sent
            err += drain(terminal)
        finally:
            fuzzer.kill()
            fuzzer.wait()
            os.close(terminal)
        assert fuzzer.returncode == 2, (attempt, out, err)
        assert "Traceback" not in err and "nobody collected" not in err, (attempt, err)
        assert took < 5, (attempt, took)
        word = "terminated" if how == signal.SIGTERM else "interrupted"
        assert f"tpsharness fuzz: {word}" in err and "found nothing" in out, (attempt, out, err)


def drain(terminal: int) -> str:
    """What is left to read on ``terminal`` (a pty whose other end closed reads EIO)."""
    import select
    seen = b""
    try:
        while select.select([terminal], [], [], 0.2)[0]:
            chunk = os.read(terminal, 65536)
            if not chunk:
                break
            seen += chunk
    except OSError:
        pass
    return seen.decode(errors="replace")


# A server command that daemonizes with an environment of its own (no marker of the
# fuzzer's): setsid env -i ... &, then (WAIT) exits 0 once the port accepts, or at once.
ENV_I_DAEMON = textwrap.dedent("""\
    #!/bin/sh
    setsid env -i PATH=/usr/bin:/bin {python} -m fake_tps --port $1 >/dev/null 2>&1 </dev/null &
    {wait}exit 0
    """)
WAIT_FOR_PORT = ("while ! {python} -c \"import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), "
                 "0.2)\" $1 2>/dev/null; do sleep 0.05; done\n")


@pytest.mark.parametrize("waits", [True, False], ids=["waits-for-the-port", "exits-at-once"])
def test_a_server_that_cleared_its_environment_is_found_by_its_port_and_stopped(
        tmp_path: Path, waits: bool) -> None:
    script = tmp_path / "daemon.sh"
    script.write_text(ENV_I_DAEMON.format(python=sys.executable,
                                          wait=WAIT_FOR_PORT.format(python=sys.executable) if waits else ""))
    script.chmod(0o755)
    server = ServerProcess(f"{script} {{port}}", start_timeout=20)
    ports = []
    try:
        server.start()          # exits-at-once: it waits for the port (it listened after its shell's exit 0)
        ports.append(server.port)
        assert wait_until(lambda: server._current is not None and server._current.status() is not None, timeout=10)
        assert server.alive()   # its shell exited 0: the server runs on in the background
        server.restart()        # on the same port (and a spare started on another)
        server.restart()        # to the spare: the port moves
        ports += [server.port, *(launch.port for launch in server._spare_queue)]
        assert ports[1] != ports[0]
        assert wait_until(lambda: refuses(ports[0]), timeout=10), "the first start's server was left listening"
    finally:
        server.close()
    assert wait_until(lambda: all(refuses(port) for port in ports), timeout=10), "a server was left listening"


def test_a_fifo_among_the_seeds_is_skipped_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Opening a FIFO waits for a writer for ever: the seeds are read as regular files only.
    import shutil
    os.mkfifo(tmp_path / "test_fifo.tps.json")
    shutil.copy(Path(__file__).parent.parent / "fixtures" / "test_check_auth_refuses_wrong_code.tps.json", tmp_path)
    loaded = fuzz_cli._seeds(str(tmp_path))
    assert isinstance(loaded, tuple) and len(loaded) == 1
    assert f"skipped {tmp_path / 'test_fifo.tps.json'}: cannot read: not a regular file (a FIFO)" in \
        capsys.readouterr().err


ESCAPES = "printf '\\033[31mboom|\\n\\033]0;title\\007\\n'"


def test_a_server_s_escape_codes_never_reach_the_terminal_when_it_fails_to_start() -> None:
    result = subprocess.run([sys.executable, "-m", "tpsharness", "fuzz", "--server-cmd", f"{ESCAPES}; exit 7 # {{port}}"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr, repr(result.stderr)
    assert result.stderr.splitlines()[1:] == ["\\x1b[31mboom|", "\\x1b]0;title\\x07"], repr(result.stderr)


def test_a_crash_s_evidence_shows_the_server_s_escape_codes_escaped_line_by_line() -> None:
    from tpsharness.fuzz.process import ExitStatus
    from tpsharness.fuzz.triage import triage
    evidence = triage(ExitStatus(signal=signal.SIGSEGV), b"\x1b[31mboom|\n\x1b]0;title\x07\nSegmentation fault\n")
    shown = [evidence.kind, evidence.line, *evidence.frames, *evidence.tail]
    assert not any("\x1b" in text or "\x07" in text for text in shown), shown
    assert evidence.tail == ("\\x1b[31mboom|", "\\x1b]0;title\\x07", "Segmentation fault")


@pytest.mark.parametrize("environment, lines", [
    ({"TPS_FUZZ_BUDGET": "inf"}, ["TPS_FUZZ_BUDGET: must be seconds above 0 to 604800, not inf"]),
    ({"TPS_FUZZ_BUDGET": "abc", "TPS_FUZZ_MODEL": "fild", "TPS_FUZZ_SEED": "x"},
     ["TPS_FUZZ_BUDGET: not a number of seconds: 'abc'", "TPS_FUZZ_MODEL: must be one of strict, field, not 'fild'",
      "TPS_FUZZ_SEED: must be an integer, not 'x'"]),
    ({"TPS_FUZZ_MODEL": "fild"}, ["TPS_FUZZ_MODEL: must be one of strict, field, not 'fild'"]),
], ids=["inf", "three", "model"])
def test_the_pytest_fuzz_entry_says_each_bad_variable_in_a_line(environment: dict[str, str], lines: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                             "--pyargs", "tpsharness.fuzz"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, **environment})
    out = result.stdout + result.stderr
    assert result.returncode == 2 and "INTERNALERROR" not in out and "OverflowError" not in out, out
    assert "ValueError" not in out and "1 error" in out, out
    shown = [line.removeprefix("E").strip().removeprefix("pytest.UsageError: ") for line in out.splitlines()]
    for line in lines:
        assert line in shown, out
    assert not any(name in line for line in shown for name in environment if line not in lines and
                   line.startswith("TPS_FUZZ_")), out


def test_a_failing_reference_command_is_named_as_the_reference() -> None:
    result = subprocess.run([sys.executable, "-m", "tpsharness", "fuzz", "--reference-cmd", "exit 3 # {port}",
                             "--budget", "2"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("tpsharness fuzz: the reference command exited with status 3 before listening"), \
        result.stderr


def test_an_ignore_that_matched_nothing_is_said_in_one_line_at_the_end() -> None:
    result = subprocess.run([sys.executable, "-m", "tpsharness", "fuzz", "--max-programs", "5",
                             "--ignore", "no-such-signature", "--ignore", "no-such-signature"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("--ignore") == 1, result.stderr
    assert result.stderr.splitlines()[-1] == "tpsharness fuzz: --ignore no-such-signature: matched nothing in this run"


def test_the_summary_of_a_self_test_against_a_reference_names_each_once() -> None:
    import io
    from tpsharness.fuzz.summary import print_summary
    out = io.StringIO()
    print_summary(Report(), ("127.0.0.1", 1), "strict", self_test=True, reference=("127.0.0.1", 2), stream=out)
    assert out.getvalue().startswith("tpsharness fuzz: the bundled fake against the reference 127.0.0.1:2, model"), \
        out.getvalue()
    out = io.StringIO()
    print_summary(Report(), ("127.0.0.1", 1), "strict", self_test=True, stream=out)
    assert out.getvalue().startswith("tpsharness fuzz: the bundled fake against itself, model"), out.getvalue()
