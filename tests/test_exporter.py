"""The Prometheus exporter, over real HTTP(S): probes, limits, the allowlist, TLS and
basic auth, debug output and modules."""

import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")

from conftest import free_port, wait_until  # noqa: E402
from exporter_helpers import exporter_at, get, held_checker, metric  # noqa: E402,F401  (a fixture)
from fake_tps.server import FakeTPS  # noqa: E402
from tpsharness.checker import check  # noqa: E402
from tpsharness.errors import ConfigError  # noqa: E402
from tpsharness.exporter import (AllowList, BadProbe, Exporter, load_modules,  # noqa: E402
                                 load_web_config, make_exporter_server, parse_target)
from tpsharness.exporter.allowlist import Rule  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


# -- probes ------------------------------------------------------------------------------------

def test_a_probe_of_a_healthy_tps_reports_success_and_stage_durations(exporter_at, fake):
    base, _, _ = exporter_at()
    host, port = fake.address
    status, text = get(f"{base}/probe?target={host}:{port}")
    assert status == 200
    assert metric(text, "tps_probe_success") == 1
    assert metric(text, "tps_probe_state") == 0
    for stage in ("connect", "register", "send"):
        assert metric(text, "tps_probe_duration_seconds", f'{{stage="{stage}"}}') > 0
    assert metric(text, "tps_probe_duration_seconds", '{stage="receipt"}') >= 0
    assert metric(text, "tps_probe_failed_stage", '{stage="connect"}') == 0


def test_a_probe_of_a_closed_port_fails_at_connect(exporter_at):
    base, _, _ = exporter_at()
    status, text = get(f"{base}/probe?target=127.0.0.1:{free_port()}&timeout=2")
    assert status == 200        # the probe ran; its metrics say it failed
    assert metric(text, "tps_probe_success") == 0
    assert metric(text, "tps_probe_state") == 2
    assert metric(text, "tps_probe_failed_stage", '{stage="connect"}') == 1


def test_a_name_that_does_not_resolve_is_a_failed_probe_not_an_error(exporter_at):
    base, _, _ = exporter_at()
    status, text = get(f"{base}/probe?target=no-such-host.invalid:6604&timeout=2")
    assert status == 200
    assert metric(text, "tps_probe_failed_stage", '{stage="connect"}') == 1


def test_the_exporter_counts_its_probes_in_its_own_metrics(exporter_at, fake):
    base, _, _ = exporter_at()
    host, port = fake.address
    get(f"{base}/probe?target={host}:{port}")
    get(f"{base}/probe?target=127.0.0.1:{free_port()}&timeout=1")
    status, text = get(f"{base}/metrics")
    assert status == 200
    assert metric(text, "tps_exporter_probes_total", '{result="success"}') == 1
    assert metric(text, "tps_exporter_probes_total", '{result="failure"}') == 1
    assert metric(text, "tps_exporter_connections_open") == 1      # this scrape's own
    assert metric(text, "process_resident_memory_bytes") > 0


@pytest.mark.parametrize("query, complaint", [
    ("", "target parameter is required"),
    ("target=127.0.0.1:70000", "port must be 1-65535"),
    ("target=127.0.0.1:6604&timeout=inf", "positive number of seconds"),
    ("target=127.0.0.1:6604&timeout=-1", "positive number of seconds"),
    ("target=127.0.0.1:6604&timeout=soon", "not a number of seconds"),
    ("target=127.0.0.1:6604&timeout=0.0000001", "leaves less than 1 ms for the probe"),
    ("target=a&target=b", "target is given 2 times"),
    ("target=127.0.0.1:6604&debug=yes", "debug must be true or false"),
])
def test_a_bad_probe_request_gets_400_with_the_reason(exporter_at, query, complaint):
    base, _, _ = exporter_at()
    status, text = get(f"{base}/probe?{query}")
    assert status == 400
    assert complaint in text and text.count("\n") == 1, text


def test_the_probe_timeout_is_capped_and_fits_the_scrape_timeout():
    exporter = Exporter(max_timeout=10)
    assert exporter.probe_timeout({"timeout": ["1e9"]}, None) == 10
    assert exporter.probe_timeout({"timeout": ["8"]}, "3") == 2.5
    assert exporter.probe_timeout({}, None) == 5.0
    # a scrape timeout within the 0.5 s offset still bounds the probe (it was ignored)
    assert exporter.probe_timeout({"timeout": ["5"]}, "0.3") == 0.15
    assert exporter.probe_timeout({"timeout": ["5"]}, "0.5") == 0.25
    assert exporter.probe_timeout({"timeout": ["5"]}, "0") == 5         # no limit, as blackbox_exporter
    with pytest.raises(BadProbe, match="'nonsense' is not a number of seconds"):
        exporter.probe_timeout({"timeout": ["5"]}, "nonsense")
    with pytest.raises(BadProbe, match="leaves less than 1 ms"):
        exporter.probe_timeout({}, "5e-324")


def test_a_probe_over_the_concurrency_limit_gets_503_at_once(exporter_at):
    slow_check, held, release = held_checker()
    base, exporter, _ = exporter_at(max_concurrent=1, checker=slow_check)
    first = threading.Thread(target=get, args=(f"{base}/probe?target=127.0.0.1:1",), daemon=True)
    first.start()
    try:
        assert held.wait(10), "the first probe never started"
        status, text = get(f"{base}/probe?target=127.0.0.1:1", timeout=2)
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


@pytest.mark.parametrize("text", [":6604", "[::1", "host:port", "[::1]x", "a..b", "x" * 400])
def test_malformed_targets_are_refused(text):
    with pytest.raises(BadProbe):
        parse_target(text)


def test_other_paths_and_methods_get_404_and_405(exporter_at):
    base, _, _ = exporter_at()
    assert get(f"{base}/nowhere")[0] == 404
    request = urllib.request.Request(f"{base}/probe?target=x", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 405 and refused.value.headers["Allow"] == "GET"


# -- the allowlist -----------------------------------------------------------------------------

@pytest.mark.parametrize("spec, target, allowed", [
    ("127.0.0.0/8", "127.0.0.1:{port}", True),
    ("10.0.0.0/8", "127.0.0.1:{port}", False),
    ("127.0.0.1:{port}", "127.0.0.1:{port}", True),
    ("127.0.0.1:{port}", "127.0.0.1:{other}", False),
    ("127.0.0.1:*", "127.0.0.1:{other}", True),
    ("localhost:{port}", "localhost:{port}", True),
    ("localhost:{port}", "127.0.0.1:{port}", False),        # a name rule allows that name
    ("*.tps.test", "cam1.tps.test:{port}", True),
    ("*.tps.test", "tps.test.evil:{port}", False),
    ("*.tps.test:{other}", "cam1.tps.test:{port}", False),
    ("::ffff:127.0.0.1/128", "127.0.0.1:{port}", True),     # a mapped network is its IPv4 one
    ("127.0.0.0/8", "[::ffff:127.0.0.1]:{port}", True),     # a mapped address is its IPv4 one
    ("10.0.0.0/8", "[::ffff:127.0.0.1]:{port}", False),
    ("127.0.0.1", "2130706433:{port}", True),               # decimal
    ("10.0.0.0/8", "2130706433:{port}", False),
    ("10.0.0.0/8", "0x7f.1:{port}", False),                  # hex, short form
    ("10.0.0.0/8", "0177.0.0.1:{port}", False),              # octal
    ("2130706433:{port}", "127.0.0.1:{port}", True),         # decimal in the rule too
])
def test_the_allowlist_lets_through_only_what_a_rule_allows(exporter_at, fake, monkeypatch,
                                                            spec, target, allowed):
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):         # *.tps.test and tps.test.evil are loopback
        return real("127.0.0.1" if host.endswith((".tps.test", ".evil")) else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    port, other = fake.address[1], free_port()
    spec, target = spec.format(port=port, other=other), target.format(port=port, other=other)
    base, _, _ = exporter_at(allowlist=AllowList([spec]))
    status, text = get(f"{base}/probe?target={target}&timeout=2")
    if allowed:
        assert status == 200, text
        assert metric(text, "tps_probe_success") == (1 if target.endswith(f":{port}") else 0)
    else:
        assert status == 403, text
        assert text.startswith(f"target ") and "not allowed" in text and text.count("\n") == 1, text
        assert 'tps_exporter_rejected_probes_total{reason="forbidden"} 1.0' in get(f"{base}/metrics")[1]


class Listener:
    """A listener on ``host``:``port`` that only counts the connections it accepts."""

    def __init__(self, host, port):
        self.sock = socket.create_server((host, port))
        self.accepted = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self):
        self.sock.close()


def fake_dns(monkeypatch, name, answers):
    """Make ``name`` resolve to ``answers(lookup number)``, a list of IP addresses;
    every other name as it does. Returns the list of lookups of ``name``."""
    real = socket.getaddrinfo
    lookups = []

    def resolve(host, *args, **kwargs):
        if host != name:
            return real(host, *args, **kwargs)
        lookups.append(host)
        return [info for ip in answers(len(lookups)) for info in real(ip, *args, **kwargs)]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return lookups


def probe_with_a_trap(exporter_at, fake, query):
    """A probe allowed only to 127.0.0.1, while a listener on 127.0.0.2 at the fake's port
    counts connections that must not happen: (status, text, connections trapped)."""
    trap = Listener("127.0.0.2", fake.address[1])
    try:
        base, _, _ = exporter_at(allowlist=AllowList(["127.0.0.1/32"]))
        status, text = get(f"{base}/probe?{query}")
    finally:
        trap.close()
    return status, text, trap.accepted


def test_a_name_with_an_allowed_and_a_disallowed_address_connects_only_to_the_allowed(
        exporter_at, fake, monkeypatch):
    fake_dns(monkeypatch, "both.test", lambda _: ["127.0.0.2", "127.0.0.1"])   # the disallowed first
    status, text, trapped = probe_with_a_trap(exporter_at, fake,
                                              f"target=both.test:{fake.address[1]}&debug=true")
    assert status == 200 and "succeeded" in text.splitlines()[0], text
    assert "Addresses: 127.0.0.1 (127.0.0.1 by 127.0.0.1/32; 1 other address(es) refused)" in text
    assert trapped == 0


def test_a_name_that_resolves_elsewhere_the_second_time_gets_nowhere(exporter_at, fake, monkeypatch):
    """DNS rebinding: the checked address is the one connected to; nothing is resolved again."""
    lookups = fake_dns(monkeypatch, "rebind.test", lambda n: ["127.0.0.1" if n == 1 else "127.0.0.2"])
    status, text, trapped = probe_with_a_trap(exporter_at, fake, f"target=rebind.test:{fake.address[1]}")
    assert status == 200 and metric(text, "tps_probe_success") == 1
    assert lookups == ["rebind.test"] and trapped == 0


def test_check_with_addresses_resolves_nothing(fake, monkeypatch):
    def no_lookups(host, *args, **kwargs):
        raise AssertionError(f"resolved {host!r}")

    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *args, **kwargs:
                        real(host, *args, **kwargs) if host == "127.0.0.1" else no_lookups(host))
    result = check("tps.test", fake.address[1], addresses=["127.0.0.1"], timeout=2)
    assert result.ok, result.message
    assert result.host == "tps.test"


@pytest.mark.parametrize("spec, complaint", [
    ("10.0.0.1/8", "has host bits set"),
    ("*", "0.0.0.0/0 and ::/0 allow every address"),
    ("host:99999", "the port must be 1-65535 or *"),
    ("a..b:6604", "the name has an empty label"),
    ("tps.*.net", "a * stands only first"),
    ("[::1]6604", "[V6]:PORT"),
])
def test_a_rule_that_means_nothing_is_refused(spec, complaint):
    with pytest.raises(ValueError, match=re.escape(complaint)):
        Rule.parse(spec)


def test_the_command_refuses_a_bad_rule_in_one_line():
    result = subprocess.run([sys.executable, "-m", "tpsharness", "exporter", "--allow-target", "10.0.0.1/8"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert result.stderr.splitlines()[-1] == ("tpsharness exporter: error: argument --allow-target: "
                                              "'10.0.0.1/8' is not a network: 10.0.0.1/8 has host bits set")


# -- TLS and basic auth, over real HTTPS ---------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pytest.importorskip("cryptography")
    from certificates import make_pki
    return make_pki(tmp_path_factory.mktemp("pki"))


def web_config(tmp_path, pki, *, users=None, **tls):
    import bcrypt
    lines = ["tls_server_config:", f"  cert_file: {pki.server_cert}", f"  key_file: {pki.server_key}"]
    lines += [f"  {key}: {value}" for key, value in tls.items()]
    if users:
        lines.append("basic_auth_users:")
        lines += [f"  {name}: {bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}"
                  for name, password in users.items()]
    path = tmp_path / "web.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def https_context(pki, client_cert=False, maximum=None):
    context = ssl.create_default_context(cafile=str(pki.ca))
    if client_cert:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    if maximum is not None:
        context.maximum_version = maximum
    return context


def basic(user, password):
    import base64
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def start_https(exporter_at, path, **options):
    from tpsharness.exporter.auth import BasicAuth
    config = load_web_config(path)
    auth = BasicAuth(config.users) if config.users else None
    return exporter_at(server_options={"tls": config.tls, "auth": auth}, **options)


def test_https_with_basic_auth_refuses_wrong_credentials_and_serves_right_ones(exporter_at, fake, tmp_path, pki):
    base, _, _ = start_https(exporter_at, web_config(tmp_path, pki, users={"prometheus": "s3cret"}))
    assert base.startswith("https://")
    context = https_context(pki)
    url = f"{base}/probe?target=%s:%d" % fake.address
    status, text = get(url, context=context)
    assert status == 401 and "unauthorized" in text
    assert get(url, basic("prometheus", "wrong"), context=context)[0] == 401
    assert get(url, basic("nobody", "s3cret"), context=context)[0] == 401
    assert get(url, basic("prometheus", "s3cret" * 20), context=context)[0] == 401    # > 72 bytes
    status, text = get(url, basic("prometheus", "s3cret"), context=context)
    assert status == 200 and metric(text, "tps_probe_success") == 1
    status, text = get(f"{base}/metrics", basic("prometheus", "s3cret"), context=context)
    assert metric(text, "tps_exporter_unauthorized_requests_total") == 4
    assert get(f"{base}/metrics", context=context)[0] == 401        # /metrics is protected too


def test_a_401_asks_for_basic_auth(exporter_at, tmp_path, pki):
    base, _, _ = start_https(exporter_at, web_config(tmp_path, pki, users={"p": "x"}))
    request = urllib.request.Request(f"{base}/metrics")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5, context=https_context(pki))
    assert refused.value.code == 401
    assert refused.value.headers["WWW-Authenticate"].startswith("Basic realm=")


def test_plain_http_to_the_https_port_gets_a_400_that_says_so(exporter_at, tmp_path, pki):
    base, _, server = start_https(exporter_at, web_config(tmp_path, pki))
    with socket.create_connection(server.server_address, timeout=5) as conn:
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = conn.recv(4096)
    assert answer.startswith(b"HTTP/1.0 400 Bad Request") and b"HTTPS server" in answer


def test_min_version_refuses_an_older_tls(exporter_at, tmp_path, pki):
    base, _, _ = start_https(exporter_at, web_config(tmp_path, pki, min_version="TLS13"))
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base}/metrics", timeout=5,
                               context=https_context(pki, maximum=ssl.TLSVersion.TLSv1_2))
    assert get(f"{base}/metrics", context=https_context(pki))[0] == 200


def test_a_client_certificate_can_be_required(exporter_at, tmp_path, pki):
    base, _, _ = start_https(exporter_at, web_config(tmp_path, pki, client_ca_file=pki.ca,
                                                     client_auth_type="RequireAndVerifyClientCert"))
    with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
        get(f"{base}/metrics", context=https_context(pki))
    assert get(f"{base}/metrics", context=https_context(pki, client_cert=True))[0] == 200


@pytest.mark.parametrize("text, complaint", [
    ("tls_server_config:\n  cert_file: x.pem\n", "tls_server_config.key_file is required"),
    ("tls_server_config:\n  cert_file: x.pem\n  key_file: x.key\n", "cannot load cert_file 'x.pem'"),
    ("tls_server_confg: {}\n", "unknown key 'tls_server_confg'"),
    ("basic_auth_users:\n  alice: plaintext\n", "basic_auth_users.alice is not a bcrypt hash"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [X]\n", "cipher_suites is not supported"),
    ("rate_limit:\n  burst: 20\n", "rate_limit is not supported"),
    ("[1, 2]\n", "must be a mapping"),
    ("a: [\n", "not YAML at line"),
])
def test_a_web_config_that_cannot_be_used_is_one_line_naming_the_key(tmp_path, text, complaint):
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(complaint)) as refused:
        load_web_config(path)
    assert str(refused.value).startswith(f"--web-config {path}: ") and "\n" not in str(refused.value)


def test_request_client_cert_is_refused_as_it_verifies_nothing(tmp_path, pki):
    path = web_config(tmp_path, pki, client_ca_file=pki.ca, client_auth_type="RequireAnyClientCert")
    with pytest.raises(ConfigError, match="it takes a certificate without verifying it"):
        load_web_config(path)


def test_the_command_serves_https_with_basic_auth_from_a_web_config(tmp_path, pki, fake):
    path = web_config(tmp_path, pki, users={"prometheus": "s3cret"})
    process = subprocess.Popen([sys.executable, "-m", "tpsharness", "exporter", "--listen", "127.0.0.1:0",
                                "--web-config", str(path), "--allow-target", "127.0.0.0/8"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = re.match(r"tpsharness exporter listening on (https://127\.0\.0\.1:\d+)/", line)
        assert match, line + process.stderr.read()
        url = f"{match.group(1)}/probe?target=%s:%d" % fake.address
        assert get(url, basic("prometheus", "wrong"), context=https_context(pki))[0] == 401
        status, text = get(url, basic("prometheus", "s3cret"), context=https_context(pki))
        assert status == 200 and metric(text, "tps_probe_success") == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert process.stderr.read() == ""      # no warning: there is an allowlist
    finally:
        process.kill()
        process.wait(10)


# -- debug output and modules ------------------------------------------------------------------

def test_debug_true_shows_the_outcome_module_addresses_timings_transcript_and_metrics(exporter_at, fake):
    base, _, _ = exporter_at()
    status, text = get(f"{base}/probe?target=%s:%d&debug=true" % fake.address)
    assert status == 200
    lines = text.splitlines()
    assert lines[0] == "Probe of %s:%d with module 'default': succeeded" % fake.address
    for heading in ("Module configuration:", "Stage timings:",
                    "Transcript (both sides' bytes, in order; the AuthCode as sent):",
                    "Metrics that would have been returned:"):
        assert heading in lines, heading
    assert any(re.fullmatch(r"  register +[\d.]+ ms", line) for line in lines)
    assert any("device >> b'POST /TransProxy HTTP/1.1" in line for line in lines)
    assert "tps_probe_success 1.0" in lines
    assert "Addresses: 127.0.0.1 (no --allow-target: every address is allowed)" in lines


def test_debug_true_of_a_failed_probe_says_where_it_failed(exporter_at):
    base, _, _ = exporter_at()
    port = free_port()
    status, text = get(f"{base}/probe?target=127.0.0.1:{port}&debug=true&timeout=1")
    assert status == 200
    assert text.splitlines()[:2] == [f"Probe of 127.0.0.1:{port} with module 'default': failed at connect",
                                     text.splitlines()[1]]
    assert "refused the connection" in text.splitlines()[1]
    assert "tps_probe_failed_stage{stage=\"connect\"} 1.0" in text


MODULES = """
modules:
  field:
    timeout: 2
    auth_code: "4242"
    payload_size: 4096
    strict: false
"""


def test_a_module_chooses_timeout_auth_code_payload_size_and_strict_mode(exporter_at, tmp_path):
    path = tmp_path / "exporter.yml"
    path.write_text(MODULES)
    server = FakeTPS(check_auth="4242")
    with server.start_in_thread():
        base, _, _ = exporter_at(modules=load_modules(path, 60))
        target = "target=%s:%d" % server.address
        status, text = get(f"{base}/probe?{target}&module=field&debug=true")
        assert status == 200 and "succeeded" in text.splitlines()[0], text
        assert "relayed 4096 bytes" in text.splitlines()[1]
        assert "this probe's timeout: 2 s (the module's 2 s)" in text
        assert "auth_code     (set; not shown)" in text
        status, text = get(f"{base}/probe?{target}")             # the default module: AuthCode 0000
        assert metric(text, "tps_probe_failed_stage", '{stage="register"}') == 1
        status, text = get(f"{base}/probe?{target}&module=nope")
        assert status == 400 and "unknown module 'nope'" in text


@pytest.mark.parametrize("parameter", ["auth_code=4242", "payload_size=10", "strict=true", "uuid=x"])
def test_per_target_parameters_in_the_url_stay_refused(exporter_at, parameter):
    base, _, _ = exporter_at()
    status, text = get(f"{base}/probe?target=127.0.0.1:1&{parameter}")
    assert status == 400
    key = parameter.partition("=")[0]
    assert (f"{key} is set by a module" in text) if key != "uuid" else ("unknown parameter 'uuid'" in text)


@pytest.mark.parametrize("text, complaint", [
    ("modules:\n  m:\n    timeout: 0\n", "modules.m.timeout must be seconds above 0"),
    ("modules:\n  m:\n    timeout: 100\n", "at most 60 (--max-timeout)"),
    ("modules:\n  m:\n    auth_code: 42\n", "modules.m.auth_code: the auth code must be a non-empty string"),
    ("modules:\n  m:\n    payload_size: 0\n", "modules.m.payload_size must be bytes"),
    ("modules:\n  m:\n    strict: yes please\n", "modules.m.strict must be true or false"),
    ("modules:\n  m:\n    retries: 3\n", "unknown key 'retries'"),
    ("modules: []\n", "give 'modules:'"),
    ("module:\n  m: {}\n", "unknown key 'module'"),
])
def test_a_config_that_cannot_be_used_is_one_line_naming_the_key(tmp_path, text, complaint):
    path = tmp_path / "exporter.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(complaint)):
        load_modules(path, 60)


def test_the_command_refuses_a_bad_config_in_one_line(tmp_path):
    path = tmp_path / "exporter.yml"
    path.write_text("modules:\n  m:\n    timeout: -1\n")
    result = subprocess.run([sys.executable, "-m", "tpsharness", "exporter", "--config", str(path),
                             "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert result.stderr.splitlines() == [f"tpsharness exporter: --config {path}: modules.m.timeout must be "
                                          f"seconds above 0 and at most 60 (--max-timeout), not -1"]


# -- the command ------------------------------------------------------------------------------

def test_the_exporter_command_serves_probes_until_sigterm_and_warns_without_an_allowlist(fake):
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
        assert process.stderr.read().splitlines() == [
            "tpsharness exporter: warning: no --allow-target: anyone who can reach this exporter can "
            "make it connect to any host and port (docs/exporter.md, \"Running it safely\")"]
    finally:
        process.kill()
        process.wait(10)


def test_after_sigterm_new_connections_are_refused():
    process = subprocess.Popen([sys.executable, "-m", "tpsharness", "exporter", "--listen", "127.0.0.1:0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        match = re.match(r"tpsharness exporter listening on (http://\S+)/ ", process.stdout.readline())
        assert match
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        with pytest.raises(OSError):
            get(f"{match.group(1)}/metrics", timeout=2)
    finally:
        process.kill()
        process.wait(10)


def test_the_exporter_command_refuses_a_bad_listen_address_in_one_line():
    result = subprocess.run([sys.executable, "-m", "tpsharness", "exporter", "--listen", "127.0.0.1:99999"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert result.stderr.splitlines()[-1] == ("tpsharness exporter: error: argument --listen: "
                                              "'127.0.0.1:99999': the port must be 0-65535")


def test_a_missing_extra_is_one_line_naming_the_pip_command(tmp_path):
    """As without the exporter extra: prometheus_client cannot be imported."""
    (tmp_path / "prometheus_client.py").write_text("raise ModuleNotFoundError(\"No module named "
                                                   "'prometheus_client'\", name='prometheus_client')\n")
    result = subprocess.run([sys.executable, "-m", "tpsharness", "exporter", "--listen", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=30,
                            env={"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines() == ["tpsharness exporter: needs the 'exporter' extra: pip install "
                                          "'tpsharness[exporter]' (no module named 'prometheus_client')"]


def test_every_metric_the_exporter_serves_is_documented_with_its_meaning(exporter_at, fake):
    base, _, _ = exporter_at()
    probe = get(f"{base}/probe?target=%s:%d" % fake.address)[1]
    own = get(f"{base}/metrics")[1]
    names = set(re.findall(r"^# TYPE (tps_\w+?)(?:_total)? ", probe + own, re.M))
    names = {name for name in names if not name.endswith("_created")}
    doc = (REPO / "docs" / "exporter.md").read_text()
    missing = [name for name in sorted(names) if not re.search(rf"^\| `{name}(_total)?(\{{[^`]*\}})?` \| \w",
                                                                doc, re.M)]
    assert names and not missing, missing


def yaml_blocks(text):
    return re.findall(r"```yaml\n(.*?)```", text, re.S)


def test_the_docs_web_config_and_modules_are_ones_the_exporter_takes(tmp_path, pki):
    import shutil

    import yaml
    blocks = yaml_blocks((REPO / "docs" / "exporter.md").read_text())
    web = next(block for block in blocks if "tls_server_config:" in block)
    shutil.copy(pki.server_cert, tmp_path / "server.pem")
    shutil.copy(pki.server_key, tmp_path / "server.key")
    (tmp_path / "web.yml").write_text(web)
    config = load_web_config(tmp_path / "web.yml")
    assert config.tls is not None and list(config.users) == ["prometheus"]
    modules = next(block for block in blocks if block.startswith("modules:"))
    (tmp_path / "exporter.yml").write_text(modules)
    assert sorted(load_modules(tmp_path / "exporter.yml", 60)) == ["default", "field"]


def test_the_docs_running_it_safely_scrapes_over_tls_with_basic_auth():
    import yaml
    text = (REPO / "docs" / "exporter.md").read_text()
    safely = text[text.index("## Running it safely"):text.index("## `/metrics`")]
    config = yaml.safe_load(next(block for block in yaml_blocks(safely) if "scrape_configs" in block))
    for job in config["scrape_configs"]:
        assert job["scheme"] == "https" and job["tls_config"]["ca_file"]
        assert job["basic_auth"]["username"] and job["basic_auth"]["password_file"]


# -- the HTTP server's bounds ------------------------------------------------------------------

def raw_exchange(address, data, timeout=5):
    """Send ``data`` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(address, timeout=timeout) as conn:
        conn.sendall(data)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", b"431"),
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n", b"413"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"400"),
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", b"400"),
])
def test_a_request_out_of_bounds_gets_its_status_and_a_close(exporter_at, request_bytes, status):
    base, _, server = exporter_at()
    answer = raw_exchange(server.server_address, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    assert b"Connection: close" in answer
    assert get(f"{base}/metrics")[0] == 200


def test_at_the_connection_limit_a_new_connection_evicts_the_oldest_unfinished_request(exporter_at, fake):
    base, _, server = exporter_at(server_options={"max_connections": 5})
    slow = [socket.create_connection(server.server_address, timeout=5) for _ in range(5)]
    for sock in slow:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")     # never finished
    try:
        assert wait_until(lambda: server.exporter.connections._value.get() == 5)
        status, text = get(f"{base}/probe?target=%s:%d" % fake.address)
        assert status == 200 and metric(text, "tps_probe_success") == 1
        assert slow[0].recv(4096) == b""                          # the oldest was closed
        status, text = get(f"{base}/metrics")
        assert metric(text, "tps_exporter_connections_dropped_total", '{reason="evicted"}') == 1
    finally:
        for sock in slow:
            sock.close()


def test_at_the_limit_with_every_connection_being_answered_a_new_one_gets_503(exporter_at):
    slow_check, held, release = held_checker()
    base, _, server = exporter_at(server_options={"max_connections": 1}, checker=slow_check)
    first = threading.Thread(target=get, args=(f"{base}/probe?target=127.0.0.1:1",), daemon=True)
    first.start()
    try:
        assert held.wait(10)
        answer = raw_exchange(server.server_address, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 ") and b"too many connections at once" in answer
    finally:
        release.set()
        first.join(10)


def test_an_encrypted_key_is_refused_at_start_instead_of_prompting(tmp_path, pki):
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret")))
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {encrypted}\n")
    with pytest.raises(ConfigError, match="not encrypted"):
        load_web_config(path)
