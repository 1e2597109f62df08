"""The Prometheus exporter, over real HTTP: probes of the fake, of a closed port, limits."""

import re
import threading
import urllib.error
import urllib.request

import pytest

pytest.importorskip("prometheus_client")

from conftest import free_port, wait_until  # noqa: E402
from tpsharness.exporter import BadProbe, Exporter, make_exporter_server, parse_target  # noqa: E402


@pytest.fixture
def exporter_at():
    """Start an Exporter on a free loopback port; its base URL and the exporter."""
    servers = []

    def start(**options):
        exporter = Exporter(**options)
        server = make_exporter_server(exporter, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}", exporter

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)


def get(url, headers=None, timeout=15):
    """(status, body text) of a GET, error statuses included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metric(text, name, labels=""):
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert match, f"{name}{labels} not in:\n{text}"
    return float(match.group(1))


def test_a_probe_of_a_healthy_tps_reports_success_and_stage_durations(exporter_at, fake):
    base, _ = exporter_at()
    host, port = fake.address
    status, text = get(f"{base}/probe?target={host}:{port}")
    assert status == 200
    assert metric(text, "tps_probe_success") == 1
    for stage in ("connect", "register", "send"):
        assert metric(text, "tps_probe_duration_seconds", f'{{stage="{stage}"}}') > 0
    assert metric(text, "tps_probe_duration_seconds", '{stage="receipt"}') >= 0
    assert metric(text, "tps_probe_failed_stage", '{stage="connect"}') == 0


def test_a_probe_of_a_closed_port_fails_at_connect(exporter_at):
    base, _ = exporter_at()
    status, text = get(f"{base}/probe?target=127.0.0.1:{free_port()}&timeout=2")
    assert status == 200        # the probe ran; its metrics say it failed
    assert metric(text, "tps_probe_success") == 0
    assert metric(text, "tps_probe_failed_stage", '{stage="connect"}') == 1


def test_the_exporter_counts_its_probes_in_its_own_metrics(exporter_at, fake):
    base, _ = exporter_at()
    host, port = fake.address
    get(f"{base}/probe?target={host}:{port}")
    get(f"{base}/probe?target=127.0.0.1:{free_port()}&timeout=1")
    status, text = get(f"{base}/metrics")
    assert status == 200
    assert metric(text, "tps_exporter_probes_total", '{result="success"}') == 1
    assert metric(text, "tps_exporter_probes_total", '{result="failure"}') == 1


@pytest.mark.parametrize("query, complaint", [
    ("", "target parameter is required"),
    ("target=127.0.0.1:70000", "port must be 1-65535"),
    ("target=127.0.0.1:6604&timeout=inf", "positive number of seconds"),
    ("target=127.0.0.1:6604&timeout=-1", "positive number of seconds"),
    ("target=127.0.0.1:6604&timeout=soon", "not a number of seconds"),
])
def test_a_bad_probe_request_gets_400_with_the_reason(exporter_at, query, complaint):
    base, _ = exporter_at()
    status, text = get(f"{base}/probe?{query}")
    assert status == 400
    assert complaint in text


def test_the_probe_timeout_is_capped_and_fits_the_scrape_timeout():
    exporter = Exporter(max_timeout=10)
    assert exporter.probe_timeout({"timeout": ["1e9"]}, None) == 10
    assert exporter.probe_timeout({"timeout": ["8"]}, "3") == 2.5
    assert exporter.probe_timeout({}, None) == 5.0
    # a scrape timeout within the 0.5 s offset still bounds the probe (it was ignored)
    assert exporter.probe_timeout({"timeout": ["5"]}, "0.3") == 0.15
    assert exporter.probe_timeout({"timeout": ["5"]}, "0.5") == 0.25
    assert exporter.probe_timeout({"timeout": ["5"]}, "nonsense") == 5


def test_a_probe_over_the_concurrency_limit_gets_503_at_once(exporter_at):
    held = threading.Event()
    release = threading.Event()

    def slow_check(host, port, *, timeout):
        held.set()
        release.wait(10)
        from tpsharness.checker import CheckResult
        return CheckResult(False, "connect", "held", host, port, "", 0, {"total": 1.0})

    base, exporter = exporter_at(max_concurrent=1)
    exporter._check = slow_check
    first = threading.Thread(target=get, args=(f"{base}/probe?target=127.0.0.1:1",), daemon=True)
    first.start()
    try:
        assert held.wait(10), "the first probe never started"
        status, text = get(f"{base}/probe?target=127.0.0.1:1")
        assert status == 503 and "too many probes at once (the limit is 1)" in text
    finally:
        release.set()
        first.join(10)
    assert wait_until(lambda: "tps_exporter_probes_in_flight 0.0" in get(f"{base}/metrics")[1])
    assert 'tps_exporter_rejected_probes_total{reason="busy"} 1.0' in get(f"{base}/metrics")[1]


@pytest.mark.parametrize("text, address", [
    ("tps.example.net", ("tps.example.net", 6604)),
    ("10.0.0.1:7000", ("10.0.0.1", 7000)),
    ("[::1]:7000", ("::1", 7000)),
    ("::1", ("::1", 6604)),
])
def test_targets_are_host_and_port_with_the_tps_port_as_default(text, address):
    assert parse_target(text) == address


@pytest.mark.parametrize("text", [":6604", "[::1", "host:port", "[::1]x"])
def test_malformed_targets_are_refused(text):
    with pytest.raises(BadProbe):
        parse_target(text)


def test_the_exporter_command_serves_probes_until_sigterm(fake):
    import signal
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "tpsharness", "exporter", "--listen", "127.0.0.1:0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = re.match(r"tpsharness exporter listening on (http://127\.0\.0\.1:\d+)/", line)
        assert match, line + process.stderr.read()
        host, port = fake.address
        status, text = get(f"{match.group(1)}/probe?target={host}:{port}")
        assert status == 200 and metric(text, "tps_probe_success") == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        process.kill()
        process.wait(10)


def test_the_exporter_command_refuses_a_bad_listen_address_in_one_line():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "tpsharness", "exporter", "--listen", "127.0.0.1:99999"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert result.stderr.splitlines()[-1] == ("tpsharness exporter: error: argument --listen: "
                                              "'127.0.0.1:99999': the port must be 0-65535")
