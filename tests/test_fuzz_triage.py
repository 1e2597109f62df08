"""Crash triage: a dead server's exit status and last output name the cause that bins
its crashes; the planted crashes of the fake are found, binned apart and shrunk.

The outputs below are shortened copies of what real servers printed (a C++ TPS under
AddressSanitizer and without it, easylogging++'s crash handler, glibc, Python).
"""

import signal
import socket
import sys
from pathlib import Path

import pytest

from fake_tps import FakeTPS
from test_fuzz import run_against
from tpsharness.fuzz.fixture import scenario_of, write
from tpsharness.fuzz.process import ExitStatus, ServerProcess
from tpsharness.fuzz.triage import signature_of, triage
from tpsharness.protocol import private_data_request
from tpsharness.scenario import ScenarioFailure, load, play

FAKE = f"{sys.executable} -m fake_tps --port {{port}}"

ASAN_UAF = b"""[DEBUG | 2026-12-03 11:58:20,086] | srcid = app-1  destid = dev-A
=================================================================
==17644==ERROR: AddressSanitizer: heap-use-after-free on address 0x60300000c520 at pc 0x00000044c1df bp 0x7ffc8b0550e0 sp 0x7ffc8b0550d8
READ of size 8 at 0x60300000c520 thread T0
    #0 0x44c1de in Peer::handle_transmsg(bufferevent*, Peer*, char*) /src/device.cpp:86
    #1 0x406394 in bufev_read_cb(bufferevent*, void*) /src/commoncb.cpp:65
    #2 0x4a3ad9 in bufferevent_readcb /libevent-2.0.22-stable/bufferevent_sock.c:186
    #3 0x499a1e in event_base_loop /libevent-2.0.22-stable/event.c:1635

0x60300000c520 is located 0 bytes inside of 24-byte region [0x60300000c520,0x60300000c538)
freed by thread T0 here:
    #0 0x7fea39cb9f08 in operator delete(void*) ../../../../src/libsanitizer/asan/asan_new_delete.cpp:152
    #1 0x44e10b in Peer::handle_register(bufferevent*, Peer*, char*) /src/device.cpp:41

SUMMARY: AddressSanitizer: heap-use-after-free /src/device.cpp:86 in Peer::handle_transmsg(bufferevent*, Peer*, char*)
Shadow bytes around the buggy address:
  0x0c067fff9850: fd fd fd fd fa fa fd fd fd fd fa fa fd fd fd fd
==17644==ABORTING
"""
ASAN_ABRT = b"""tps_server_asan: ../..//src/json_value.cpp:713: std::string Json::Value::asString() const: Assertion `"Type is not convertible to std::string" && false' failed.
AddressSanitizer:DEADLYSIGNAL
=================================================================
==17821==ERROR: AddressSanitizer: ABRT on unknown address 0x00000000459d (pc 0x7f79d50a8eec bp 0x7f79d5ca67c0 sp 0x7ffcfa46fbc0 T0)
    #0 0x7f79d50a8eec in __pthread_kill_implementation nptl/pthread_kill.c:44
    #1 0x7f79d5059fb1 in __GI_raise ../sysdeps/posix/raise.c:26
    #2 0x7f79d5044471 in __GI_abort stdlib/abort.c:79
    #3 0x7f79d5044394 in __assert_fail_base assert/assert.c:94
    #4 0x7f79d5052ec1 in __GI___assert_fail assert/assert.c:103
    #5 0x48d108 in Json::Value::asString() const (/src/tps_server_asan+0x48d108)
    #6 0x44d734 in Peer::handle_register(bufferevent*, Peer*, char*) /src/device.cpp:27
    #7 0x406315 in bufev_read_cb(bufferevent*, void*) /src/commoncb.cpp:57

AddressSanitizer can not provide additional info.
SUMMARY: AddressSanitizer: ABRT nptl/pthread_kill.c:44 in __pthread_kill_implementation
==17821==ABORTING
"""
ASSERTION = b"""[INFO  | 2026-12-03 11:58:10,830] | wait for redis_update
tps_server: ../..//src/json_value.cpp:713: std::string Json::Value::asString() const: Assertion `"Type is not convertible to std::string" && false' failed.
"""
HANDLER = b"""[DEBUG | 2026-12-03 11:57:56,947] | srcid = fz1a2b3c4d-u1  destid = fz1a2b3c4d-u0
[FATAL | 2026-12-03 11:57:56,947] | CRASH HANDLED; Application has crashed due to [SIGSEGV] signal
[WARN  | 2026-12-03 11:57:56,947] | Aborting application. Reason: Fatal log at [../include/easylogging++.h:5583]
"""
TERMINATE = b"""serving on 6604
terminate called after throwing an instance of 'std::length_error'
  what():  basic_string::_M_create
"""
PYTHON = b"""Traceback (most recent call last):
  File "/srv/tps/server.py", line 88, in serve
    handle(message)
  File "/srv/tps/handlers.py", line 12, in handle
    serial = message["Body"]["SerialNumber"].strip()
AttributeError: 'int' object has no attribute 'strip'
"""
DOUBLE_FREE = b"free(): double free detected in tcache 2\n"
UBSAN = b"src/table.c:41:12: runtime error: signed integer overflow: 2147483647 + 1 cannot be represented in type 'int'\n"


@pytest.mark.parametrize("output, status, kind, where", [
    (ASAN_UAF, ExitStatus(code=1), "AddressSanitizer: heap-use-after-free",
     "Peer::handle_transmsg(bufferevent*, Peer*, char*)  device.cpp:86"),
    (ASAN_ABRT, ExitStatus(code=1), "AddressSanitizer: ABRT on unknown address",
     "Json::Value::asString() const  tps_server_asan"),
    (TERMINATE, ExitStatus(signal=signal.SIGABRT), "uncaught std::length_error", None),
    (ASSERTION, ExitStatus(code=134), "assertion failed", None),
    (PYTHON, ExitStatus(code=1), "Python AttributeError", "handle  handlers.py:12"),
    (DOUBLE_FREE, ExitStatus(signal=signal.SIGABRT), "glibc: free(): double free detected in tcache 2", None),
    (UBSAN, ExitStatus(code=1), "UndefinedBehaviorSanitizer: signed integer overflow: N + N cannot be "
                                "represented in type 'int' at table.c:41:12", None),
    (HANDLER, ExitStatus(signal=signal.SIGABRT), "SIGSEGV (caught by the server's own handler)", None),
])
def test_a_crash_report_is_recognised_with_its_first_own_frame(output: bytes, status: ExitStatus, kind: str,
                                                                where: str | None) -> None:
    evidence = triage(status, output, shape="send/to-device")
    assert evidence.kind == kind
    assert (evidence.frames[0] if evidence.frames else None) == where
    assert evidence.tail and evidence.tail[-1] == output.decode().strip().splitlines()[-1][:200]


def test_runtime_frames_are_skipped_so_an_abort_is_known_by_where_it_was_called() -> None:
    evidence = triage(ExitStatus(code=1), ASAN_ABRT)
    assert [frame.split("  ")[0] for frame in evidence.frames] == [
        "Json::Value::asString() const", "Peer::handle_register(bufferevent*, Peer*, char*)",
        "bufev_read_cb(bufferevent*, void*)"]
    assert signature_of(evidence).startswith("crash/ABRT/Json::Value::asString@")


def test_two_runs_of_one_bug_share_a_bin_whatever_varies_between_them() -> None:
    other = (ASAN_UAF.replace(b"17644", b"20211").replace(b"0x60300000c520", b"0x60300000d110")
             .replace(b"app-1", b"app-9"))
    assert triage(ExitStatus(code=1), ASAN_UAF).cause == triage(ExitStatus(code=1), other).cause
    renamed = HANDLER.replace(b"fz1a2b3c4d", b"fz99990000").replace(b"11:57:56,947", b"12:01:02,003")
    assert triage(ExitStatus(signal=6), HANDLER, "send/to-self").cause == \
        triage(ExitStatus(signal=6), renamed, "send/to-self").cause


def test_different_causes_get_different_bins() -> None:
    causes = {triage(ExitStatus(code=1), ASAN_UAF).cause, triage(ExitStatus(code=1), ASAN_ABRT).cause,
              triage(ExitStatus(signal=6), TERMINATE).cause, triage(ExitStatus(signal=6), ASSERTION).cause}
    assert len(causes) == 4


def test_where_the_evidence_is_only_a_signal_the_crashing_step_tells_bins_apart() -> None:
    # A handler that caught SIGSEGV says nothing of where: two steps, two bins.
    assert triage(ExitStatus(signal=6), HANDLER, "send/to-self").cause != \
        triage(ExitStatus(signal=6), HANDLER, "register/second-serial-unknown").cause
    # A report with frames does not need the step: one bug, one bin.
    assert triage(ExitStatus(code=1), ASAN_UAF, "send/to-self").cause == \
        triage(ExitStatus(code=1), ASAN_UAF, "register/first").cause


def test_a_crash_with_no_report_that_echoes_its_input_is_one_bin_whatever_the_input() -> None:
    def cause(last_line: str) -> str:
        return triage(ExitStatus(signal=11), f"serving\n{last_line}\n".encode(), "send_raw/register").cause

    echoes = {cause(f"bad header value: {value}")
              for value in ("A" * 1025, "%n%n%s", "'true'", '"\\u0000"', "\x82\xaea\xce", "-1e309")}
    assert len(echoes) == 1, echoes
    assert cause("fatal: out of memory") != cause("fatal: bad state")


def test_a_python_traceback_is_binned_by_function_not_by_line_number() -> None:
    moved = PYTHON.replace(b"line 88", b"line 90").replace(b"line 12", b"line 14")
    assert triage(ExitStatus(code=1), PYTHON).cause == triage(ExitStatus(code=1), moved).cause


def test_a_shell_s_report_of_a_signal_is_read_as_that_signal() -> None:
    assert str(ExitStatus(code=139)) == "exited with status 139 (a shell's report of SIGSEGV)"
    assert ExitStatus(code=134).signal_name == "SIGABRT" and ExitStatus(code=2).signal_name is None
    assert str(ExitStatus(signal=11)) == "killed by SIGSEGV"
    assert "still running" in triage(None, b"").status


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault, status, last", [
    ("die-on-auth-code-type", "exited with status 1", "ABORTING"),
    ("die-on-long-header", "killed by SIGABRT", "what():  basic_string::_M_create"),
])
def test_a_planted_crash_is_found_triaged_and_shrunk_to_one_step(fault: str, status: str, last: str,
                                                                tmp_path: Path) -> None:
    report = run_against(f"exec {FAKE} --fault {fault}", budget=60, max_findings=1, seed=1)
    (signature, finding), = report.findings.items()
    assert signature.startswith("crash/") and finding.evidence is not None
    assert status in finding.evidence.status and finding.evidence.tail[-1].endswith(last)
    ran = [step for step, did in finding.listing() if did]
    assert len(ran) <= 3, str(finding.program)
    if fault == "die-on-long-header":       # the smallest value of its class that still kills it
        assert "long(1025)" in str(finding.program), str(finding.program)
    scenario = scenario_of(finding)
    assert scenario["destructive"] is True
    assert scenario["recorded"]["evidence"]["status"] == finding.evidence.status
    assert finding.evidence.describe() in scenario["description"]
    faulty = FakeTPS(faults=[fault])
    with faulty.start_in_thread():          # in a thread a planted crash only stops serving
        with pytest.raises(ScenarioFailure):
            play(load(write(finding, tmp_path)), faulty.address, timeout=2)
    assert faulty.crash is not None


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_both_planted_crashes_together_are_two_findings_each_with_its_own_status_and_last_line() -> None:
    report = run_against(f"exec {FAKE} --fault die-on-auth-code-type --fault die-on-long-header",
                         budget=90, max_findings=2, seed=1)
    assert len(report.findings) == 2 and report.distinct_crashes == 2, list(report.findings)
    evidence = [finding.evidence for finding in report.findings.values()]
    assert all(item is not None for item in evidence)
    assert len({item.status for item in evidence if item}) == 2
    assert len({item.tail[-1] for item in evidence if item}) == 2
    assert report.crashes >= 2 and sum(report.bins.values()) == report.crashes


def test_a_planted_crash_ends_python_m_fake_tps_with_its_report_and_signal(tmp_path: Path) -> None:
    server = ServerProcess(f"cd '{tmp_path}' && exec {FAKE} --fault die-on-long-header")
    server.start()
    try:
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(private_data_request("a", "b" * 1025, b"x"))
            sock.settimeout(5)
            assert sock.recv(100) == b""
        status = server.wait_exit(10)
        assert server.output_settled(5)
        output = server.output()
    finally:
        server.close()
    assert status == ExitStatus(signal=signal.SIGABRT)
    assert output.endswith(b"terminate called after throwing an instance of 'std::length_error'\n"
                           b"  what():  basic_string::_M_create\n")
    assert not list(tmp_path.glob("core*"))      # a planted crash leaves no core file


def test_a_report_showing_asan_s_malloc_fill_gets_a_hint() -> None:
    from tpsharness.fuzz.triage import MALLOC_FILL_HINT, hint
    report = (b"==7==ERROR: AddressSanitizer: BUS on unknown address (pc 0x7f0 bp 0xbebebebebebebebe sp 0x7ff)\n"
              b"    #0 0x7f0 in event_del (/lib/libevent-2.1.so.7+0x1e4d4)\n")
    assert hint(triage(ExitStatus(code=1), report)) == MALLOC_FILL_HINT
    assert hint(triage(ExitStatus(code=1), report.replace(b"bebebebebebebebe", b"7ffd12345678"))) is None
