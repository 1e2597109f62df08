"""The pytest plugin, tested with pytest's own pytester: options, fixtures,
teardown, scenario files, xdist, the conformance suite."""

import json
import re
import subprocess
import sys

import pytest

from conftest import wait_until
from fake_tps import FakeTPS
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


def write_scenario(pytester, name, data, folder="fixtures"):
    directory = pytester.path / folder
    directory.mkdir(exist_ok=True, parents=True)
    path = directory / f"test_{name}.tps.json"
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


def test_tps_option_names_the_server_under_test(pytester, fake):
    port = fake.address[1]
    pytester.makepyfile(f"""
        def test_address(tps_address):
            assert tps_address == ("127.0.0.1", {port})
    """)
    pytester.runpytest("--tps", f"127.0.0.1:{port}").assert_outcomes(passed=1)


def test_environment_variables_are_the_fallback(pytester, monkeypatch):
    server = FakeTPS(host="::1")
    with server.start_in_thread():
        port = server.address[1]
        monkeypatch.setenv("TPS_ADDRESS", f"[::1]:{port}")
        monkeypatch.setenv("TPS_TIMEOUT", "2.5")
        pytester.makepyfile(f"""
            def test_address(tps_address, tps):
                assert tps_address == ("::1", {port})
                assert tps.timeout == 2.5
        """)
        pytester.runpytest().assert_outcomes(passed=1)


def test_tps_fake_only_tests_are_skipped_against_a_real_server(pytester, fake):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.tps_fake_only
        def test_needs_the_fake(tps_address):
            pass
    """)
    pytester.runpytest().assert_outcomes(passed=1)
    result = pytester.runpytest("--tps", "%s:%d" % fake.address, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs the bundled fake TPS*"])


@pytest.mark.parametrize("address", ["no-port-here", "[::1", "[::1:6604", "::1]:6604", "h:٦٦٠٤"])
def test_a_malformed_tps_address_is_a_usage_error(pytester, address):
    pytester.makepyfile("def test_nothing(tps_address): pass")
    result = pytester.runpytest("--tps", address)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--tps / TPS_ADDRESS expects HOST:PORT, got {address!r}*"])


@pytest.mark.parametrize("value", ["-1", "0", "inf", "nan", "1e9", "soon"])
def test_a_bad_tps_timeout_is_a_one_line_usage_error(pytester, monkeypatch, value):
    pytester.makepyfile("def test_nothing(tps): pass")
    result = pytester.runpytest("--tps-timeout", value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines([f"ERROR: --tps-timeout must be seconds, more than 0 and at most 600; "
                                 f"got {value!r}"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    monkeypatch.setenv("TPS_TIMEOUT", value)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: TPS_TIMEOUT must be seconds, more than 0 and at most 600; "
                                 f"got {value!r}"])


def test_a_bad_tps_destructive_switch_is_a_usage_error(pytester, monkeypatch):
    pytester.makepyfile("def test_nothing(): pass")
    monkeypatch.setenv("TPS_DESTRUCTIVE", "yes please")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: TPS_DESTRUCTIVE must be 1 or 0, got 'yes please'"])


# -- fixtures ---------------------------------------------------------------------------------

def test_the_tps_harness_drives_devices_clients_and_raw_connections(pytester):
    pytester.makepyfile("""
        from tpsharness.protocol import register_request

        def test_conversation(tps):
            dev = tps.device()
            cli = tps.client()
            assert cli.send(dev.uuid, b"hello").status == 200
            assert dev.receive(timeout=2).body == b"hello"
            assert dev.heartbeat().ok
            dev.send(cli.uuid, b"answer")
            assert cli.receive().body == b"answer"
            raw = tps.raw()
            raw.send_raw(b"GET / HTTP/1.1\\r\\n\\r\\n")
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
            client.send(devices[0].uuid, b"x")
            assert False, "failing on purpose"
    """)
    result = pytester.runpytest("--tps", f"127.0.0.1:{fake.address[1]}")
    result.assert_outcomes(failed=1)
    assert fake.stats.connections == 4 + 2        # and the plugin's probes, before and after
    assert wait_until(lambda: fake.stats.open_connections == 0), fake.stats


def test_a_failure_shows_what_the_bundled_fake_saw(pytester):
    pytester.makepyfile("""
        def test_sends_garbage_then_fails(tps):
            raw = tps.raw()
            raw.send_raw(b"GARBAGE\\r\\n\\r\\n")
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
            assert dev.uuid.startswith("tpsharness-" + os.environ["PYTEST_XDIST_WORKER"] + "-")
            tps.client().send(dev.uuid, b"%d" % n)
            assert dev.receive().body == b"%d" % n
    """)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)


# -- scenario files ---------------------------------------------------------------------------

def test_scenario_files_are_collected_one_item_each(pytester):
    write_scenario(pytester, "hello_relay", SCENARIO_OK)
    write_scenario(pytester, "second", SCENARIO_OK, folder="tests/deeper")
    (pytester.path / "fixtures" / "scenario.schema.json").write_text("{}")
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*fixtures/test_hello_relay.tps.json::test_hello_relay PASSED*"])
    result.stdout.fnmatch_lines(["*tests/deeper/test_second.tps.json::test_second PASSED*"])


def test_only_the_plugins_own_file_names_are_collected(pytester):
    """Another project's JSON is never taken for a scenario, even under a folder named
    fixtures, even when it looks like one."""
    for name in ("tests/fixtures/user.json", "fixtures/relay.json", "fixtures/relay.tps.json",
                 "fixtures/test_relay.json"):
        (pytester.path / name).parent.mkdir(parents=True, exist_ok=True)
        (pytester.path / name).write_text(json.dumps(SCENARIO_OK))
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED, result.stdout.str()
    write_scenario(pytester, "relay", SCENARIO_OK, folder="tests/fixtures")
    pytester.runpytest().assert_outcomes(passed=1)


def test_a_malformed_scenario_names_the_file_and_the_step(pytester):
    broken = json.loads(json.dumps(SCENARIO_OK))
    broken["steps"][2]["stauts"] = 200
    write_scenario(pytester, "typo", broken)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*fixtures/test_typo.tps.json: step 3 (expect_reply): unknown field 'stauts'*"])


def test_a_failing_scenario_shows_the_step_expected_arrived_and_the_wire(pytester):
    wrong = json.loads(json.dumps(SCENARIO_OK))
    wrong["steps"][-1]["payload"] = "something else"
    write_scenario(pytester, "mismatch", wrong)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*fixtures/test_mismatch.tps.json: step 7 (cam: expect_receipt)",
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
    result.stdout.fnmatch_lines(["*fixtures/test_repeated.tps.json: step 6 (app: expect_reply)"])


def test_a_scenario_with_fake_options_gets_its_own_fake_and_is_skipped_against_a_real_tps(pytester, fake):
    silent = {"fake": {"faults": ["silent"]}, "actors": {"cam": {"kind": "device"}},
              "steps": [{"do": "connect", "actor": "cam"}, {"do": "register", "actor": "cam"},
                        {"do": "expect_nothing", "actor": "cam", "for": 0.2}]}
    write_scenario(pytester, "silent", silent)
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.runpytest("--tps", "%s:%d" % fake.address).assert_outcomes(skipped=1)


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


# -- destructive tests, and a TPS that dies ------------------------------------------------------

DESTRUCTIVE_TESTS = """
    import pytest

    ORDER = []

    @pytest.mark.destructive
    def test_may_kill(tps_address):
        ORDER.append("may_kill")

    def test_harmless(tps_address):
        ORDER.append("harmless")

    def test_runs_before_the_destructive_ones():
        assert ORDER == ["harmless"], ORDER
"""


def test_destructive_tests_are_skipped_against_a_real_tps_saying_how_to_run_them(pytester, fake):
    pytester.makepyfile(DESTRUCTIVE_TESTS)
    write_scenario(pytester, "may_kill", {**SCENARIO_OK, "destructive": True})
    result = pytester.runpytest("--tps", f"127.0.0.1:{fake.address[1]}", "-rs")
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(["SKIPPED*destructive: may kill the TPS under test; against a real TPS it "
                                 "runs only with --tps-destructive (or TPS_DESTRUCTIVE=1)*"])


@pytest.mark.parametrize("how", ["option", "environment", "bundled fake"])
def test_destructive_tests_run_last_when_enabled_or_against_the_bundled_fake(pytester, fake, monkeypatch, how):
    pytester.makepyfile(DESTRUCTIVE_TESTS)
    write_scenario(pytester, "may_kill", {**SCENARIO_OK, "destructive": True})
    args = ["--tps", f"127.0.0.1:{fake.address[1]}"]
    if how == "option":
        args.append("--tps-destructive")
    elif how == "environment":
        monkeypatch.setenv("TPS_DESTRUCTIVE", "1")
    else:
        args = []
    result = pytester.runpytest("-v", *args)
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*::test_harmless PASSED*", "*::test_runs_before_the_destructive_ones PASSED*",
                                 "*::test_may_kill PASSED*", "*::test_may_kill PASSED*"])


KILLING_TESTS = """
    import pytest
    from tpsharness.errors import TPSError
    from tpsharness.protocol import private_data_request, register_request

    @pytest.mark.destructive
    def test_b_kills_the_server(tps):
        # the fault die-on-dangling-entry dies as a field server did: a second serial
        # on one connection, then private data for the first
        device = tps.device()
        device.send_raw(register_request(device.uuid + "-other"))
        assert device.closed_by_server(timeout=3)
        raw = tps.raw()
        raw.send_raw(private_data_request("tpsharness-app-x", device.uuid, b"boom"))
        with pytest.raises(TPSError):       # closed: the server is gone
            raw.next_reply(timeout=3)

    def test_a_harmless(tps):
        assert tps.check().ok

    @pytest.mark.destructive
    def test_c_after_the_death(tps):
        raise AssertionError("must not run: the TPS is dead")

    @pytest.mark.destructive
    def test_d_without_the_tps():
        pass
"""


def test_when_the_tps_dies_that_test_fails_and_every_later_one_is_skipped(pytester):
    pytester.makepyfile(test_killing=KILLING_TESTS)
    write_scenario(pytester, "later_scenario", {**SCENARIO_OK, "destructive": True}, folder=".")
    server = FakeTPS(faults=["die-on-dangling-entry"])
    with server.start_in_thread():
        host, port = server.address
        result = pytester.runpytest("--tps", f"{host}:{port}", "--tps-destructive", "-rs", "-v")
    result.assert_outcomes(passed=2, failed=1, skipped=2)
    result.stdout.fnmatch_lines([
        "*::test_a_harmless PASSED*",
        "*::test_b_kills_the_server FAILED*",
        "*::test_c_after_the_death SKIPPED*",
        "*::test_d_without_the_tps PASSED*",
        "test_later_scenario.tps.json::test_later_scenario SKIPPED*",
    ])
    result.stdout.fnmatch_lines([
        f"the TPS at {host}:{port} stopped accepting connections during this test (Connection refused): it died"])
    result.stdout.fnmatch_lines(["SKIPPED*the TPS died during test_killing.py::test_b_kills_the_server"] * 2)
    assert "must not run" not in result.stdout.str()


def test_a_tps_that_dies_during_an_ordinary_test_skips_the_rest(pytester):
    """Not only destructive tests: whatever kills the TPS is named, and what follows
    is skipped instead of failing one by one with 'refused the connection'."""
    pytester.makepyfile(test_killing=KILLING_TESTS.replace("@pytest.mark.destructive", ""))
    server = FakeTPS(faults=["die-on-dangling-entry"])
    with server.start_in_thread():
        result = pytester.runpytest("--tps", "%s:%d" % server.address, "-rs")
    result.assert_outcomes(passed=1, failed=1, skipped=2)
    result.stdout.fnmatch_lines(["SKIPPED*test_killing.py:*: the TPS died during "
                                 "test_killing.py::test_b_kills_the_server"] * 2)


class DyingListener:
    """A listener that keeps the first ``healthy`` connections it accepts open and closes
    every later one at once: a TPS that aborts with its listener still taking
    connections into the backlog, until its exit resets them."""

    def __init__(self, healthy):
        import socket
        import threading
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.healthy, self.held = healthy, []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            if self.healthy > 0:
                self.healthy -= 1
                self.held.append(connection)
            else:
                connection.close()

    def close(self):
        self.listener.close()
        for connection in self.held:
            connection.close()


AFTER_A_FAILURE = """
    def test_a_fails(tps_address):
        raise AssertionError("the TPS is aborting")

    def test_b_after_it(tps_address):
        pass
"""


@pytest.mark.parametrize("healthy, outcomes", [(1, {"failed": 1, "skipped": 1}),
                                               (1000, {"failed": 1, "passed": 1})],
                         ids=["dying", "alive"])
def test_after_a_failure_a_tps_whose_new_connections_are_closed_at_once_is_dead(pytester, healthy,
                                                                                 outcomes):
    """The probe at the start is answered; the probe after the failure is closed at
    once: the TPS is dying, and what follows is skipped. A TPS that keeps the new
    connection open is alive."""
    pytester.makepyfile(AFTER_A_FAILURE)
    server = DyingListener(healthy)
    try:
        result = pytester.runpytest("--tps", "%s:%d" % server.address, "-rs", "-p", "no:randomly")
    finally:
        server.close()
    result.assert_outcomes(**outcomes)
    if healthy == 1:
        result.stdout.fnmatch_lines(["*stopped accepting connections during this test (closed at once): it died",
                                     "SKIPPED*the TPS died during test_after_a_failure*::test_a_fails"])


TWO_TESTS = """
    def test_one(tps_address):
        raise AssertionError("must not run")

    def test_two(tps):
        raise AssertionError("must not run")
"""


@pytest.mark.parametrize("address, line", [
    ("127.0.0.1:{port}", "tpsharness: the TPS at 127.0.0.1:{port} refused the connection; nothing was run"),
    ("no-such-host.invalid:6604", "tpsharness: the TPS at no-such-host.invalid:6604 does not resolve "
                                  "(*); nothing was run"),
])
def test_a_tps_that_is_not_there_stops_the_session_in_one_line(pytester, address, line):
    from conftest import free_port
    port = free_port()
    pytester.makepyfile(TWO_TESTS)
    result = pytester.runpytest("--tps", address.format(port=port))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {line.format(port=port)}"])
    assert [text for text in result.stderr.lines if text.strip()] == \
        [text for text in result.stderr.lines if "nothing was run" in text]
    assert "must not run" not in result.stdout.str() + result.stderr.str()
    assert result.stdout.str().strip() == ""          # no header, no collection, no failures


def test_listing_the_tests_does_not_need_the_tps(pytester):
    from conftest import free_port
    pytester.makepyfile(TWO_TESTS)
    result = pytester.runpytest("--tps", f"127.0.0.1:{free_port()}", "--collect-only", "-q")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*2 tests collected*"])


# -- record -------------------------------------------------------------------------------------

def test_record_writes_a_scenario_that_replays(pytester, fake):
    out = pytester.path / "fixtures" / "test_incident.tps.json"
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


def test_the_conformance_suite_against_a_refused_port_prints_one_line_and_runs_nothing():
    """The issue's command: 27 failures in 3,633 lines before; one line now."""
    from conftest import free_port
    port = free_port()
    result = run_conformance("--tps", f"127.0.0.1:{port}")
    assert result.returncode == 4
    output = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert output == [f"ERROR: tpsharness: the TPS at 127.0.0.1:{port} refused the connection; "
                      f"nothing was run"], output


@pytest.mark.slow
def test_conformance_passes_completely_against_the_bundled_fake():
    result = run_conformance()
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"\b29 passed in", result.stdout), result.stdout[-500:]
    assert "xfail" not in result.stdout and "skipped" not in result.stdout


@pytest.mark.slow
def test_conformance_reports_field_framing_as_xfails_with_reasons():
    server = FakeTPS(profile="field")
    with server.start_in_thread():
        result = run_conformance("--tps", f"127.0.0.1:{server.address[1]}", "-rxs")
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"\b22 passed, 3 skipped, 4 xfailed", result.stdout), result.stdout[-1500:]
    assert "answered 1 of 2 registers sent in one segment" in result.stdout
    assert "answered [400, 400] to a register split across two segments" in result.stdout
    assert "the device received 4096 bytes of a 65536-byte request" in result.stdout
    assert result.stdout.count("destructive: may kill the TPS under test; against a real TPS it runs "
                               "only with --tps-destructive") == 3, result.stdout[-1500:]


@pytest.mark.slow
def test_conformance_against_a_server_that_dies_names_the_test_that_killed_it():
    server = FakeTPS(faults=["die-on-dangling-entry"])
    with server.start_in_thread():
        result = run_conformance("--tps", f"127.0.0.1:{server.address[1]}", "--tps-destructive", "-rfs")
    assert result.returncode == 1
    assert re.search(r"\b1 failed, 28 passed", result.stdout), result.stdout[-1500:]
    assert "FAILED tpsharness/conformance/test_register.py::" \
           "test_a_second_serial_on_one_connection_does_not_kill_the_server" in result.stdout
    assert "the TPS died after private data to a serial whose connection re-registered" in result.stdout
    assert "stopped accepting connections during this test (Connection refused): it died" in result.stdout


def test_a_skip_or_an_xfail_is_no_failure_that_asks_whether_the_tps_is_dying(pytester):
    """Only a real failure waits for a new connection to stay open: a skip or an xfail
    cost every such test a second against a real TPS (and here, a listener that closes
    what it accepts after the first, the session)."""
    pytester.makepyfile("""
        import pytest

        def test_a_skips(tps_address):
            pytest.skip("not this one")

        def test_b_xfails(tps_address):
            pytest.xfail("a documented difference")

        def test_c_after_them(tps_address):
            pass
    """)
    server = DyingListener(1)
    try:
        result = pytester.runpytest("--tps", "%s:%d" % server.address, "-p", "no:randomly")
    finally:
        server.close()
    result.assert_outcomes(skipped=1, xfailed=1, passed=1)
