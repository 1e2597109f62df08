"""The pytest plugin, tested with pytest's own pytester: options, fixtures,
teardown, scenario files, xdist, the conformance suite."""

import json
import re
import subprocess
import sys

import pytest

from conftest import wait_until
from fake_tps.server import FakeTPS
from tpsharness.scenario import json_schema, load, validate

SCENARIO_OK = {
    "description": "a device registers and receives private data",
    "actors": {"cam": {"kind": "device"}, "app": {"kind": "client"}},
    "steps": [
        {"do": "connect", "actor": "cam"},
        {"do": "register", "actor": "cam"},
        {"do": "expect_reply", "actor": "cam", "status": 200, "fields": {"ErrorNum": "200"}},
        {"do": "connect", "actor": "app"},
        {"do": "send", "actor": "app", "to": "cam", "payload": "hello"},
        {"do": "expect_reply", "actor": "app", "status": 200},
        {"do": "expect_receipt", "actor": "cam", "payload": "hello", "from": "app"},
    ],
}


def write_scenario(pytester, name, data):
    directory = pytester.path / "fixtures"
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


# -- options ----------------------------------------------------------------------------------

def test_without_tps_the_bundled_fake_serves_on_loopback(pytester):
    pytester.makepyfile("""
        def test_address(tps_address):
            host, port = tps_address
            assert host == "127.0.0.1" and port > 0
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["tps: the bundled fake TPS*"])


def test_tps_option_names_the_server_under_test(pytester):
    pytester.makepyfile("""
        def test_address(tps_address):
            assert tps_address == ("192.0.2.7", 6604)
    """)
    pytester.runpytest("--tps", "192.0.2.7:6604").assert_outcomes(passed=1)


def test_environment_variables_are_the_fallback(pytester, monkeypatch):
    monkeypatch.setenv("TPS_ADDRESS", "[::1]:7000")
    monkeypatch.setenv("TPS_TIMEOUT", "2.5")
    pytester.makepyfile("""
        def test_address(tps_address, tps):
            assert tps_address == ("::1", 7000)
            assert tps.timeout == 2.5
    """)
    pytester.runpytest().assert_outcomes(passed=1)


def test_tps_fake_only_tests_are_skipped_against_a_real_server(pytester):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.tps_fake_only
        def test_needs_the_fake(tps_address):
            pass
    """)
    pytester.runpytest().assert_outcomes(passed=1)
    result = pytester.runpytest("--tps", "192.0.2.7:6604", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs the bundled fake TPS*"])


def test_a_malformed_tps_address_is_a_usage_error(pytester):
    pytester.makepyfile("def test_nothing(tps_address): pass")
    result = pytester.runpytest("--tps", "no-port-here")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--tps / TPS_ADDRESS expects HOST:PORT, got 'no-port-here'*"])


# -- fixtures ---------------------------------------------------------------------------------

def test_the_tps_harness_drives_devices_clients_and_raw_connections(pytester):
    pytester.makepyfile("""
        from tpsharness.protocol import register_request

        def test_conversation(tps):
            dev = tps.device()
            cli = tps.client()
            assert cli.send(dev.serial, b"hello").status == 200
            assert dev.receive(timeout=2) == b"hello"
            assert dev.heartbeat().ok
            dev.send(cli.src, b"answer")
            assert cli.receive() == b"answer"
            raw = tps.raw()
            raw.send(b"GET / HTTP/1.1\\r\\n\\r\\n")
            assert raw.next_reply().status == 400
            assert tps.check().ok
    """)
    pytester.runpytest().assert_outcomes(passed=1)


def test_fake_tps_fixture_gives_a_fresh_configurable_fake(pytester):
    pytester.makepyfile("""
        from tpsharness import check

        def test_fault(fake_tps):
            fake_tps.configure(faults=["drop-relays"])
            result = check(*fake_tps.address, timeout=0.5)
            assert result.stage == "receipt"
            assert fake_tps.stats.relays == 0

        def test_fresh_again(fake_tps):
            assert fake_tps.faults == frozenset() and fake_tps.stats.connections == 0
    """)
    pytester.runpytest().assert_outcomes(passed=2)


def test_teardown_closes_everything_even_when_the_test_fails(pytester, fake):
    pytester.makepyfile("""
        def test_fails_with_connections_open(tps):
            devices = [tps.device() for _ in range(3)]
            client = tps.client()
            client.send(devices[0].serial, b"x")
            assert False, "failing on purpose"
    """)
    result = pytester.runpytest("--tps", f"127.0.0.1:{fake.address[1]}")
    result.assert_outcomes(failed=1)
    assert fake.stats.connections == 4
    assert wait_until(lambda: fake.stats.open_connections == 0), fake.stats


def test_a_failure_shows_what_the_bundled_fake_saw(pytester):
    pytester.makepyfile("""
        def test_sends_garbage_then_fails(tps):
            raw = tps.raw()
            raw.send(b"GARBAGE\\r\\n\\r\\n")
            raw.next_reply()
            assert False, "the cause is in the fake's report"
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Captured fake TPS call*", "400 to 127.0.0.1:*: not an HTTP request line*"])


def test_serials_are_unique_per_xdist_worker(pytester):
    pytester.makepyfile("""
        import os
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_device(tps, n):
            dev = tps.device()
            assert dev.serial.startswith("tpsharness-" + os.environ["PYTEST_XDIST_WORKER"] + "-")
            tps.client().send(dev.serial, b"%d" % n)
            assert dev.receive() == b"%d" % n
    """)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)


# -- scenario files ---------------------------------------------------------------------------

def test_scenario_files_in_fixtures_are_collected_one_item_each(pytester):
    write_scenario(pytester, "hello_relay", SCENARIO_OK)
    write_scenario(pytester, "second", SCENARIO_OK)
    (pytester.path / "fixtures" / "scenario.schema.json").write_text("{}")
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*fixtures/hello_relay.json::hello_relay PASSED*"])


def test_a_malformed_scenario_names_the_file_and_the_step(pytester):
    broken = json.loads(json.dumps(SCENARIO_OK))
    broken["steps"][2]["stauts"] = 200
    write_scenario(pytester, "typo", broken)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*fixtures/typo.json: step 3 (expect_reply): unknown field 'stauts'*"])


def test_a_failing_scenario_shows_the_step_expected_arrived_and_the_wire(pytester):
    wrong = json.loads(json.dumps(SCENARIO_OK))
    wrong["steps"][-1]["payload"] = "something else"
    write_scenario(pytester, "mismatch", wrong)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*fixtures/mismatch.json: step 7 (cam: expect_receipt)",
        "*expected: payload b'something else'",
        "*arrived:  payload b'hello'",
        "*transcript:",
        "*cam    >> b'POST /TransProxy HTTP/1.1*",
    ])


def test_a_failure_in_a_repeated_step_names_the_right_step(pytester):
    twice = {"actors": {"app": {"kind": "client"}},
             "steps": [{"do": "connect", "actor": "app"},
                       {"do": "send", "actor": "app", "to": "tpsharness-nobody", "payload": "x"},
                       {"do": "expect_reply", "actor": "app", "status": 404},
                       {"do": "send", "actor": "app", "to": "tpsharness-nobody", "payload": "x"},
                       {"do": "expect_reply", "actor": "app", "status": 404},
                       {"do": "expect_reply", "actor": "app", "status": 404, "within": 0.2}]}
    write_scenario(pytester, "repeated", twice)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*fixtures/repeated.json: step 6 (app: expect_reply)"])


def test_a_scenario_with_fake_options_gets_its_own_fake_and_is_skipped_against_a_real_tps(pytester):
    silent = {"fake": {"faults": ["silent"]}, "actors": {"cam": {"kind": "device"}},
              "steps": [{"do": "connect", "actor": "cam"}, {"do": "register", "actor": "cam"},
                        {"do": "expect_nothing", "actor": "cam", "for": 0.2}]}
    write_scenario(pytester, "silent", silent)
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.runpytest("--tps", "127.0.0.1:1").assert_outcomes(skipped=1)


@pytest.mark.parametrize("data, message", [
    ("{not json", "not JSON"),
    ({"steps": []}, "top level: missing field 'actors'"),
    ({"actors": {}, "steps": []}, "steps: a scenario needs at least one step"),
    ({"actors": {"x": {"kind": "robot"}}, "steps": [{"do": "wait", "seconds": 1}]}, "'kind' must be one of"),
    ({"actors": {}, "steps": [{"do": "explode"}]}, "step 1 (explode): unknown step 'explode'"),
    ({"actors": {"c": {"kind": "client"}}, "steps": [{"do": "register", "actor": "c"}]},
     "step 1 (register): a client cannot 'register'"),
    ({"actors": {}, "steps": [{"do": "wait"}]}, "step 1 (wait): missing field 'seconds'"),
    ({"actors": {}, "steps": [{"do": "connect", "actor": "ghost"}]}, "unknown actor 'ghost'"),
    ({"actors": {"r": {"kind": "raw"}}, "steps": [{"do": "send_raw", "actor": "r"}]},
     "exactly one of 'data' and 'data_hex'"),
    ({"actors": {"r": {"kind": "raw"}}, "steps": [{"do": "expect_reply", "actor": "r", "status": "200"}]},
     "'status' must be a number"),
])
def test_the_loader_explains_what_is_malformed(tmp_path, data, message):
    from tpsharness.errors import ScenarioError
    path = tmp_path / "fixtures" / "case.json"
    path.parent.mkdir()
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(ScenarioError) as caught:
        load(path)
    assert str(caught.value).startswith(str(path)) and message in str(caught.value)


def test_the_shipped_schema_is_the_one_the_loader_enforces():
    from pathlib import Path
    shipped = Path(__file__).parent.parent / "fixtures" / "scenario.schema.json"
    assert json.loads(shipped.read_text()) == json_schema()


# -- record -------------------------------------------------------------------------------------

def test_record_writes_a_scenario_that_replays(pytester, fake):
    out = pytester.path / "fixtures" / "incident.json"
    result = subprocess.run([sys.executable, "-m", "tpsharness", "record", *map(str, fake.address),
                             "-o", str(out), "--scenario", "check"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    scenario = validate(json.loads(out.read_text()))
    assert [step["do"] for step in scenario["steps"]][-1] == "expect_receipt"
    pytester.runpytest("--tps", f"127.0.0.1:{fake.address[1]}").assert_outcomes(passed=1)


def test_record_of_a_failing_server_writes_what_it_did(tmp_path):
    server = FakeTPS(faults=["drop-relays"])
    with server.start_in_thread():
        out = tmp_path / "dropped.json"
        result = subprocess.run([sys.executable, "-m", "tpsharness", "record", *map(str, server.address),
                                 "-o", str(out), "-t", "1"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    last = json.loads(out.read_text())["steps"][-1]
    assert last["do"] == "expect_nothing" and "sent no private data" in last["note"]


def test_record_refuses_to_overwrite_without_force(tmp_path, fake):
    out = tmp_path / "exists.json"
    out.write_text("{}")
    result = subprocess.run([sys.executable, "-m", "tpsharness", "record", *map(str, fake.address),
                             "-o", str(out)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 3 and "exists" in result.stderr
    assert out.read_text() == "{}"


# -- the conformance suite ------------------------------------------------------------------------

def run_conformance(*args):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "--pyargs", "tpsharness.conformance", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_conformance_passes_completely_against_the_bundled_fake():
    result = run_conformance()
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"\b29 passed in", result.stdout), result.stdout[-500:]
    assert "xfail" not in result.stdout and "skipped" not in result.stdout


@pytest.mark.slow
def test_conformance_reports_field_framing_as_xfails_with_reasons():
    server = FakeTPS(faults=["one-read-one-message"])
    with server.start_in_thread():
        result = run_conformance("--tps", f"127.0.0.1:{server.address[1]}", "-rx")
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"\b25 passed, 4 xfailed", result.stdout), result.stdout[-1500:]
    assert "answered 1 of 2 registers sent in one segment" in result.stdout
    assert "answered [400, 400] to a register split across two segments" in result.stdout
    assert "the device received 4096 bytes of a 65536-byte request" in result.stdout


@pytest.mark.slow
def test_conformance_says_plainly_when_the_server_dies():
    server = FakeTPS(faults=["die-on-dangling-entry"])
    with server.start_in_thread():
        result = run_conformance("--tps", f"127.0.0.1:{server.address[1]}", "-x")
    assert result.returncode == 1
    assert "the TPS died after private data to a serial whose connection re-registered" in result.stdout
    assert "stopped accepting connections during this test" in result.stdout
