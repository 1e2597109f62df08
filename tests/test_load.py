"""Load mode: accounting at the devices, thresholds and exit codes, files, workers,
the report, Ctrl-C and a TPS that dies. Runs are a second or two each."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest

pytest.importorskip("hdrh")

import tpsharness  # noqa: E402
from tpsharness.load.accounting import Streams  # noqa: E402
from tpsharness.load.config import LoadConfig, LoadUsageError  # noqa: E402
from tpsharness.load.fake import FakeProcess  # noqa: E402
from tpsharness.load.payload import HEADER_SIZE, PayloadMaker, read  # noqa: E402
from tpsharness.load.result import LoadResult  # noqa: E402
from tpsharness.load.thresholds import Threshold, apply  # noqa: E402

from conftest import free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = dict(devices=8, clients=4, duration=1.0, timeout=2.0, drain=3.0)   # a drain ends once all arrived


def cli(*args, timeout=25):
    """``python -m tpsharness load ...`` in a subprocess: (exit code, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "tpsharness", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


# -- accounting --------------------------------------------------------------------------------

def test_a_stream_tells_reordered_from_duplicated_messages():
    streams = Streams([0], [0])
    for seq in (0, 2, 1, 1, 3, 3):
        streams.receive(0, seq)
    assert (streams.delivered, streams.reordered, streams.duplicated) == (4, 1, 2)


def test_a_payload_with_any_byte_changed_reads_as_corrupted():
    body = PayloadMaker(64).make(3, 7, 11, 12.5, 1)
    assert len(body) == 64 and read(body) == (3, 7, 11, 12.5, 1)
    for index in (0, 5, HEADER_SIZE - 1, 63):
        changed = bytearray(body)
        changed[index] ^= 1
        assert read(bytes(changed)) is None


def _device_with_known_heads(size):
    from tpsharness.load.endpoints import LoadDevice
    from tpsharness.protocol import PrivateDataTemplate
    device = LoadDevice(("127.0.0.1", 1), "cam-0")
    builds = [PrivateDataTemplate(f"app-{i}", "cam-0").build for i in (1, 22)]
    device.relay_heads = {build(bytes(size))[:-size]: (f"app-{i}", size)
                          for i, build in zip((1, 22), builds)}
    return device, builds


def _relays(messages):
    """(src, body) of each relayed request, however the device framed it."""
    return [m if m.__class__ is tuple else (m.src, m.body) for m in messages]


@pytest.mark.parametrize("cut", [0, 1, 5, 100, 139, 140, 141, 200, 300])
def test_a_device_frames_known_relays_split_or_coalesced_anywhere(cut):
    from tpsharness.protocol import PrivateDataTemplate
    device, builds = _device_with_known_heads(64)
    stranger = PrivateDataTemplate("app-9", "cam-0").build(b"s" * 10)     # an unknown header block
    bodies = [bytes([i]) * 64 for i in range(4)]
    stream = builds[0](bodies[0]) + builds[1](bodies[1]) + b"\r\n" + stranger + builds[0](bodies[2]) \
        + builds[1](bodies[3])
    expected = [("app-1", bodies[0]), ("app-22", bodies[1]), ("app-9", b"s" * 10),
                ("app-1", bodies[2]), ("app-22", bodies[3])]
    got = []
    for piece in (stream[:cut], stream[cut:cut + 150], stream[cut + 150:]):
        if piece:
            got += _relays(device.messages(piece))
    assert got == expected
    assert device.messages(builds[0](bodies[0]) * 3) == [("app-1", bodies[0])] * 3   # framed fast again


def test_a_client_counts_whole_acks_in_a_batch_and_parses_anything_else():
    from tpsharness.load.endpoints import LoadClient
    from tpsharness.protocol import reply
    client = LoadClient(("127.0.0.1", 1), "app-0")
    ack = reply(200)
    assert client.whole_acks(ack * 3) == 3
    assert client.whole_acks(reply(404)) == 0 and client.whole_acks(ack + ack[:5]) == 0
    assert [m.status for m in client.messages(ack[:7])] == []            # a split ack is buffered:
    assert client.whole_acks(ack) == 0                                  # its rest is not a whole ack
    assert [m.status for m in client.messages(ack[7:] + ack)] == [200, 200]


def test_buffered_latencies_land_in_the_histogram_as_if_recorded_one_by_one():
    from tpsharness.load.histograms import Latencies, new_histogram
    values = [1, 7, 2047, 2048, 2049, 4095, 4097, 123_456, 9_999_999, 3_600_000_000] * 3 + [5000, 5001]
    latencies, reference = Latencies(), new_histogram()
    for value in values:
        reference.record_value(value)
    latencies.buffer.extend(values)
    latencies.flush()
    assert latencies.total.encode() == reference.encode()


def test_relays_the_tps_drops_count_as_lost():
    result = tpsharness.load(window=2, fake_args=["--fault=drop-relays"], **dict(SHORT, drain=0.3))
    assert result.sent > 0 and result.acked == result.sent
    assert result.delivered == 0 and result.lost == result.sent


def test_relays_delivered_twice_count_as_duplicated():
    result = tpsharness.load(window=2, fake_args=["--fault=duplicate-relays"], **SHORT)
    assert result.delivered == result.sent > 0 and result.lost == 0
    # each delivery's twin follows at once; at most the last window (2 x 4 clients) may
    # still be on its way when the drain sees every message delivered
    assert result.sent - 8 <= result.duplicated <= result.sent


def test_corrupted_relays_count_as_corrupted_not_delivered():
    result = tpsharness.load(window=2, fake_args=["--fault=corrupt-relays"], **SHORT)
    assert result.sent > 0 and result.corrupted == result.sent and result.delivered == 0


def test_an_open_loop_run_delivers_what_it_sends_with_replies_when_asked():
    result = tpsharness.load(rate=400, reply_every=4, **SHORT)
    assert result.sent == 400
    assert result.delivered == result.sent and result.lost == 0
    assert result.latency("relay")["count"] == result.delivered
    assert result.latency("register")["count"] == 8
    assert result.replies == result.latency("reply")["count"] > 0
    assert result.error_count == 0 and result.exit_code == 0


def test_devices_heartbeat_at_the_register_replys_keepalive_interval():
    result = tpsharness.load(devices=5, clients=1, duration=1.5, window=1, heartbeat=True,
                             fake_args=["--keepalive-interval=1"], drain=0.3)
    assert result.heartbeats >= 5 and result.error_count == 0 and result.devices == 5


def test_the_ramp_spreads_the_devices_registrations_before_the_traffic():
    import time
    with FakeProcess() as address:
        started = time.monotonic()
        result = tpsharness.load(*address, devices=4, clients=1, duration=0.2, window=1, ramp=0.8,
                                 drain=0.1)
        elapsed = time.monotonic() - started
    # the last of 4 devices starts 3/4 of the ramp in; traffic only after every one registered
    assert elapsed >= 0.6 + 0.2
    assert result.devices == 4 and result.delivered > 0


def test_without_heartbeats_devices_send_none():
    result = tpsharness.load(devices=5, clients=1, duration=0.5, window=1,
                             fake_args=["--keepalive-interval=1"], drain=0.3)
    assert result.heartbeats == 0


def test_the_harness_runs_a_load_against_its_tps(tps):
    result = tps.load(devices=4, clients=2, duration=0.5, window=1, drain=3.0)
    assert result.delivered == result.sent > 0 and result.lost == 0


# -- thresholds and exit codes -----------------------------------------------------------------

@pytest.mark.parametrize("text", ["relay.p99<50ms", "lost==0", "errors.rate<0.1%",
                                  "delivered.rate>=20000/s", "ack.max<=2s", "register.count==8"])
def test_threshold_expressions_parse(text):
    assert Threshold.parse(text).text == text


@pytest.mark.parametrize("text", ["relay.p42<5ms", "lost==0ms", "delivered.rate<5%", "foo<1",
                                  "relay.p99 is low", "sent.rate<5", "relay.p99<1", "ack.max<=2"])
def test_a_bad_threshold_is_a_usage_error(text):
    with pytest.raises(LoadUsageError):
        Threshold.parse(text)


def test_a_latency_without_a_unit_is_refused_with_the_units_it_takes():
    with pytest.raises(LoadUsageError, match=r"^bad threshold 'relay.p99<1': a latency is in us, ms or s "
                                             r"\('relay.p99<1ms'\)$"):
        Threshold.parse("relay.p99<1")


def test_thresholds_hold_or_fail_on_the_figures():
    part = {"counters": {"sent": 1000, "delivered": 990, "lost": 10}, "histograms": {},
            "errors": {"404 Not Found": {"count": 2, "example": "x"}}, "series": [], "duration": 2.0,
            "aborted": None, "workers": []}
    result = apply(LoadResult([part]), [Threshold.parse(t) for t in
                                        ("lost==0", "errors.rate<0.1%", "errors.rate<1%",
                                         "delivered.rate>=495/s", "relay.p99<50ms")])
    assert [held for _, held, _ in result.thresholds] == [False, False, True, True, False]
    assert result.thresholds[4][2] == "nothing measured"
    assert result.exit_code == 1


@pytest.mark.parametrize("args, message", [
    (["--rate", "0"], "--rate must be above 0"),
    (["--payload-size", "16"], "smaller than the 32-byte header"),
    (["--devices", "0"], "--devices: must be at least 1"),
    (["--workers", "-3"], "--workers: must be at least 1, not -3"),
    (["--workers", "0"], "--workers: must be at least 1, not 0"),
    (["--devices", "1", "--clients", "5000"], "over 1000 per device"),
    (["--threshold", "relay.p99<5parsecs"], "bad threshold"),
    (["127.0.0.1", "70000"], "PORT: port must be 1-65535"),
    (["--workers", "3", "--devices", "2"], "3 workers cannot share 2 devices"),
])
def test_impossible_parameters_are_a_usage_error(args, message):
    code, out, err = cli("load", *args)
    assert code == 3
    assert message in err and "usage:" in err
    assert "fake TPS" not in out           # nothing was started


def test_rate_and_window_together_are_a_usage_error():
    code, _, err = cli("load", "--rate", "10", "--window", "2")
    assert code == 3 and "not allowed with" in err


def test_exit_0_when_every_threshold_holds_and_1_when_one_fails():
    code, out, _ = cli("load", "--devices", "4", "--clients", "2", "--duration", "1", "--quiet",
                       "--threshold", "lost==0", "--threshold", "delivered.rate>=1/s")
    assert code == 0, out
    assert "bundled fake TPS at 127.0.0.1:" in out and "ok    lost==0" in out
    code, out, _ = cli("load", "--devices", "4", "--clients", "2", "--duration", "1", "--quiet",
                       "--threshold", "lost==0", "--threshold", "delivered.rate>=1000000000/s")
    assert code == 1, out
    assert "FAIL  delivered.rate>=1000000000/s" in out


STRAY = b"POST /Stray HTTP/1.1\r\nContent-Length: 0\r\n\r\n"


def relay_after_a_stray(tps, conn, message):
    """Before the ack and before the relay, a request no TPS sends its peers (an
    unknown path): a stray message, framed and well-formed, that a load run must
    count and read past."""
    from tpsharness.protocol import reply
    conn.sendall(STRAY + reply(200))
    tps.devices[message.dest].sendall(STRAY + message.raw)


def test_a_stray_request_from_the_tps_is_an_error_counted_and_reading_goes_on() -> None:
    from hostile_tps import HostileTPS
    with HostileTPS(relay=relay_after_a_stray) as tps:
        result = tpsharness.load(*tps.address, devices=2, clients=2, window=2, duration=1.0,
                                 timeout=2.0, drain=3.0)
    assert result.sent > 0 and result.delivered == result.sent and result.lost == 0
    stray = result.errors["protocol error"]
    assert stray["count"] >= result.sent            # one before each relay (and more before acks)
    assert "TPS sent a request that is neither private data nor a reply" in stray["example"]
    assert "/Stray" in stray["example"]


def test_a_tps_that_refuses_connections_ends_with_exit_2_and_the_reason():
    code, out, _ = cli("load", "127.0.0.1", str(free_port()), "--devices", "3", "--clients", "1",
                       "--duration", "1", "--quiet")
    assert code == 2, out
    assert "could not be carried out: no device could register" in out and "refused" in out


# -- what a person sees -----------------------------------------------------------------------

def snapshot(second):
    from tpsharness.load.histograms import encode, new_histogram
    histogram = new_histogram()
    histogram.record_value(2500, 10)
    return {"t": second, "span": 1.0, "sent": 100, "delivered": 90, "errors": 1, "cpu": 0.5,
            "relay": encode(histogram), "total_sent": 100 * second, "total_delivered": 90 * second,
            "total_errors": second}


def test_on_a_terminal_the_progress_line_is_rewritten_every_second():
    import io
    from tpsharness.load.output import Progress
    out = io.StringIO()
    progress = Progress(out, tty=True)
    for second in (1, 2, 3):
        progress(snapshot(second))
    progress.done()
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "delivered        90/s (270)" in text and "relay p99 2.50 ms" in text and "CPU 50%" in text


def test_without_a_terminal_a_progress_line_comes_after_the_first_second_then_every_5():
    import io
    from tpsharness.load.output import Progress
    out = io.StringIO()
    progress = Progress(out, tty=False)
    for second in range(1, 12):
        progress(snapshot(second))
    assert [line.split("s")[0].strip() for line in out.getvalue().splitlines()] == ["1", "5", "10"]


def test_the_summary_warns_when_a_worker_was_busier_than_90_percent():
    from tpsharness.load.output import summary_text
    part = {"counters": {"sent": 10, "delivered": 10}, "histograms": {}, "errors": {}, "series": [],
            "duration": 1.0, "aborted": None,
            "workers": [{"name": "0:popen", "cpu_seconds": 0.95, "wall_seconds": 1.0, "delivered": 5},
                        {"name": "1:popen", "cpu_seconds": 0.5, "wall_seconds": 1.0, "delivered": 5}]}
    text = summary_text(LoadResult([part]))
    assert "WARNING: worker 0:popen used over 90% of a core" in text
    assert "worker 1:popen used" not in text


# -- files and the report ----------------------------------------------------------------------

def test_json_files_of_one_configuration_merge_exactly(tmp_path):
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    with FakeProcess() as (host, port):
        for path in paths:
            code, out, _ = cli("load", host, str(port), "--devices", "4", "--clients", "2", "--duration",
                               "1", "--quiet", "--json", str(path))
            assert code == 0, out
    first, second = (LoadResult.read_json(p) for p in paths)
    merged = LoadResult.merged([first, second])
    assert merged.delivered == first.delivered + second.delivered
    for phase in ("register", "relay", "ack"):
        assert merged.latency(phase)["count"] == first.latency(phase)["count"] + second.latency(phase)["count"]
    assert merged.latency("relay")["max"] == max(first.latency("relay")["max"], second.latency("relay")["max"])
    assert sum(row["delivered"] for row in merged.series_rows()) == merged.delivered


def test_csv_files_hold_the_time_series(tmp_path):
    code, out, _ = cli("load", "--devices", "4", "--clients", "2", "--duration", "2", "--quiet",
                       "--csv", str(tmp_path / "run"))
    assert code == 0, out
    rows = (tmp_path / "run_series.csv").read_text().splitlines()
    assert rows[0].startswith("second,span,sent,delivered,errors") and len(rows) >= 3
    assert (tmp_path / "run_latency.csv").read_text().splitlines()[0].startswith("phase,count,p50_ms")


@pytest.mark.slow
def test_the_report_shows_each_run_with_its_own_configuration_and_rates(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from tpsharness.cli import main
    paths = [str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    runs = [tpsharness.load(window=2, **SHORT),
            tpsharness.load(rate=300, **dict(SHORT, devices=6, clients=3, duration=2.0))]
    for run, path in zip(runs, paths):
        run.write_json(path)
    page = tmp_path / "report.html"
    assert main(["report", *paths, "-o", str(page)]) == 0
    assert "2 runs (2 passed, 0 failed)" in capsys.readouterr().out
    text = page.read_text()
    assert text.count('src="data:image/png;base64,') == 5        # 2 per run, and the distributions
    for title in ("Throughput over time", "Relay latency over time", "Latency distribution"):
        assert f"<h3>{title}</h3>" in text
    for run in runs:
        again = LoadResult.read_json(paths[runs.index(run)])
        assert f"{again.config['devices']} devices, {again.config['clients']} clients" in text
        # each run's rate is its own count over its own duration, never a sum over the first's
        assert re.search(rf"^delivered +{run.delivered:,} +{run.delivered / run.duration:,.1f}$", text, re.M)
    assert "8 devices, 4 clients, closed loop, window 2" in text and "6 devices, 3 clients, open loop 300" in text
    assert text.count('<p class="verdict" style="background: #1a7f37"><b>PASSED</b></p>') == 2   # each run's verdict


def test_the_report_refuses_a_file_that_is_not_a_result(tmp_path):
    path = tmp_path / "other.json"
    path.write_text("[1, 2]")
    code, _, err = cli("report", str(path), "-o", str(tmp_path / "r.html"))
    assert code == 3 and "not a tpsharness load result" in err


def test_a_json_file_that_is_not_a_result_is_refused(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a tpsharness load result"):
        LoadResult.read_json(path)


# -- usage errors before anything starts ---------------------------------------------------------

def test_a_config_needs_a_payload_that_holds_the_header():
    with pytest.raises(LoadUsageError, match="32-byte header"):
        LoadConfig(None, payload_size=31)


def test_a_share_of_workers_adds_up_to_the_whole():
    config = LoadConfig(None, devices=10, clients=3, rate=300.0)
    shares = [config.share(i, 2) for i in range(2)]
    assert [s.devices for s in shares] == [5, 5] and [s.clients for s in shares] == [2, 1]
    assert sum(s.rate for s in shares) == pytest.approx(300.0)


# -- workers -------------------------------------------------------------------------------------

def test_two_workers_share_the_devices_and_merge_their_figures():
    result = tpsharness.load(devices=6, clients=3, duration=1.0, window=2, workers=2, drain=3.0)
    assert [w["devices"] for w in result.workers] == [3, 3]
    assert [w["clients"] for w in result.workers] == [2, 1]
    assert result.devices == 6 and result.clients == 3
    assert result.delivered == result.sent > 0 and result.lost == 0
    assert result.latency("relay")["count"] == result.delivered == sum(w["delivered"] for w in result.workers)


def test_tx_popen_specs_run_workers_from_the_command_line():
    code, out, _ = cli("load", "--devices", "4", "--clients", "2", "--duration", "1", "--quiet",
                       "--tx", "popen", "--tx", "popen", "--threshold", "lost==0")
    assert code == 0, out
    assert "worker 0:popen" in out and "worker 1:popen" in out


def test_a_bad_tx_spec_is_a_usage_error():
    code, _, err = cli("load", "--tx", "carrier-pigeon=home")
    assert code == 3 and "bad --tx spec" in err


# -- Ctrl-C and a TPS that dies ---------------------------------------------------------------------

def start_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen([sys.executable, "-m", "tpsharness", "load", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def first_progress_line(process):
    for line in process.stdout:
        if line.strip().startswith("1s"):
            return line
    raise AssertionError(f"no progress line; stderr: {process.stderr.read()}")


def test_ctrl_c_ends_the_run_with_a_partial_summary():
    process = start_cli("--devices", "4", "--clients", "2", "--duration", "20")
    try:
        first_progress_line(process)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=15)
    finally:
        process.kill()
    assert process.returncode == 2, out
    assert "interrupted (Ctrl-C): the figures below are partial" in out
    delivered = int(out.split("delivered")[1].split()[0].replace(",", ""))
    assert delivered > 0


def test_a_tps_that_dies_mid_run_ends_it_with_exit_2_the_reason_and_the_figures():
    fake = FakeProcess()
    host, port = fake.start()
    try:
        process = start_cli(host, str(port), "--devices", "4", "--clients", "2", "--duration", "20")
        first_progress_line(process)
        fake.process.kill()
        out, _ = process.communicate(timeout=15)
    finally:
        fake.stop()
        process.kill()
    assert process.returncode == 2, out
    assert "the run could not be carried out: the TPS dropped every" in out
    assert int(out.split("delivered")[1].split()[0].replace(",", "")) > 0
    assert "reset" in out or "closed by the TPS" in out


@pytest.mark.slow
@pytest.mark.timeout(60)        # eleven short runs, each with its own fake TPS process
def test_the_load_benchmark_prints_its_figures_side_by_side():
    bench = os.path.join(ROOT, "tests", "bench")
    done = subprocess.run([sys.executable, "bench_load.py", "--quick", "--skip-workers"], cwd=bench,
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=55)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"^cpu .* ours [\d.]+ us per relay .* asyncio [\d.]+ us .* ratio \d+\.\d\dx", out, re.M), out
    assert re.search(r"^memory .* holding 200 registered devices", out, re.M), out
    assert re.search(r"^accuracy .* --reply-delay 0.05: relay p50 \d+\.\d\d ms", out, re.M), out
    assert re.search(r"^accuracy .* open loop at", out, re.M), out


def test_load_from_python_without_the_extra_says_which_extra_to_install():
    import subprocess
    import sys
    code = ("import sys; sys.modules['hdrh'] = None\n"
            "import tpsharness\n"
            "try:\n    tpsharness.load(duration=0.1)\n"
            "except ModuleNotFoundError as error:\n    print(error)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert "pip install 'tpsharness[load]'" in done.stdout, done.stdout + done.stderr


# -- the command line's own conventions (issue 20) ------------------------------------------------

def test_the_usage_line_of_load_names_the_command_as_it_is_run():
    script = os.path.join(os.path.dirname(sys.executable), "tpsharness")
    if not os.path.exists(script):
        pytest.skip("no tpsharness console script beside this Python")
    done = subprocess.run([script, "load", "--rate", "0"], capture_output=True, text=True, timeout=25,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 3
    assert done.stderr.startswith("usage: tpsharness load ") and "python -m" not in done.stderr


@pytest.mark.parametrize("command, module, args", [
    ("load", "hdrh", ["load", "--duration", "1"]),
    ("report", "matplotlib", ["report", "RESULT", "-o", "OUT"]),
])
def test_a_missing_extra_is_one_line_naming_the_pip_command_and_exit_3(tmp_path, command, module, args):
    result = tmp_path / "run.json"
    result.write_text(json.dumps({"format": "tpsharness-load/2", "counters": {}, "duration": 1.0}))
    args = [str(result) if a == "RESULT" else str(tmp_path / "r.html") if a == "OUT" else a for a in args]
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from tpsharness.cli import main\n"
            f"sys.exit(main({args!r}))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=25,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr == (f"tpsharness {command}: needs the '{command}' extra: "
                           f"pip install 'tpsharness[{command}]'\n")
    assert not (tmp_path / "r.html").exists()


def test_a_result_file_that_cannot_be_written_is_refused_before_the_run(tmp_path):
    code, out, err = cli("load", "--duration", "0.2", "--json", str(tmp_path / "missing" / "run.json"))
    assert code == 3 and "no directory" in err and "fake TPS" not in out


def test_a_run_that_could_not_be_carried_out_says_so_on_stderr_and_exits_2():
    # an option the fake's parser takes (a bad one is a usage error: test_hostile_load.py)
    # but an address no socket here can bind
    code, out, err = cli("load", "--fake-option=--host=192.0.2.1", "--quiet", "--duration", "0.1")
    assert code == 2 and out == ""
    assert err.startswith("tpsharness load: the run could not be carried out: the bundled fake TPS did not start: "
                          "fake TPS: ") and "listen on 192.0.2.1:0" in err
