"""tpsharness fuzz: no false positives, planted bugs found and shrunk, fixtures that
reproduce them, the field profile, usage errors, server commands that fail.

Short runs with fixed seeds; a run stops at its first finding (max_findings=1).
"""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_until
from fake_tps import FakeTPS
from tpsharness.fuzz.fixture import scenario_of, write
from tpsharness.fuzz.process import ServerProcess
from tpsharness.fuzz.programs import Step
from tpsharness.fuzz.runner import Finding, Fuzzer, Options, Report
from tpsharness.scenario import ScenarioFailure, load, play

FAKE = f"{sys.executable} -m fake_tps --port {{port}}"
PLANTED = ["forget-after-heartbeat", "misroute-relays", "drop-relays-after-3", "takeover-closes-newer",
           "die-on-dangling-entry"]


def fuzz_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tpsharness", "fuzz", *args], capture_output=True,
                          text=True, timeout=timeout)


def run_against(command: str, **options: Any) -> Report:
    server = ServerProcess(command)
    server.start()
    try:
        options.setdefault("settle", 0.1)
        return Fuzzer(Options(target=server.address, server=server, **options)).run()
    finally:
        server.close()


def ran_steps(finding: Finding) -> list[Step]:
    return [step for step, ran in finding.listing() if ran]


def test_the_fake_against_the_model_finds_nothing() -> None:
    report = run_against(FAKE, budget=60, max_programs=80, seed=3)
    assert report.programs == 80 and report.steps > 80
    assert report.findings == {}, [f.difference.describe() for f in report.findings.values()]
    assert report.unrepeatable == []


@pytest.mark.timeout(150)
@pytest.mark.parametrize("fault", PLANTED)
def test_a_planted_bug_is_found_shrunk_and_written_as_a_fixture_that_reproduces_it(fault: str, tmp_path: Path) -> None:
    report = run_against(f"{FAKE} --fault {fault}", budget=100, max_findings=1, seed=1)
    assert report.findings, f"{fault} not found in {report.programs} programs"
    (signature, finding), = report.findings.items()
    assert len(ran_steps(finding)) <= 6, str(finding.program)
    path = write(finding, tmp_path)
    cls = signature.split("/")[0].replace("-", "_")
    kind = "" if cls == "crash" else f"{finding.difference.do}_"     # a crash is named by its cause
    assert re.fullmatch(rf"test_{cls}_{kind}[a-z0-9_]+\.tps\.json", path.name), path.name
    scenario = load(path)
    faulty = FakeTPS(faults=[fault])
    with faulty.start_in_thread():
        with pytest.raises(ScenarioFailure):
            play(scenario, faulty.address, timeout=2)
    model = FakeTPS()
    with model.start_in_thread():
        play(scenario, model.address, timeout=2)


def test_a_crash_without_a_server_command_ends_the_run_and_is_written_as_found(tmp_path: Path) -> None:
    server = ServerProcess(f"{FAKE} --fault die-on-dangling-entry")
    server.start()
    try:
        report = Fuzzer(Options(target=server.address, budget=100, seed=1, settle=0.1)).run()
    finally:
        server.close()
    assert report.stopped_by == "crash"
    (signature, finding), = report.findings.items()
    assert signature.startswith("crash/") and "connection refused" in finding.difference.got
    steps = scenario_of(finding)["steps"]
    assert steps[-1] == {"do": "check_alive"}


def test_a_field_server_against_the_strict_model_shows_the_framing_in_three_steps() -> None:
    report = run_against(f"{FAKE} --fault one-read-one-message", budget=60, max_findings=1, seed=2)
    (signature, finding), = report.findings.items()
    assert signature.startswith(("wrong-status/", "no-answer/", "missing-relay/", "extra-relay/",
                                 "corrupted-relay/")), signature
    steps = ran_steps(finding)
    assert len(steps) <= 3, str(finding.program)
    assert any(step.get("variant") in ("split", "pipelined") or step.do == "send_raw" for step in steps)


def test_the_field_model_finds_nothing_on_a_field_server() -> None:
    report = run_against(f"{FAKE} --fault one-read-one-message", model="field", budget=60,
                         max_programs=80, seed=2)
    assert report.findings == {}, [f.difference.describe() for f in report.findings.values()]


def test_ignore_silences_a_known_signature() -> None:
    first = run_against(f"{FAKE} --fault takeover-closes-newer", budget=60, max_findings=1, seed=1)
    (signature, _), = first.findings.items()
    again = run_against(f"{FAKE} --fault takeover-closes-newer", budget=60, max_findings=1, seed=1,
                        ignore=(signature,))
    assert signature not in again.findings


def test_the_self_test_command_exits_0_with_a_json_summary() -> None:
    result = fuzz_cli("--max-programs", "20", "--seed", "1", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["programs"] == 20 and summary["findings"] == [] and summary["steps_per_second"] > 0


@pytest.mark.timeout(150)
def test_the_command_exits_1_and_writes_the_finding(tmp_path: Path) -> None:
    result = fuzz_cli("--server-cmd", f"{FAKE} --fault takeover-closes-newer", "--max-findings", "1",
                      "--seed", "1", "--settle", "0.1", "--budget", "100", "-o", str(tmp_path),
                      timeout=140)
    assert result.returncode == 1, result.stdout + result.stderr
    written = list(tmp_path.glob("test_*.tps.json"))
    assert len(written) == 1 and f"written to {written[0]}" in result.stdout
    assert "1 finding(s)" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--budget", "0"], "must be seconds above 0"),
    (["--budget", "inf"], "must be seconds above 0 to 604800, not inf"),
    (["--settle", "nan"], "must be seconds above 0 to 30, not nan"),
    (["--start-timeout", "1e9"], "must be seconds above 0 to 600"),
    (["--budget", "soon"], "not a number of seconds"),
    (["127.0.0.1"], "give both HOST and PORT"),
    (["--server-cmd", "sleep 1"], "needs {port}"),
    (["--model", "lenient"], "invalid choice"),
    (["--max-steps", "0"], "must be at least 1"),
    (["127.0.0.1", "70000"], "port must be 1-65535"),
    (["-o", __file__], "File exists"),      # checked before the run: no finding is lost
])
def test_usage_errors_exit_3(args: list[str], message: str) -> None:
    result = fuzz_cli(*args)
    assert result.returncode == 3, result.stdout + result.stderr
    assert message in result.stderr


def test_a_server_command_that_never_listens_fails_with_its_output() -> None:
    command = f"{sys.executable} -c \"print('warming up', flush=True); import time; time.sleep(30)\" {{port}}"
    result = fuzz_cli("--server-cmd", command, "--start-timeout", "1", timeout=30)
    assert result.returncode == 2
    assert "did not listen on 127.0.0.1:" in result.stderr and "warming up" in result.stderr


def test_a_server_command_that_dies_at_start_fails_with_its_output() -> None:
    command = f"{sys.executable} -c \"import sys; print('no licence'); sys.exit(4)\" {{port}}"
    result = fuzz_cli("--server-cmd", command, timeout=30)
    assert result.returncode == 2
    assert "exited with status 4" in result.stderr and "no licence" in result.stderr


def test_a_target_that_refuses_fails_the_run() -> None:
    server = ServerProcess(FAKE)
    port = server.port
    server.close()
    result = fuzz_cli("127.0.0.1", str(port), "--max-programs", "5", timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"cannot connect to the TPS at 127.0.0.1:{port}" in result.stderr


def test_a_server_that_will_not_restart_after_a_crash_fails_the_run(tmp_path: Path) -> None:
    script = tmp_path / "once.py"
    script.write_text(
        "import os, runpy, sys\n"
        "marker, port = sys.argv[1], sys.argv[2]\n"
        "if os.path.exists(marker):\n"
        "    print('licence expired', flush=True)\n"
        "    sys.exit(5)\n"
        "open(marker, 'w').close()\n"
        "sys.argv = ['fake_tps', '--port', port, '--fault', 'die-on-dangling-entry']\n"
        "runpy.run_module('fake_tps', run_name='__main__')\n")
    command = f"{sys.executable} {script} {tmp_path / 'started'} {{port}}"
    result = fuzz_cli("--server-cmd", command, "--seed", "1", "--settle", "0.1", timeout=100)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "exited with status 5" in result.stderr and "licence expired" in result.stderr


@pytest.mark.timeout(150)
def test_the_fuzz_benchmark_runs_and_prints_its_figures() -> None:
    bench = Path(__file__).parent / "bench" / "bench_fuzz.py"
    done = subprocess.run([sys.executable, str(bench), "--quick", "--skip-load"], capture_output=True,
                          text=True, timeout=140)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^self-test idle .* \d+ steps/s .* 0 findings", done.stdout, re.M), done.stdout
    assert re.search(r"^exploring \(out-of-process fake\) +--model strict: +\d+ steps/s .* --model field: +\d+ "
                     r"steps/s", done.stdout, re.M), done.stdout
    assert re.search(r"^phases, crashing fake .* explore \d+% shrink \d+% confirm \d+% restart \d+%, settle waits "
                     r"\d+%; \d+ crashes, [12] distinct", done.stdout, re.M), done.stdout
    assert re.search(r"^find takeover-closes-newer +median first seen", done.stdout, re.M), done.stdout
    assert re.search(r"^find die-on-long-header +median first seen .* minimal program 1-1 steps", done.stdout,
                     re.M), done.stdout


def test_a_seed_and_a_program_count_make_a_run_repeat_exactly() -> None:
    runs = [run_against(FAKE, budget=60, max_programs=40, seed=seed) for seed in (5, 5, 6)]
    assert runs[0].digest == runs[1].digest and runs[0].steps == runs[1].steps
    assert runs[2].digest != runs[0].digest


def test_a_killed_fuzzer_leaves_no_server_behind(tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    script = tmp_path / "server.py"
    script.write_text(
        "import os, runpy, sys\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "sys.argv = ['fake_tps', '--port', sys.argv[1]]\n"
        "runpy.run_module('fake_tps', run_name='__main__')\n")
    fuzzer = subprocess.Popen([sys.executable, "-m", "tpsharness", "fuzz", "--server-cmd",
                               f"{sys.executable} {script} {{port}}", "--budget", "60"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(pid_file.exists, timeout=20)
        server_pid = int(pid_file.read_text())
    finally:
        fuzzer.kill()
        fuzzer.wait()
    assert wait_until(lambda: not Path(f"/proc/{server_pid}").exists() or
                      Path(f"/proc/{server_pid}/stat").read_text().split()[2] == "Z", timeout=10)


def test_the_scenario_close_step_hangs_up_and_a_later_connect_opens_a_new_connection(fake: FakeTPS) -> None:
    from tpsharness.scenario import Scenario, validate
    data = validate({"actors": {"cam": {"kind": "device"}, "app": {"kind": "client"}}, "steps": [
        {"do": "connect", "actor": "cam"}, {"do": "register", "actor": "cam"},
        {"do": "expect_reply", "actor": "cam", "status": 200},
        {"do": "close", "actor": "cam"},
        {"do": "connect", "actor": "app"}, {"do": "send", "actor": "app", "to": "cam"},
        {"do": "expect_reply", "actor": "app", "status": 404},
        {"do": "connect", "actor": "cam"}, {"do": "register", "actor": "cam"},
        {"do": "expect_reply", "actor": "cam", "status": 200},
        {"do": "send", "actor": "app", "to": "cam", "payload": "again"},
        {"do": "expect_reply", "actor": "app", "status": 200},
        {"do": "expect_receipt", "actor": "cam", "payload": "again"}]})
    transcript = play(Scenario("<close>", data), fake.address, timeout=2)
    assert any(direction == "hung up" for _, _, direction, _ in transcript.entries)


def test_bytes_from_the_model_that_the_server_never_sent_are_a_difference_not_an_error() -> None:
    from tpsharness.fuzz.compare import first_difference
    from tpsharness.fuzz.observations import Garbage, Seen
    found = first_difference([{"raw": Seen([Garbage(b"\x16\x03")])}], [{"raw": Seen()}], "raw")
    assert found == (0, "raw", "wrong status", "bytes that are not a TPS message: b'\\x16\\x03'",
                     "nothing", "garbage:none")


def test_a_restart_after_the_first_swaps_to_a_spare_server_already_listening() -> None:
    import socket
    server = ServerProcess(FAKE)
    server.start()
    try:
        first = server.address
        server.restart()            # the first restart: same port, and a spare starts
        assert server.address == first and server.alive()
        spare = server.spare_address
        assert spare is not None and spare != first

        def spare_listens() -> bool:
            try:
                socket.create_connection(spare, timeout=1).close()
                return True
            except OSError:
                return False
        assert wait_until(spare_listens, timeout=20)
        spare_process = server._spare_queue[0].process if server._spare_queue else None
        server.restart()
        assert server.address == spare and server._current is not None and server._current.process is spare_process and server.alive()
        assert server.spare_address not in (None, spare, first)
        next_spare = server._spare_queue[0].process if server._spare_queue else None
    finally:
        server.close()
    assert next_spare is not None and next_spare.poll() is not None     # close stops the spare too


def test_a_request_a_server_sends_an_actor_is_seen_as_garbage_not_an_error() -> None:
    from tpsharness.fuzz.observations import Garbage, Inbox
    from tpsharness.protocol import register_request
    inbox = Inbox()
    inbox.feed(register_request("cam-1"))
    assert inbox.seen.messages and isinstance(inbox.seen.messages[0], Garbage)


def test_garbage_on_both_sides_is_no_difference_whatever_its_bytes() -> None:
    # A cut register reply read as garbage carries UtcTime: its bytes differ run to run.
    from tpsharness.fuzz.compare import first_difference
    from tpsharness.fuzz.observations import Garbage, Seen
    model = Seen([Garbage(b'TTP/1.1 200 OK\r\n\r\n{"UtcTime": "2026-11-29 08:40:01"}')])
    server = Seen([Garbage(b'TTP/1.1 200 OK\r\n\r\n{"UtcTime": "2026-11-29 08:40:02"}')])
    assert first_difference([{"cam1": model}], [{"cam1": server}], "cam1") is None


def test_under_the_field_model_an_unfinished_message_counts_by_its_presence_only() -> None:
    # Where a field server cuts a large write depends on TCP's reads: its bytes differ.
    from tpsharness.fuzz.compare import first_difference
    from tpsharness.fuzz.observations import Seen
    model, server = Seen(tail=b"POST /PrivateData HTTP/1.1\r\nX" * 4), Seen(tail=b"y" * 120)
    assert first_difference([{"cam1": model}], [{"cam1": server}], "cam1", exact_tails=False) is None
    found = first_difference([{"cam1": model}], [{"cam1": server}], "cam1")
    assert found is not None and found[2] == "corrupted relay"
    assert first_difference([{"cam1": model}], [{"cam1": Seen()}], "cam1", exact_tails=False) is not None


def test_options_refuse_an_unknown_model_and_a_budget_of_nothing() -> None:
    from tpsharness.errors import InvalidArgument
    from tpsharness.fuzz.runner import Options
    with pytest.raises(InvalidArgument, match="model must be one of"):
        Options(target=("127.0.0.1", 1), model="bogus")
    with pytest.raises(InvalidArgument, match="budget"):
        Options(target=("127.0.0.1", 1), budget=0)


def test_ctrl_c_prints_what_was_found_so_far_and_exits_2() -> None:
    import signal
    fuzzer = subprocess.Popen([sys.executable, "-m", "tpsharness", "fuzz", "--budget", "60", "--seed", "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert fuzzer.stderr is not None
        seen = [fuzzer.stderr.readline()]       # the first progress line: programs are running
        while seen[-1] and not seen[-1].startswith("fuzz:") and len(seen) < 50:
            seen.append(fuzzer.stderr.readline())
        assert seen[-1].startswith("fuzz:"), seen
        fuzzer.send_signal(signal.SIGINT)
        out, err = fuzzer.communicate(timeout=20)
        err = "".join(seen) + err
    finally:
        fuzzer.kill()
        fuzzer.wait()
    assert fuzzer.returncode == 2, (out, err)
    assert "stopped by interrupt" in out and "found nothing" in out, out
    assert "interrupted" in err


def test_a_point_waiting_for_a_cut_message_sees_the_one_held() -> None:
    # The field model's cut relays: a point is satisfied by the bytes held, not only by
    # whole messages (it waited out every settle window before).
    from tpsharness.fuzz.observations import Inbox, Seen
    inbox = Inbox()
    inbox.feed(b"POST /PrivateData HTTP/1.1\r\nHost: x\r\n")
    assert inbox.satisfies(Seen(tail=b"POST /PrivateData HTTP/1.1\r\n"))
    assert not inbox.satisfies(Seen(tail=b"POST /PrivateData HTTP/1.1\r\nHost: x\r\nDestUuid: y\r\n"))
    assert inbox.satisfies(Seen(tail=b"POST /PrivateData HTTP/1.1\r\nHost: x\r\nDestUuid: y\r\n"), exact_tails=False)


def test_a_point_known_to_differ_for_good_stops_waiting() -> None:
    from tpsharness.fuzz.observations import Inbox, Reply, Seen
    from tpsharness.protocol import reply
    inbox = Inbox()
    assert not inbox.apart(Seen([Reply(200)]))         # nothing yet: it may still come
    inbox.feed(reply(404))
    assert inbox.apart(Seen([Reply(200)]))              # another status at its place
    assert not inbox.apart(Seen([Reply(404), Reply(200)]))
    closed = Inbox()
    closed.seen.closed = True
    assert closed.apart(Seen([Reply(200)])) and not closed.apart(Seen(closed=True))


def test_every_moment_of_a_run_belongs_to_one_phase() -> None:
    report = run_against(f"{FAKE} --fault die-on-dangling-entry", budget=60, max_findings=1, seed=1)
    assert set(report.phases) == {"explore", "shrink", "confirm", "restart"}
    assert abs(sum(report.phases.values()) - report.elapsed) < 0.05 * report.elapsed + 0.05
    assert report.phases["restart"] > 0 and report.phases["shrink"] > 0 and report.crashes > 0
    assert 0 < report.settle_waits < report.elapsed
    assert report.phase_steps["explore"] > 0 and report.exploring_steps_per_second > 0


def test_the_progress_line_and_the_summary_say_where_the_time_went() -> None:
    import io
    from tpsharness.fuzz.summary import print_summary, progress_printer, summary
    report = run_against(FAKE, budget=60, max_programs=30, seed=2)
    stream = io.StringIO()
    progress_printer(stream)(Report(elapsed=10.0, programs=1, phases=dict(report.phases)))
    assert re.search(r"explore \d+% shrink \d+% confirm \d+% restart \d+%, settle waits \d+%", stream.getvalue())
    out = io.StringIO()
    print_summary(report, ("127.0.0.1", 1), "strict", stream=out)
    assert re.search(r"time: exploring [\d.]+ s \(\d+%, \d+ steps/s\), shrinking [\d.]+ s .*restarting .*\n"
                     r" +of which waiting out settle windows [\d.]+ s \(\d+%\)", out.getvalue()), out.getvalue()
    data = summary(report, ("127.0.0.1", 1), "strict")
    assert set(data["phases"]) == set(report.phases) and data["exploring_steps_per_second"] > 0
    assert data["distinct_crashes"] == 0 and data["crash_bins"] == {}


def test_a_fixture_expects_no_silence_from_a_connection_the_model_closed() -> None:
    # The server answered (wrong status none:200) where the model closed: the close is
    # the expectation; an expect_nothing after it would fail against the model too.
    from tpsharness.fuzz.compare import Difference
    from tpsharness.fuzz.differential import Outcome
    from tpsharness.fuzz.observations import Seen
    from tpsharness.fuzz.programs import Program
    from tpsharness.fuzz.uuids import Uuids
    program = Program((("cam1", 0), ("cam2", 1), ("app", 2)),
                      (Step("register", "cam2", (("serial", 0), ("variant", "plain"))),))
    outcome = Outcome(program, Uuids("fz00000002"), "127.0.0.1:6604", model_points={0: [{"cam2": Seen(closed=True)}]},
                      features={0: "second-serial-unknown"}, connects={0})
    outcome.difference = Difference("wrong status", 0, "register", "second-serial-unknown", "cam2", "nothing more",
                                    "reply 200 (register reply, ErrorNum 200)", "none:200")
    steps = scenario_of(Finding("wrong-status/register/second-serial-unknown/none:200", outcome))["steps"]
    assert {"do": "expect_close", "actor": "cam2"} in steps
    assert not any(step["do"] == "expect_nothing" for step in steps)


def _second_serial_finding(features: dict[int, str]) -> Finding:
    from tpsharness.fuzz.compare import Difference
    from tpsharness.fuzz.differential import Outcome
    from tpsharness.fuzz.observations import Seen
    from tpsharness.fuzz.programs import Program
    from tpsharness.fuzz.uuids import Uuids
    program = Program((("cam1", 0), ("cam2", 1), ("app", 2)),
                      (Step("register", "cam2", (("serial", 0), ("variant", "plain"))),))
    outcome = Outcome(program, Uuids("fz00000003"), "127.0.0.1:6604",
                      model_points={0: [{"cam2": Seen(closed=True)}]}, features=features, connects={0})
    outcome.difference = Difference("wrong status", 0, "register", features[0], "cam2", "nothing more",
                                    "reply 200 (register reply, ErrorNum 200)", "none:200")
    return Finding(f"wrong-status/register/{features[0]}/none:200", outcome)


def test_a_field_model_finding_replays_against_the_field_profile_of_the_fake() -> None:
    finding = _second_serial_finding({0: "first"})
    assert scenario_of(finding, "field")["fake"] == {"profile": "field"}
    assert "fake" not in scenario_of(finding, "strict")
    assert "destructive" not in scenario_of(finding, "field")


def test_a_fixture_of_a_second_serial_or_of_a_run_that_crashed_is_destructive() -> None:
    assert scenario_of(_second_serial_finding({0: "second-serial-unknown"}), "field")["destructive"] is True
    assert scenario_of(_second_serial_finding({0: "first"}), "field", run_crashed=True)["destructive"] is True


def test_a_signal_left_over_from_a_command_line_run_does_not_stop_a_later_run_in_process() -> None:
    """A late SIGTERM during a CLI run's cleaning up stays on the switch; a later
    in-process run (the pytest fuzz entry, a test on the same xdist worker) ran 0 programs."""
    from tpsharness.fuzz.stopping import SWITCH
    SWITCH.arm()
    SWITCH.disarm()
    SWITCH.request("SIGTERM")       # disarmed: it only asks, and must not outlive the run
    server = FakeTPS()
    with server.start_in_thread():
        report = Fuzzer(Options(target=server.address, budget=1, seed=3, settle=0.05, max_programs=5)).run()
    assert report.programs == 5 and report.stopped_by != "SIGTERM"
