"""The command line as a monitoring system runs it: output lines and exit codes."""

import json
import re
import subprocess
import sys
import time

import pytest

from conftest import free_port
from tpsharness.cli import main
from tpsharness.deadline import GRACE
from tpsharness.thresholds import Range


def tps(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "tpsharness", *args], capture_output=True,
                          text=True, timeout=timeout)


PERFDATA = r"\| connect=[\d.]+ms register=[\d.]+ms send=[\d.]+ms receipt=[\d.]+ms total=[\d.]+ms;{w};{c};0;$"


def test_check_without_a_target_uses_the_embedded_fake_and_says_so():
    result = tps("check")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert re.match(r"TPS OK - 127\.0\.0\.1:\d+ registered tpsharness-(gw\d+-)?[0-9a-f]{10} and relayed 16 bytes "
                    r"in [\d.]+ ms \[embedded fake TPS", line), line
    assert re.search(PERFDATA.format(w="", c=""), line), line


def test_check_against_a_running_fake_by_positional_and_plugin_options(fake):
    host, port = fake.address
    for args in ((host, str(port)), ("-H", host, "-p", str(port))):
        result = tps("check", *args)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith(f"TPS OK - {host}:{port} registered ")
        assert "embedded" not in result.stdout


def test_a_refused_port_is_critical_with_one_line():
    port = free_port()
    result = tps("check", "127.0.0.1", str(port), "-t", "2")
    assert result.returncode == 2
    assert re.fullmatch(rf"TPS CRITICAL - connect: TPS 127\.0\.0\.1:{port} refused the connection "
                        r"after [\d.]+ ms \| total=[\d.]+ms;;;0;\n", result.stdout), result.stdout


def test_an_unresolvable_name_is_critical():
    result = tps("check", "-H", "no-such-host.invalid", "-t", "2")
    assert result.returncode == 2
    assert "cannot resolve 'no-such-host.invalid'" in result.stdout


def test_warning_and_critical_ranges_on_total_time(fake):
    host, port = map(str, fake.address)
    warning = tps("check", host, port, "-w", "~:0", "-c", "10000")
    assert warning.returncode == 1, warning.stdout
    assert warning.stdout.startswith("TPS WARNING - ") and "outside the warning range ~:0" in warning.stdout
    assert re.search(PERFDATA.format(w="~:0", c="10000"), warning.stdout.strip())
    critical = tps("check", host, port, "-w", "~:0", "-c", "@0:100000")
    assert critical.returncode == 2 and "inside the critical range @0:100000" in critical.stdout


def test_json_output_is_one_object(fake):
    result = tps("check", *map(str, fake.address), "--json")
    data = json.loads(result.stdout)
    assert result.returncode == 0 and data["ok"] is True and data["state"] == "OK"
    assert set(data["timings"]) == {"connect", "register", "send", "receipt", "total"}
    assert "transcript" not in data
    verbose = json.loads(tps("check", *map(str, fake.address), "--json", "-v").stdout)
    assert any(entry["actor"] == "device" for entry in verbose["transcript"])


def test_json_keys_are_the_check_results_field_names(fake):
    from dataclasses import fields

    from tpsharness import CheckResult
    names = {f.name for f in fields(CheckResult)} - {"transcript"}
    plain = json.loads(tps("check", *map(str, fake.address), "--json").stdout)
    assert set(plain) == names | {"state", "exit_code", "reason"}
    verbose = json.loads(tps("check", *map(str, fake.address), "--json", "-v").stdout)
    assert set(verbose) == names | {"state", "exit_code", "reason", "transcript"}
    warned = json.loads(tps("check", *map(str, fake.address), "--json", "-w", "~:0").stdout)
    assert warned["state"] == "WARNING" and warned["reason"].startswith("total ")


def test_prometheus_output_names_the_failed_stage(fake):
    fake.configure(faults=["drop-relays"])
    result = tps("check", *map(str, fake.address), "--prometheus", "-t", "0.5")
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert "tps_probe_success 0" in lines
    assert 'tps_probe_failed_stage{stage="receipt"} 1' in lines
    assert 'tps_probe_failed_stage{stage="register"} 0' in lines
    assert any(line.startswith('tps_probe_duration_seconds{stage="register"} ') for line in lines)


def test_verbose_adds_the_wire_transcript(fake):
    result = tps("check", *map(str, fake.address), "-v", "--payload", "hello-transcript")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("TPS OK")
    assert any("client" in line and ">>" in line and "hello-transcript" in line for line in lines[1:])


@pytest.mark.parametrize("args", [
    ["check", "--bogus"], ["check", "-t", "zero"], ["check", "-w", "5:1"], ["check", "1.2.3.4", "99999"],
    ["check", "-p", "6604"], ["check", "a", "1", "-H", "b"], [], ["check", "--json", "--prometheus"],
])
def test_usage_errors_exit_unknown_with_the_usage(args):
    result = tps(*args)
    assert result.returncode == 3, (args, result.returncode, result.stdout, result.stderr)
    assert "usage:" in result.stderr


@pytest.mark.parametrize("args", [["check", "--help"], ["check", "-V"]])
def test_checks_help_and_version_exit_unknown_as_plugins_do(args):
    result = tps(*args)
    assert result.returncode == 3
    assert "usage:" in result.stdout or re.fullmatch(r"tpsharness \d+\.\d+\.\d+\n", result.stdout)


@pytest.mark.parametrize("args", [["--help"], ["-V"], ["load", "--help"], ["report", "--help"],
                                  ["fuzz", "--help"], ["exporter", "--help"], ["record", "--help"]])
def test_every_other_commands_help_and_version_exit_0_as_clis_do(args):
    result = tps(*args)
    assert result.returncode == 0, (args, result.stderr)
    assert "usage:" in result.stdout or re.fullmatch(r"tpsharness \d+\.\d+\.\d+\n", result.stdout)


@pytest.mark.parametrize("args", [["load", "--bogus"], ["exporter", "--bogus"], ["record"], ["--bogus"]])
def test_a_usage_error_of_any_command_still_exits_3(args):
    result = tps(*args)
    assert result.returncode == 3, (args, result.returncode, result.stderr)
    assert "usage:" in result.stderr


def test_an_internal_error_is_unknown_with_a_traceback(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr("tpsharness.cli.run_check", broken)
    assert main(["check"]) == 3
    out, err = capsys.readouterr()
    assert out.startswith("TPS UNKNOWN - internal error: RuntimeError: a bug")
    assert "Traceback" in err


@pytest.mark.parametrize("text, inside, outside", [
    ("10", [0, 5, 10], [-1, 11]),
    ("10:", [10, 1e9], [9.9]),
    ("~:10", [-1e9, 10], [10.1]),
    ("10:20", [10, 20], [9, 21]),
    ("@10:20", [9, 21], [10, 15, 20]),
])
def test_threshold_ranges_follow_the_plugin_guidelines(text, inside, outside):
    """``inside`` values do not alert, ``outside`` values do."""
    limit = Range.parse(text)
    assert [limit.alerts(v) for v in inside] == [False] * len(inside)
    assert [limit.alerts(v) for v in outside] == [True] * len(outside)


def test_the_installed_console_script_runs_the_same_command():
    import os
    script = os.path.join(os.path.dirname(sys.executable), "tpsharness")
    if not os.path.exists(script):
        pytest.skip("tpsharness is not installed as a console script here")
    result = subprocess.run([script, "check", "--json"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and json.loads(result.stdout)["embedded"] is True


# -- usage errors of the command at hand, validated before anything is sent ---------------

@pytest.mark.parametrize("command, args", [
    ("check", ["127.0.0.1", "1", "--uuid", "a\r\nb"]),
    ("check", ["127.0.0.1", "1", "--auth-code", "x\ny"]),
    ("check", ["127.0.0.1", "1", "-t", "inf"]),
    ("check", ["127.0.0.1", "1", "-t", "1e9"]),
    ("check", ["127.0.0.1", "1", "-4", "-6"]),
    ("check", ["a", "1", "-H", "b"]),
    ("record", ["a", "1", "-H", "b", "-o", "x.json"]),
    ("record", ["127.0.0.1", "1", "-o", "x.json", "-t", "nan"]),
    ("check", ["--bogus"]),
    ("check", ["-t", "1", "127.0.0.1", "1", "extra"]),
    ("record", ["-o", "x.json", "127.0.0.1", "1", "extra"]),
])
def test_a_usage_error_is_one_line_with_the_usage_of_the_command_at_hand(command, args):
    result = tps(command, *args)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"usage: tpsharness {command} "), lines
    assert lines[-1].startswith(f"tpsharness {command}: error: "), lines
    assert "Traceback" not in result.stderr + result.stdout


def test_record_to_a_directory_is_a_usage_error(tmp_path, fake, capsys):
    assert main(["record", *map(str, fake.address), "-o", str(tmp_path), "--force"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("usage: tpsharness record ") and "is a directory" in err


def test_record_against_a_closed_port_says_what_arrived_in_one_line(tmp_path, capsys):
    port = free_port()
    assert main(["record", "127.0.0.1", str(port), "-o", str(tmp_path / "x.json"), "-t", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tpsharness record: nothing to record: arrived: connect: TPS 127.0.0.1:{port} "
                          "refused the connection after") and err.count("\n") == 1
    assert not (tmp_path / "x.json").exists()


def test_record_to_a_dash_writes_the_scenario_to_stdout(tmp_path, fake, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["record", *map(str, fake.address), "-o", "-"]) == 0
    scenario = json.loads(capsys.readouterr().out)
    assert scenario["steps"][-1]["do"] == "expect_receipt"
    assert not (tmp_path / "-").exists()


def test_record_sends_the_auth_code_given(tmp_path, capsys):
    from fake_tps import FakeTPS
    server = FakeTPS(check_auth="1234")
    with server.start_in_thread():
        assert main(["record", *map(str, server.address), "--auth-code", "1234",
                     "-o", str(tmp_path / "r.json")]) == 0
    scenario = json.loads((tmp_path / "r.json").read_text())
    fields = [step["fields"] for step in scenario["steps"] if "fields" in step]
    assert fields and fields[0]["ErrorNum"] == "200", scenario["steps"]
    assert scenario["actors"]["device"]["auth_code"] == "1234"


def test_record_stops_at_a_refused_register_and_names_the_stage_as_check_does(tmp_path, capsys):
    from fake_tps import FakeTPS
    server = FakeTPS(check_auth="1234")
    with server.start_in_thread():
        started = time.monotonic()
        assert main(["record", *map(str, server.address), "--auth-code", "9999", "-t", "2",
                     "-o", str(tmp_path / "r.json")]) == 0
        assert time.monotonic() - started < 1.5, "record waited for steps a refusal ruled out"
    last = json.loads((tmp_path / "r.json").read_text())["steps"][-1]
    assert last["do"] == "expect_reply" and last["fields"]["ErrorNum"] == "401"
    assert last["note"].startswith("recorded: register: the TPS refused the register with ErrorNum 401")


def test_record_keeps_to_its_timeout_and_blames_the_register(tmp_path, fake, capsys):
    fake.configure(faults={"silent"})
    started = time.monotonic()
    assert main(["record", *map(str, fake.address), "-t", "0.5", "-o", str(tmp_path / "r.json")]) == 0
    assert time.monotonic() - started < 0.5 + GRACE + 0.5       # plus starting the recording
    last = json.loads((tmp_path / "r.json").read_text())["steps"][-1]
    assert last["note"].startswith("recorded: register: "), last


def test_record_reads_strict_http_when_asked(tmp_path, fake, capsys):
    """The field acks (no Content-Length) cannot be read as strict HTTP/1.1: the
    recording says so where the client's ack was due."""
    assert main(["record", *map(str, fake.address), "--strict-http", "-o", str(tmp_path / "r.json")]) == 0
    steps = json.loads((tmp_path / "r.json").read_text())["steps"]
    assert "reply 200 has no Content-Length" in steps[-1].get("note", ""), steps[-1]


def test_check_over_ipv6_only_reaches_a_server_on_ipv6(capsys):
    from fake_tps import FakeTPS
    server = FakeTPS(host="::1")
    with server.start_in_thread():
        port = str(server.address[1])
        assert main(["check", "::1", port, "-6"]) == 0
        assert main(["check", "::1", port, "-4"]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("TPS OK - [::1]:"), out
    assert "connect: '::1' does not resolve to an IPv4 address (only to ::1)" in out[1], out


# -- papercuts a new user hit (issue 20) --------------------------------------------------------

def test_an_inside_range_is_reported_as_inside(fake):
    result = tps("check", *map(str, fake.address), "-w", "@0:100000")
    assert result.returncode == 1
    assert "inside the warning range @0:100000" in result.stdout, result.stdout
    assert "outside" not in result.stdout


def test_an_ipv4_only_address_with_dash_6_says_it_has_no_ipv6_address():
    result = tps("check", "127.0.0.1", "6604", "-6", "-t", "1")
    assert result.returncode == 2
    assert result.stdout.startswith("TPS CRITICAL - connect: '127.0.0.1' does not resolve to an "
                                    "IPv6 address (only to 127.0.0.1) after "), result.stdout


def test_a_name_that_resolves_only_to_ipv4_with_dash_6_says_so(monkeypatch, capsys):
    """As ``check localhost -6`` where localhost has no IPv6 address."""
    import socket
    real = socket.getaddrinfo

    def ipv4_only(host, port, family=0, kind=0, *args):
        if host == "localhost" and family == socket.AF_INET6:
            raise socket.gaierror(socket.EAI_ADDRFAMILY, "Address family for hostname not supported")
        return real("127.0.0.1" if host == "localhost" else host, port, family, kind, *args)

    monkeypatch.setattr(socket, "getaddrinfo", ipv4_only)
    assert main(["check", "localhost", "6604", "-6", "-t", "1"]) == 2
    out = capsys.readouterr().out
    assert "connect: 'localhost' does not resolve to an IPv6 address (only to 127.0.0.1)" in out, out
    assert "cannot resolve" not in out


@pytest.mark.parametrize("thresholds, status, state", [(["-c", "0.001"], 2, 2), (["-w", "0.001"], 1, 1),
                                                       ([], 0, 0)])
def test_prometheus_output_says_the_threshold_state_beside_success(fake, thresholds, status, state):
    result = tps("check", *map(str, fake.address), "--prometheus", *thresholds)
    assert result.returncode == status, result.stdout
    lines = result.stdout.splitlines()
    assert "tps_probe_success 1" in lines          # the payload did arrive
    assert f"tps_probe_state {state}" in lines, lines
    assert any(line.startswith("# HELP tps_probe_state ") and "0 OK, 1 WARNING" in line for line in lines)


def test_a_failed_stage_is_state_2_in_prometheus_output():
    result = tps("check", "127.0.0.1", str(free_port()), "--prometheus", "-t", "1")
    assert result.returncode == 2
    assert {"tps_probe_success 0", "tps_probe_state 2"} <= set(result.stdout.splitlines())


def test_every_metric_of_prometheus_output_is_documented_with_its_meaning(fake):
    from pathlib import Path
    names = set(re.findall(r"^# TYPE (\w+) ", tps("check", *map(str, fake.address), "--prometheus").stdout,
                           re.M))
    doc = (Path(__file__).resolve().parent.parent / "docs" / "check.md").read_text()
    missing = [name for name in sorted(names) if not re.search(rf"^\| `{name}(\{{[^`]*\}})?` \| \w", doc, re.M)]
    assert len(names) == 5 and not missing, missing


@pytest.mark.parametrize("command", [["check", "--tiemout", "3", "127.0.0.1", "6604"],
                                     ["load", "--devcies", "10", "127.0.0.1", "16700"],
                                     ["fuzz", "--bugdet", "5", "127.0.0.1", "16700"]])
def test_a_misspelt_option_before_host_and_port_is_named_not_taken_for_host(command, capsys):
    """argparse would take the misspelt option's value for HOST and blame PORT."""
    with pytest.raises(SystemExit) as exit:
        main(command)
    assert exit.value.code == 3
    assert capsys.readouterr().err.splitlines()[-1] == \
        f"tpsharness {command[0]}: error: unrecognized arguments: {command[1]}"


def test_an_unambiguous_prefix_of_an_option_is_still_taken(capsys):
    from tpsharness.cli import build_parser, misspelt_option
    assert misspelt_option(build_parser(), ["check", "--time", "1", "--warn=3", "h", "1"]) is None


def test_only_check_speaks_nagios_when_a_command_fails_inside(monkeypatch, capsys):
    """A bug or a late Ctrl-C in record, load, report, fuzz or the exporter is its own
    line on stderr and exit 2 ("the run could not be carried out"), not check's
    'TPS UNKNOWN' line on stdout."""
    import tpsharness.load.cli as load_cli

    def broken(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(load_cli, "cmd_report", broken)
    assert main(["report", "whatever.json", "-o", "whatever.html"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "tpsharness report: interrupted\n"


def test_a_bracketed_ipv6_host_is_checked_as_the_status_line_writes_it(capsys):
    from fake_tps import FakeTPS
    server = FakeTPS(host="::1")
    with server.start_in_thread():
        assert main(["check", "[::1]", str(server.address[1])]) == 0
    assert capsys.readouterr().out.startswith(f"TPS OK - [::1]:{server.address[1]} registered ")
