"""``python -m fake_tps --log FILE|-``: one JSON line per event, bounded, for people who
run the fake by hand against their devices."""

import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from fake_tps.jsonlog import MAX_LINE
from tpsharness import check
from tpsharness.protocol import register_request


class FakeProcess:
    """``python -m fake_tps --port 0 ARGS`` and the address it says it listens on."""

    def __init__(self, *args, stdout=subprocess.PIPE):
        self.process = subprocess.Popen([sys.executable, "-m", "fake_tps", "--port", "0", *args],
                                        stdout=stdout, stderr=subprocess.PIPE, text=True)
        said = self.process.stderr if "-" in args else self.process.stdout
        line = said.readline()
        match = re.match(r"fake TPS listening on 127\.0\.0\.1:(\d+)$", line.strip())
        assert match, line + self.process.stderr.read()
        self.address = ("127.0.0.1", int(match.group(1)))

    def stop(self):
        """SIGTERM; (stdout, stderr) after the listening line, once it exited."""
        self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=10)
        assert self.process.returncode == 0, err
        return out, err


def raw(address, data):
    """Send ``data`` on a connection of its own and read until the fake answers or closes."""
    with socket.create_connection(address, timeout=5) as conn:
        conn.sendall(data)
        try:
            return conn.recv(65536)
        except TimeoutError:
            return b""


def events(lines):
    parsed = [json.loads(line) for line in lines]
    assert all(len(line.encode()) + 1 <= MAX_LINE for line in lines)
    return parsed


def test_log_file_gets_one_json_line_per_event(tmp_path):
    path = tmp_path / "events.jsonl"
    fake = FakeProcess("--log", str(path))
    result = check(*fake.address, timeout=5)
    raw(fake.address, b"GET / HTTP/1.1\r\n\r\n")
    out, _ = fake.stop()
    assert result.ok, result.message
    assert out.startswith("fake TPS stopped: ")
    logged = events(path.read_text().splitlines())
    kinds = [event["kind"] for event in logged]
    assert {"connect", "register", "relay", "reply", "close"} <= set(kinds), kinds
    register = next(event for event in logged if event["kind"] == "register")
    assert register["serial"] == result.uuid and re.fullmatch(r"127\.0\.0\.1:\d+", register["peer"])
    relay = next(event for event in logged if event["kind"] == "relay")
    assert relay["dest"] == result.uuid and relay["to"] == register["peer"]
    assert any(event["kind"] == "reply" and event["status"] == 400 for event in logged)
    assert all(isinstance(event["time"], float) for event in logged)


def test_log_dash_keeps_stdout_for_the_events_alone():
    fake = FakeProcess("--log", "-", "--fault", "drop-relays")
    assert not check(*fake.address, timeout=1).ok          # the fault dropped the relay
    out, err = fake.stop()
    logged = events(out.splitlines())
    assert any(event["kind"] == "fault" and "drop-relays" in str(event.get("faults")) for event in logged)
    assert err.startswith("fake TPS stopped: ")


def test_a_peers_huge_or_hostile_text_stays_a_short_escaped_line(tmp_path):
    path = tmp_path / "events.jsonl"
    fake = FakeProcess("--log", str(path))
    raw(fake.address, register_request("\x1b[2J" + "x" * 10_000))
    fake.stop()
    lines = path.read_text().splitlines()
    register = next(event for event in events(lines) if event["kind"] == "register")
    assert register["serial"].startswith("\x1b[2Jxxx") and "(10004 characters)" in register["serial"]
    assert all("\x1b" not in line for line in lines)      # JSON escapes it: \u001b
    assert max(len(line) for line in lines) < 400


def test_a_log_that_cannot_be_opened_is_a_usage_error_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fake_tps", "--port", "0", "--log", str(tmp_path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (f"python -m fake_tps: error: argument --log: cannot open "
                                              f"{str(tmp_path)!r}: Is a directory")


@pytest.mark.skipif(not hasattr(os, "pipe"), reason="needs pipes")
def test_a_closed_log_pipe_is_said_once_and_the_fake_goes_on_serving():
    reader, writer = os.pipe()
    fake = FakeProcess("--log", "-", stdout=writer)
    os.close(writer)
    os.close(reader)                # the reader went away: the next event's write fails
    assert check(*fake.address, timeout=5).ok
    assert check(*fake.address, timeout=5).ok
    _, err = fake.stop()
    lines = err.splitlines()
    assert lines[0] == ("fake TPS: --log: cannot write to standard output (Broken pipe); "
                        "no more events are logged"), lines
    assert lines[1].startswith("fake TPS stopped: ") and len(lines) == 2, lines
