"""Hostile scenario files and what record writes of hostile servers (issue 16, items
14-16): a file cannot ask for hours, a CR or LF in a uuid is a ScenarioError naming
the file and the step, and a recording says what the server did, never a close the
harness made itself."""

import json
import subprocess
import time
import sys

import pytest

from fake_tps import FakeTPS
from tpsharness import scenario as scenarios
from tpsharness.errors import ScenarioError, ScenarioFailure
from tpsharness.scenario import MAX_TOTAL_SECONDS, Scenario, load, play, record, validate

from test_scenario_loader import load_error as loader_error


def write(tmp_path, data):
    path = tmp_path / "test_hostile.tps.json"
    path.write_text(json.dumps(data, separators=(",", ":")))
    return path


def load_error(tmp_path, data):
    return loader_error(tmp_path, json.dumps(data, separators=(",", ":")))


# -- item 15: a bound on the total ------------------------------------------------------------

def test_120_waits_of_60_seconds_are_refused_at_the_step_that_passes_the_bound(tmp_path):
    data = {"actors": {}, "steps": [{"do": "wait", "seconds": 60}] * 120}
    message = load_error(tmp_path, data)
    assert f": step {MAX_TOTAL_SECONDS // 60 + 1} (wait): " in message
    assert f"add up to more than {MAX_TOTAL_SECONDS} s" in message


def test_expect_nothing_and_pauses_count_towards_the_bound(tmp_path):
    cam = {"cam": {"kind": "device"}}
    steps = [{"do": "connect", "actor": "cam"}] + [{"do": "expect_nothing", "actor": "cam", "for": 60}] * 9 + \
        [{"do": "register", "actor": "cam", "split_at": 10, "pause": 60}] * 2
    message = load_error(tmp_path, {"actors": cam, "steps": steps})
    assert ": step 12 (register): " in message


def test_a_4_mib_file_of_waits_is_refused_not_run_for_days(tmp_path):
    steps = [{"do": "wait", "seconds": 60}] * 150_000          # 4 MB, 104 days of waiting
    message = load_error(tmp_path, {"actors": {}, "steps": steps})
    assert "add up to more than" in message


def test_speed_divides_the_waits_that_count(tmp_path):
    data = {"actors": {}, "speed": 20, "steps": [{"do": "wait", "seconds": 60}] * 120}
    assert load(write(tmp_path, data)).data["speed"] == 20
    message = load_error(tmp_path, {**data, "speed": 1000})
    assert "'speed' must be at most 100" in message


def test_a_play_that_runs_past_its_bound_fails_naming_the_step(monkeypatch):
    monkeypatch.setattr(scenarios, "MAX_PLAY_SECONDS", 0.5)
    slow = FakeTPS(reply_delay=2)
    data = {"actors": {"cam": {"kind": "device"}},
            "steps": [{"do": "connect", "actor": "cam"}, {"do": "register", "actor": "cam"},
                      {"do": "expect_reply", "actor": "cam", "within": 5}]}
    with slow.start_in_thread(), pytest.raises(ScenarioFailure) as failure:
        play(Scenario("<slow>", validate(data)), slow.address)
    assert str(failure.value).startswith("<slow>: step 3 (cam: expect_reply)")
    assert "within its bound of 0.5 s" in failure.value.expected


def test_a_plays_bound_leaves_room_for_every_pause_wait_and_expect_nothing():
    cam = {"cam": {"kind": "device"}}
    connect = [{"do": "connect", "actor": "cam"}]
    paused = [{"do": "register", "actor": "cam", "split_at": 10, "pause": 10}] * 2
    for steps, speed in ((connect + paused, 1), (connect + paused * 20, 2),
                         (connect + [{"do": "expect_nothing", "actor": "cam", "for": 60}] * 9 + paused, 1)):
        scenario = Scenario("<paused>", validate({"actors": cam, "speed": speed, "steps": steps}))
        sure = sum(scenarios._sure_seconds(step, speed) for step in steps)     # what validate() counts
        for timeout in (0.1, 5):
            assert scenarios._budget(scenario, timeout, speed) >= sure + 0.5 * len(steps)


def test_a_speed_that_would_make_a_legal_file_too_long_is_a_clear_error_before_it_runs():
    steps = [{"do": "connect", "actor": "cam"}] + [{"do": "wait", "seconds": 60}] * 9
    scenario = Scenario("<waits>", validate({"actors": {"cam": {"kind": "device"}}, "steps": steps}))
    started = time.monotonic()
    with pytest.raises(ScenarioError) as error:
        play(scenario, ("127.0.0.1", 9), speed=0.5)      # 1,080 s of waiting: nothing is connected
    assert time.monotonic() - started < 1
    assert str(error.value) == ("<waits>: at speed 0.5 the waits, pauses and expect_nothing periods add up "
                                "to 1080.0 s, more than 600 s (a replay lasts 10 minutes at most): "
                                "replay it at speed 0.9 or faster")


# -- item 16: CR or LF in a uuid ------------------------------------------------------------

@pytest.mark.parametrize("where, data, says", [
    ("actor", {"actors": {"app": {"kind": "client", "uuid": "evil\r\nX-Injected: 1"}},
               "steps": [{"do": "connect", "actor": "app"}]}, "actor 'app': 'uuid' must not contain CR or LF"),
    ("to", {"actors": {"app": {"kind": "client"}},
            "steps": [{"do": "connect", "actor": "app"}, {"do": "send", "actor": "app", "to": "cam\n"}]},
     "step 2 (send): 'to' must not contain CR or LF"),
    ("serial", {"actors": {"cam": {"kind": "device"}},
                "steps": [{"do": "connect", "actor": "cam"}, {"do": "register", "actor": "cam", "serial": "a\rb"}]},
     "step 2 (register): 'serial' must not contain CR or LF"),
    ("auth code", {"actors": {"app": {"kind": "client", "auth_code": "00\n00"}},
                   "steps": [{"do": "connect", "actor": "app"}]}, "'auth_code' must not contain CR or LF"),
])
def test_cr_or_lf_in_a_uuid_is_a_scenario_error_naming_the_file_and_step(tmp_path, where, data, says):
    assert says in load_error(tmp_path, data)


def test_the_plugin_reports_a_cr_in_a_uuid_in_one_line(pytester):
    path = pytester.path / "test_crlf.tps.json"
    path.write_text(json.dumps({"actors": {"app": {"kind": "client", "uuid": "a\r\nb"}},
                                "steps": [{"do": "connect", "actor": "app"},
                                          {"do": "send", "actor": "app", "to": "x"}]}))
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    assert len(result.outlines) < 40, "\n".join(result.outlines)
    result.stdout.fnmatch_lines(["*test_crlf.tps.json: actor 'app': 'uuid' must not contain CR or LF*"])


# -- item 14: record says what the server did -----------------------------------------------------

def test_record_of_garbage_replies_expects_those_bytes_and_replays_against_the_same_server():
    server = FakeTPS(faults=["garbage-replies"])
    with server.start_in_thread():
        recorded = record("check", server.address, timeout=1)
        steps = recorded["steps"]
        assert "expect_close" not in [s["do"] for s in steps]
        assert steps[-1]["do"] == "expect_bytes" and "not a TPS message" in steps[-1]["note"]
        play(Scenario("<recorded>", validate(recorded)), server.address)
    default = FakeTPS()
    with default.start_in_thread(), pytest.raises(ScenarioFailure) as failure:
        play(Scenario("<recorded>", validate(recorded)), default.address)
    assert str(failure.value).startswith(f"<recorded>: step {len(steps)} (device: expect_bytes)")


def test_record_of_a_server_that_closes_still_writes_expect_close():
    server = FakeTPS(faults=["close-on-accept"])
    with server.start_in_thread():
        recorded = record("check", server.address, timeout=1)
        play(Scenario("<recorded>", validate(recorded)), server.address)
    assert [s["do"] for s in recorded["steps"]][-1] == "expect_close"


def test_the_record_command_of_garbage_replies_writes_a_file_that_replays(tmp_path):
    server = FakeTPS(faults=["garbage-replies"])
    out = tmp_path / "test_garbage.tps.json"
    with server.start_in_thread():
        result = subprocess.run([sys.executable, "-m", "tpsharness", "record", *map(str, server.address),
                                 "-o", str(out), "-t", "1"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        play(load(out), server.address)


# -- exact replays against a flood --------------------------------------------------------------

def test_an_exact_replay_against_a_server_that_floods_acks_fails_at_the_next_move_in_bounded_memory():
    from test_hostile_servers import TinyServer, flood, resident_bytes
    from tpsharness.endpoint import MAX_UNREAD
    steps = [{"do": "connect", "actor": "probe"}, {"do": "wait", "seconds": 0.2},
             {"do": "send_raw", "actor": "probe", "data": "x"}]
    exact = Scenario("<flooded>", validate({"exact": True, "actors": {"probe": {"kind": "raw"}}, "steps": steps}))
    before = resident_bytes()
    with TinyServer(flood(b"HTTP/1.1 200 OK\r\n\r\n")) as server:
        started = time.monotonic()
        with pytest.raises(ScenarioFailure) as failure:
            play(exact, server.address, timeout=2)
        assert time.monotonic() - started < 5
    assert str(failure.value).startswith("<flooded>: step 3 (probe: send_raw)")
    assert f"more than an endpoint keeps ({MAX_UNREAD} messages" in failure.value.arrived
    assert resident_bytes() - before < 64 * 1024 * 1024
