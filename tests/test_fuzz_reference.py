"""Differential runs between two servers (--reference, --reference-cmd), and seeds from
scenario files (--seeds): what each finds, what each skips, and that both repeat."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fake_tps import FakeTPS
from tpsharness.fuzz.fixture import write
from tpsharness.fuzz.process import ServerProcess
from tpsharness.fuzz.runner import Fuzzer, Options, Report
from tpsharness.fuzz.seeds import SeedBytes, load_seeds
from tpsharness.fuzz.uuids import Uuids
from tpsharness.scenario import ScenarioFailure, load, play

FAKE = f"exec {sys.executable} -m fake_tps --port {{port}}"
FIXTURES = Path(__file__).parent.parent / "fixtures"


def against_reference(server_command: str, reference_command: str, **options: object) -> Report:
    server, reference = ServerProcess(server_command), ServerProcess(reference_command)
    try:
        server.start()
        reference.start()
        return Fuzzer(Options(target=server.address, server=server, reference=reference.address,  # type: ignore[arg-type]
                              reference_server=reference, settle=0.1, **options)).run()
    finally:
        server.close()
        reference.close()


@pytest.mark.timeout(90)
def test_a_reference_run_finds_the_one_fault_between_two_fakes(tmp_path: Path) -> None:
    report = against_reference(f"{FAKE} --fault takeover-closes-newer", FAKE, budget=60, max_findings=1, seed=1)
    (signature, finding), = report.findings.items()
    assert signature.startswith("unexpected-close/") and finding.outcome.oracle == "reference"
    assert "the reference showed" in finding.difference.describe()
    path = write(finding, tmp_path)
    scenario = load(path)
    assert scenario.data["recorded"]["compared_with"] == "reference"
    faulty, right = FakeTPS(faults=["takeover-closes-newer"]), FakeTPS()
    with faulty.start_in_thread():
        with pytest.raises(ScenarioFailure):
            play(scenario, faulty.address, timeout=2)
    with right.start_in_thread():
        play(scenario, right.address, timeout=2)


def test_a_reference_run_between_two_identical_fakes_finds_nothing() -> None:
    report = against_reference(FAKE, FAKE, budget=60, max_programs=120, seed=4)
    assert report.programs == 120 and report.findings == {} and report.unrepeatable == []


def test_replies_are_compared_byte_for_byte_between_two_servers() -> None:
    # Another KeepAliveIntervel: the same status and ErrorNum, other bytes.
    report = against_reference(f"{FAKE} --keepalive-interval 60", FAKE, budget=20, max_findings=1, seed=2)
    (signature, finding), = report.findings.items()
    assert signature.startswith("reply-bytes/"), signature
    assert "Length: 305" in finding.difference.expected       # "120": one digit more than "60"
    assert "Length: 304" in finding.difference.got


@pytest.mark.timeout(90)
def test_the_model_judges_which_side_crashed() -> None:
    report = against_reference(FAKE, f"{FAKE} --fault die-on-long-header", budget=60, max_findings=1, seed=1)
    (signature, finding), = report.findings.items()
    assert signature.startswith("reference-crash/") and finding.difference.side == "reference"
    assert finding.evidence is not None and "SIGABRT" in finding.evidence.status


def test_the_command_line_takes_a_reference_and_refuses_two() -> None:
    done = subprocess.run([sys.executable, "-m", "tpsharness", "fuzz", "--server-cmd", FAKE, "--reference-cmd",
                           FAKE, "--max-programs", "30", "--seed", "1", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["reference"] and summary["findings"] == [] and summary["programs"] == 30
    both = subprocess.run([sys.executable, "-m", "tpsharness", "fuzz", "--reference", "127.0.0.1:1",
                           "--reference-cmd", FAKE], capture_output=True, text=True, timeout=30)
    assert both.returncode == 3 and "not both" in both.stderr


def test_the_repo_fixtures_are_all_seeds() -> None:
    seeds = load_seeds(FIXTURES)
    assert seeds.skipped == [] and len(seeds.programs) == len(list(FIXTURES.glob("*.tps.json")))
    by_name = dict(zip((Path(name).name for name in seeds.names), seeds.programs))
    takeover = by_name["test_second_serial_held_elsewhere_is_taken_over.tps.json"]
    assert [str(step) for step in takeover.steps if step.do == "register"] == [
        "cam1.register(serial=None, variant=plain)", "cam2.register(serial=None, variant=plain)",
        "cam1.register(serial=1, variant=plain)"]


def test_a_seed_s_bytes_take_the_run_s_uuids_and_keep_their_content_length_right(tmp_path: Path) -> None:
    (tmp_path / "test_auth.tps.json").write_text(json.dumps({
        "actors": {"cam": {"kind": "device", "uuid": "cam-from-the-field", "auth_code": "9999"}},
        "steps": [{"do": "connect", "actor": "cam"}, {"do": "register", "actor": "cam"},
                  {"do": "expect_reply", "actor": "cam", "status": 200}]}))
    (program,) = load_seeds(tmp_path).programs
    raw = program.steps[-1].get("raw")
    assert isinstance(raw, SeedBytes)
    data = raw.build(Uuids("fz12345678"), "127.0.0.1:1")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b'"SerialNumber": "fz12345678-u0"' in body and b'"AuthCode": "9999"' in body
    assert b"Content-Length: %d\r\n" % len(body) in head + b"\r\n"


def test_a_seed_s_tps_placeholder_is_the_address_played_against(tmp_path: Path) -> None:
    (tmp_path / "test_get.tps.json").write_text(json.dumps({
        "actors": {"raw": {"kind": "raw"}},
        "steps": [{"do": "send_raw", "actor": "raw", "data": "GET / HTTP/1.1\r\nHost: ${tps}\r\n\r\n"},
                  {"do": "expect_bytes", "actor": "raw", "data": "HTTP/1.1 400"}]}))
    (program,) = load_seeds(tmp_path).programs
    assert [step.do for step in program.steps] == ["send_raw"]       # expectations dropped
    assert program.steps[0].get("raw").build(Uuids("fz1"), "127.0.0.1:7") == b"GET / HTTP/1.1\r\nHost: 127.0.0.1:7\r\n\r\n"


@pytest.mark.parametrize("scenario, why", [
    ({"actors": {name: {"kind": "device"} for name in "abc"},
      "steps": [{"do": "connect", "actor": "a"}]}, "3 devices"),
    ({"actors": {"cam": {"kind": "device"}},
      "steps": [{"do": "connect", "actor": "cam"}, {"do": "wait", "seconds": 6}]}, "a wait of 6 s"),
    ({"actors": {"cam": {"kind": "device"}},
      "steps": [{"do": "register", "actor": "cam", "serial": serial} for serial in "wxyz"]}, "more than 3 uuids"),
    ({"actors": {"cam": {"kind": "device"}}, "steps": [{"do": "check_alive"}]}, "no step"),
    ({"actors": {}, "steps": []}, "at least one step"),
])
def test_a_scenario_the_fuzzer_cannot_express_is_skipped_with_its_reason(tmp_path: Path, scenario: object,
                                                                        why: str) -> None:
    (tmp_path / "test_odd.tps.json").write_text(json.dumps(scenario))
    seeds = load_seeds(tmp_path)
    assert seeds.programs == [] and len(seeds.skipped) == 1 and why in seeds.skipped[0][1], seeds.skipped


def test_seeds_from_the_fixtures_run_and_repeat_exactly() -> None:
    programs = tuple(load_seeds(FIXTURES).programs)
    runs = []
    for _ in range(2):
        server = ServerProcess(FAKE)
        server.start()
        try:
            runs.append(Fuzzer(Options(target=server.address, server=server, budget=60, max_programs=60, seed=3,
                                       settle=0.1, seeds=programs)).run())
        finally:
            server.close()
    assert runs[0].programs == 60 and runs[0].findings == {}
    assert runs[0].digest == runs[1].digest


def test_the_command_line_reports_each_seed_it_skips(tmp_path: Path) -> None:
    (tmp_path / "test_good.tps.json").write_text((FIXTURES / "test_relay_private_data.tps.json").read_text())
    (tmp_path / "test_bad.tps.json").write_text("{not json")
    done = subprocess.run([sys.executable, "-m", "tpsharness", "fuzz", "--seeds", str(tmp_path), "--max-programs",
                           "20", "--seed", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"--seeds: skipped {tmp_path / 'test_bad.tps.json'}: not JSON" in done.stderr
    assert f"--seeds: 1 programs from {tmp_path}" in done.stderr
    empty = subprocess.run([sys.executable, "-m", "tpsharness", "fuzz", "--seeds", str(tmp_path / "none")],
                           capture_output=True, text=True, timeout=30)
    assert empty.returncode == 3 and "not a directory" in empty.stderr
