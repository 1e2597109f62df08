"""Hostile input to a check: host names no resolver takes, and a server's text.

A name IDNA cannot encode, a NUL, 10 kB: each is a failed connect stage in one line,
never a UnicodeError or a traceback, and a NUL never truncates the name to a host
that is then probed. A server's reason phrase or ErrorString reaches the status line
escaped: no '|' that would inject perfdata, no ESC for the terminal, no 12 kB line.
"""

import json
import re
import subprocess
import sys

import pytest

from test_hostile_servers import TinyServer, idle, read_message
from tpsharness import check
from tpsharness.protocol import register_reply

BAD_NAMES = {
    "an empty label": ("a..b", "the name has an empty label"),
    "only a dot": (".", "the name is empty"),
    "nothing (an empty $HOSTADDRESS$)": ("", "the name is empty"),
    "a 64-character label": ("a" * 64 + ".example", "a label longer than 63 characters"),
    "replacement characters": ("\ufffd\ufffd", "IDNA cannot encode the name"),
    "10 kB": ("x" * 10_000, "the name is 10000 characters long, more than 253"),
    "an escape sequence": ("\x1b[31mred", "the name holds '\\x1b'"),
}


def tps(*args):
    return subprocess.run([sys.executable, "-m", "tpsharness", *args], capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_name_no_resolver_takes_fails_the_connect_stage(name):
    host, reason = BAD_NAMES[name]
    result = check(host, 6604, timeout=1)
    assert not result.ok and result.stage == "connect"
    assert reason in result.message
    assert "\n" not in result.message and "\x1b" not in result.message
    assert len(result.message) < 400, len(result.message)


@pytest.mark.parametrize("host", ["a..b", ".", "", "x" * 10_000])
def test_the_command_says_so_in_one_critical_line(host):
    result = tps("check", host, "6604", "-t", "1")
    assert result.returncode == 2, result.stdout + result.stderr
    assert re.fullmatch(r"TPS CRITICAL - connect: cannot resolve .+ \| total=[\d.]+ms;;;0;\n",
                        result.stdout), result.stdout[:500]
    assert "Traceback" not in result.stderr


def test_a_nul_in_the_name_is_refused_instead_of_probing_the_part_before_it():
    with TinyServer(idle) as server:
        port = server.address[1]
        result = check(f"127.0.0.1\x00.evil.example", port, timeout=1)
    assert not result.ok and result.stage == "connect"
    assert "the name holds '\\x00'" in result.message
    assert server.connections == [], "the check connected to 127.0.0.1"


def answer_register(head):
    """A device connection answered with ``head`` (a status line and headers)."""
    def behaviour(conn, stopping):
        read_message(conn)
        conn.sendall(head)
        stopping.wait(5)
    return behaviour


HOSTILE_REASONS = {
    "a fake perfdata field": b"Bad |total=1ms;;;0; fake=1",
    "terminal escapes": b"Bad \x1b[2J\x1b]0;owned\x07Request",
    "12 kB": b"R" * 12_000,
}


@pytest.mark.parametrize("name", HOSTILE_REASONS)
def test_a_servers_reason_phrase_reaches_the_status_line_escaped_and_cut(name):
    reason = HOSTILE_REASONS[name]
    with TinyServer(answer_register(b"HTTP/1.1 400 " + reason + b"\r\nContent-Length: 0\r\n\r\n"),
                    idle) as server:
        result = tps("check", *map(str, server.address), "-t", "2")
    assert result.returncode == 2
    line = result.stdout
    assert line.count("\n") == 1 and line.startswith("TPS CRITICAL - register: "), line[:300]
    assert line.count("|") == 1, line          # only the perfdata separator
    assert "\x1b" not in line and "\x07" not in line
    assert len(line) < 600, len(line)
    assert re.search(r"\| connect=[\d.]+ms total=[\d.]+ms;;;0;$", line.strip()), line


def test_an_error_string_reaches_the_status_line_and_json_escaped():
    refusal = register_reply(error_num=401, error_string="no|total=1ms\x1b[2J",
                             utc_time="2026-01-01 00:00:00")
    with TinyServer(answer_register(refusal), idle) as server:
        plain = tps("check", *map(str, server.address), "-t", "2")
    with TinyServer(answer_register(refusal), idle) as server:
        as_json = tps("check", *map(str, server.address), "-t", "2", "--json")
    assert plain.stdout.count("|") == 1 and "\x1b" not in plain.stdout, plain.stdout
    assert "with ErrorNum 401 'no\\x7ctotal=1ms\\x1b[2J'" in plain.stdout, plain.stdout
    message = json.loads(as_json.stdout)["message"]
    assert "\x1b" not in message and "'no|total=1ms\\x1b[2J'" in message, message
