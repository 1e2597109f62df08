"""What hostile peers send the fake TPS: it answers clearly, stays bounded, never dies.

Each case was measured against the seed: a traceback per connection, RSS grown by
200 MB, trickling connections kept for ever, options that crash it later.
"""

import json
import re
import socket
import subprocess
import sys
import time

import pytest

from fake_tps import FakeTPS
from tpsharness.protocol import private_data_request, register_request, reply

from conftest import Wire

BAD = reply(400)


def register(connection, serial, **kwargs):
    connection.send(register_request(serial, **kwargs))
    return connection.message()


# -- a Content-Length of thousands of digits -----------------------------------------------------

HUGE_LENGTH = (b"POST /PrivateData HTTP/1.1\r\nSrcUuid: a\r\nDestUuid: b\r\nContent-Length: "
               + b"9" * 4301 + b"\r\n\r\n")


def test_a_content_length_of_4301_digits_gets_413_and_a_close_not_a_traceback(fake, wire):
    attacker = wire()
    attacker.send(HUGE_LENGTH)
    assert attacker.raw().startswith(b"HTTP/1.1 413 ")
    assert attacker.closed_by_server()
    assert fake.stats.protocol_errors == 1
    assert not [text for text in fake.events_since(0) if "internal error" in text]
    assert register(wire(), "cam-after").ok


# -- attacker-sized text -------------------------------------------------------------------------

MEGABYTE = "M" * 1_000_000


def _register_body(message_type="MSG_TRANSPROXY_REGISTER_REQ", serial="cam"):
    return json.dumps({"TransProxy": {
        "Header": {"CSeq": "1", "MessageType": message_type, "TerminalType": "Camera"},
        "Body": {"AuthCode": "0000", "SerialNumber": serial}}}).encode()


@pytest.mark.parametrize("name, data", [
    ("a megabyte MessageType", register_request("x", body=_register_body(MEGABYTE))),
    ("a 15 KB path", b"POST /" + MEGABYTE[:15000].encode() + b" HTTP/1.1\r\n\r\n"),
    ("a 15 KB start line", b"POST" + MEGABYTE[:15000].encode() + b"\r\n\r\n"),
])
def test_a_400_for_a_huge_field_keeps_a_short_event(wire, name, data):
    server = FakeTPS(max_body=2_000_000)
    with server.start_in_thread():
        attacker = Wire(server.address)
        try:
            for _ in range(3):
                attacker.send(data)
                assert attacker.message().status == 400, name
        finally:
            attacker.close()
    events = server.events_since(0)
    assert len(events) == 3
    assert max(len(text) for text in events) < 400, events[0][:500]


def test_a_megabyte_serial_and_uuid_keep_events_short(fake, wire):
    fake.configure(max_body=2_000_000)
    first, holder = wire(), wire()
    register(first, "cam-1")
    register(holder, "u" * 15000)          # a uuid as long as a header may be
    assert register(first, "u" * 15000).ok  # takeover: an event naming the uuid
    first.send(register_request("x", body=_register_body(serial=MEGABYTE)))
    assert first.closed_by_server()         # a second, unknown serial: an event naming both
    events = fake.events_since(0)
    assert len(events) == 2 and max(len(text) for text in events) < 400, [t[:500] for t in events]


# -- slowloris -----------------------------------------------------------------------------------

def _trickle(connection, data, interval, limit):
    """Send ``data`` a byte at a time, ``interval`` apart (the wait is the check that the
    server has not closed yet); the seconds from the first byte to the close, or None."""
    started = time.monotonic()
    for byte in data:
        try:
            connection.send(bytes([byte]))
        except OSError:
            return time.monotonic() - started
        if connection.closed_by_server(timeout=interval):
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            return None
    return None


def test_a_request_trickled_a_byte_at_a_time_is_closed_at_its_deadline():
    server = FakeTPS(idle_timeout=0.5, request_timeout=1.0)
    with server.start_in_thread():
        slow = Wire(server.address)
        try:
            # Every byte restarts the idle timer: only the request's deadline closes it.
            closed_after = _trickle(slow, register_request("cam-slow"), interval=0.1, limit=5)
        finally:
            slow.close()
        assert closed_after is not None, "a trickling peer was never closed"
        assert 1.0 <= closed_after < 3.0, closed_after
        assert server.stats.slow_closed == 1 and server.stats.idle_closed == 0
        assert any("not whole 1 s after its first byte" in text for text in server.events_since(0))


def test_whole_requests_restart_the_deadline(fake, wire):
    fake.configure(request_timeout=0.5)
    device = wire()
    data = register_request("cam-1")
    started = time.monotonic()
    while time.monotonic() - started < 1.5:        # three deadlines' worth of whole requests
        device.send(data[:50])
        assert not device.closed_by_server(timeout=0.1)
        device.send(data[50:])
        assert device.message().ok
    assert fake.stats.slow_closed == 0


# -- impossible options --------------------------------------------------------------------------

BAD_OPTIONS = [
    ["--port", "70000"],
    ["--port", "-1"],
    ["--reply-delay", "-1"],
    ["--reply-delay", "1e300"],
    ["--idle-timeout", "-1"],
    ["--idle-timeout", "0"],
    ["--idle-timeout", "nan"],
    ["--max-body", "-5"],
    ["--keepalive-interval", "-3"],
    ["--request-timeout", "0"],
    ["--request-timeout", "-2"],
]


@pytest.mark.parametrize("argv", BAD_OPTIONS, ids=" ".join)
def test_python_m_fake_tps_refuses_an_impossible_option_with_a_usage_error(argv):
    try:
        done = subprocess.run([sys.executable, "-m", "fake_tps", "--port", "0", *argv],
                              capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"python -m fake_tps {' '.join(argv)} started serving instead of refusing")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("usage: python -m fake_tps"), done.stderr
    assert lines[-1].startswith(f"python -m fake_tps: error: argument {argv[0]}: "), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize("options", [
    {"port": 70000}, {"port": -1}, {"reply_delay": -1}, {"idle_timeout": 0}, {"idle_timeout": -1},
    {"idle_timeout": float("nan")}, {"max_body": -5}, {"keepalive_interval": -3},
    {"request_timeout": 0}, {"bad_request_idle_timeout": -1}, {"max_output": 0},
    {"idle_timeout": "300"}, {"reply_delay": float("inf")}, {"reply_delay": 1e300},
], ids=repr)
def test_fake_tps_refuses_impossible_values_with_valueerror(options):
    name = next(iter(options))
    with pytest.raises(ValueError, match=name):
        FakeTPS(**options)


def test_configure_refuses_impossible_values_and_keeps_the_old_ones(fake):
    with pytest.raises(ValueError, match="reply_delay"):
        fake.configure(reply_delay=-1)
    assert fake.reply_delay == 0.0


def test_fake_tps_is_a_product_its_help_lists_each_fault_on_its_own_line():
    import subprocess
    import sys

    from fake_tps import FAULTS, FakeTPS      # the package re-exports the server
    assert FakeTPS.__module__ == "fake_tps.server"
    shown = subprocess.run([sys.executable, "-m", "fake_tps", "--help"], capture_output=True,
                           text=True, timeout=30).stdout
    for name in FAULTS:
        assert re.search(rf"^  {re.escape(name)} +\S", shown, re.M), f"{name} not on a line of its own"
    version = subprocess.run([sys.executable, "-m", "fake_tps", "--version"], capture_output=True,
                             text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("python -m fake_tps (tpsharness ")


def test_the_fake_stops_at_once_while_a_delayed_reply_is_pending():
    """A stop (SIGTERM calls request_stop) must not wait out reply_delay: delayed replies
    end with the server. Before, a reply delayed 60 s held the process for 60 s."""
    from conftest import wait_until

    server = FakeTPS(reply_delay=60)
    running = server.start_in_thread()
    running.__enter__()
    try:
        with socket.create_connection(server.address, timeout=5) as device:
            device.sendall(register_request("tpsharness-delayed"))
            assert wait_until(lambda: len(server._delayed) == 1), "the register was never read"
            started = time.monotonic()
    finally:
        running.__exit__(None, None, None)     # raises if the server is still serving after 10 s
    assert time.monotonic() - started < 5
