"""The exporter against hostile scrapers: bursts, idle and half-sent requests, targets
no resolver takes, absurd headers, a SIGTERM mid-probe.

Each answer comes at once and in one line; nothing costs a thread per connection;
nothing in flight is dropped without an answer.
"""

import re
import signal
import socket
import subprocess
import sys
import threading

import pytest

pytest.importorskip("prometheus_client")

from conftest import wait_until  # noqa: E402
from fake_tps.server import FakeTPS  # noqa: E402
from exporter_helpers import exporter_at, get, held_checker, metric  # noqa: E402,F401  (a fixture)
from http_burst import burst  # noqa: E402


PROBE = b"GET /probe?target=127.0.0.1:1 HTTP/1.1\r\nHost: exporter\r\n\r\n"


@pytest.mark.timeout(60)
def test_a_burst_of_300_scrapes_past_the_cap_gets_its_503s_at_once(exporter_at):
    slow_check, held, release = held_checker()
    base, exporter, server = exporter_at(checker=slow_check)          # at most 8 probes at once
    try:
        statuses, _ = burst(server.server_address, PROBE, 300, seconds=5)
    finally:
        release.set()
    # burst() waits 5 s for the answers: 292 503s among them is "at once" enough on a
    # shared machine (before the fix they took TCP retransmits, tens of seconds).
    assert statuses.count(503) == 292, sorted(statuses, key=str)[-20:]
    assert statuses.count("unanswered") == 8        # the 8 admitted probes, held
    assert wait_until(lambda: metric(get(f"{base}/metrics")[1], "tps_exporter_probes_in_flight") == 0)


@pytest.mark.timeout(60)
def test_idle_and_half_sent_connections_cost_no_thread_and_end_at_the_request_timeout(exporter_at, fake):
    base, _, server = exporter_at(server_options={"request_timeout": 1.0})
    threads_before = threading.active_count()
    idle = [socket.create_connection(server.server_address, timeout=5) for _ in range(200)]
    half = [socket.create_connection(server.server_address, timeout=5) for _ in range(200)]
    for sock in half:
        sock.sendall(b"GET /probe?target=127.0.0.1:1 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    try:
        assert wait_until(lambda: metric(get(f"{base}/metrics")[1], "tps_exporter_connections_open") >= 401)
        assert threading.active_count() - threads_before < 5
        # still served while 400 connections are held (get gives up after 5 s: bound enough)
        status, text = get(f"{base}/probe?target=%s:%d" % fake.address, timeout=5)
        assert status == 200 and metric(text, "tps_probe_success") == 1
        answers = [sock.recv(4096) for sock in idle + half]     # the server ends each of them
        assert all(answer.startswith(b"HTTP/1.1 408 Request Timeout") for answer in answers), answers[:3]
        assert all(sock.recv(4096) == b"" for sock in idle + half)
    finally:
        for sock in idle + half:
            sock.close()
    dropped = get(f"{base}/metrics")[1]
    assert metric(dropped, "tps_exporter_connections_dropped_total", '{reason="request timeout"}') == 400


@pytest.mark.parametrize("target, complaint", [
    ("a..b", "the name has an empty label"),
    (".", "the name is empty"),
    ("a" * 64 + ".example", "a label longer than 63 characters"),
    ("%FF%FE", "the query is not UTF-8"),
    ("%EF%BF%BD%EF%BF%BD", "IDNA cannot encode the name"),
    ("x" * 10_000, "the target is 10000 characters long"),
])
def test_a_target_no_resolver_takes_gets_400_in_one_line(exporter_at, target, complaint):
    base, _, _ = exporter_at()
    status, text = get(f"{base}/probe?target={target}")
    assert status == 400, text
    assert complaint in text and text.count("\n") == 1 and len(text) < 300, text


def test_a_nul_in_the_target_is_refused_instead_of_probing_the_part_before_it(exporter_at, fake):
    base, _, _ = exporter_at()
    status, text = get(f"{base}/probe?target=127.0.0.1%00.evil.example:{fake.address[1]}")
    assert status == 400 and "the name holds '\\x00'" in text, text
    assert fake.stats.connections == 0


@pytest.mark.parametrize("header", ["5e-324", "1e-9"])
def test_a_scrape_timeout_that_leaves_no_time_gets_400(exporter_at, header):
    base, _, _ = exporter_at()
    status, text = get(f"{base}/probe?target=127.0.0.1:1", {"X-Prometheus-Scrape-Timeout-Seconds": header})
    assert status == 400 and "leaves less than 1 ms for the probe" in text, text


@pytest.mark.parametrize("header", ["abc", "nan", "NaN", "1,5"])
def test_a_scrape_timeout_that_is_not_a_number_gets_400(exporter_at, fake, header):
    base, _, _ = exporter_at()
    status, text = get(f"{base}/probe?target=127.0.0.1:{fake.address[1]}",
                       {"X-Prometheus-Scrape-Timeout-Seconds": header})
    assert status == 400, text
    assert text == f"X-Prometheus-Scrape-Timeout-Seconds '{header}' is not a number of seconds\n"
    assert fake.stats.connections == 0


@pytest.mark.parametrize("header", ["0", "-1", "inf", "-inf"])
def test_a_scrape_timeout_that_sets_no_limit_says_so_on_the_debug_page(exporter_at, fake, header):
    base, _, _ = exporter_at()
    status, text = get(f"{base}/probe?target=127.0.0.1:{fake.address[1]}&debug=true",
                       {"X-Prometheus-Scrape-Timeout-Seconds": header})
    assert status == 200, text
    assert (f"this probe's timeout: 5 s (the module's 5 s; the scrape timeout header's '{header}' "
            "sets no limit, as blackbox_exporter reads it)") in text


def test_a_halved_scrape_timeout_is_called_half_on_the_debug_page_and_in_the_400(exporter_at, fake):
    base, _, _ = exporter_at()
    status, text = get(f"{base}/probe?target=127.0.0.1:{fake.address[1]}&debug=true",
                       {"X-Prometheus-Scrape-Timeout-Seconds": "0.3"})
    assert status == 200, text
    assert "this probe's timeout: 0.15 s (half the scrape timeout (0.3 s, no more than the 0.5 s offset))" in text
    status, text = get(f"{base}/probe?target=127.0.0.1:{fake.address[1]}",
                       {"X-Prometheus-Scrape-Timeout-Seconds": "0.0015"})
    assert status == 400
    assert text == ("half the scrape timeout (0.0015 s, no more than the 0.5 s offset) leaves less "
                    "than 1 ms for the probe\n")


def start_exporter(*options):
    process = subprocess.Popen([sys.executable, "-m", "tpsharness", "exporter", "--listen", "127.0.0.1:0",
                                *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    match = re.match(r"tpsharness exporter listening on (http://127\.0\.0\.1:\d+)/", line)
    assert match, line + process.stderr.read()
    return process, match.group(1)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("grace, probe_timeout, status", [("0.5", "10", 503), (None, "1", 200)])
def test_on_sigterm_a_scrape_in_flight_gets_an_answer_before_the_exporter_exits(grace, probe_timeout, status):
    """Past the grace the probe gets 503; within it (the default, 5 s), its result."""
    silent = FakeTPS(faults=["silent"])
    with silent.start_in_thread():
        process, base = start_exporter(*(["--shutdown-grace", grace] if grace else []))
        try:
            answers = []
            scrape = threading.Thread(target=lambda: answers.append(
                get(f"{base}/probe?target=%s:%d&timeout={probe_timeout}" % silent.address)), daemon=True)
            scrape.start()
            assert wait_until(lambda: "tps_exporter_probes_in_flight 1.0" in get(f"{base}/metrics")[1])
            process.send_signal(signal.SIGTERM)
            scrape.join(float(grace or 5) + float(probe_timeout) + 3)
            assert answers, "the scrape in flight got no answer"
            assert answers[0][0] == status, answers
            if status == 503:
                assert "shutting down" in answers[0][1]
            else:
                assert metric(answers[0][1], "tps_probe_failed_stage", '{stage="register"}') == 1
            assert process.wait(10) == 0
        finally:
            process.kill()
            process.wait(10)


# -- review findings: secrets on the debug page, the allowlist as a DNS oracle ---------------------

def test_debug_true_never_shows_a_modules_secret_auth_code(exporter_at):
    from tpsharness.exporter.config import Module

    server = FakeTPS(check_auth="s3cr3t-code")
    with server.start_in_thread():
        modules = {"default": Module("default"), "secret": Module("secret", 5.0, "s3cr3t-code")}
        base, _, _ = exporter_at(modules=modules)
        status, text = get(f"{base}/probe?target=%s:%d&module=secret&debug=true" % server.address)
        assert status == 200 and "succeeded" in text.splitlines()[0], text
        assert "s3cr3t-code" not in text
        assert "AuthCode: (not shown)" in text and "the module's AuthCode not shown" in text
        status, text = get(f"{base}/probe?target=%s:%d&debug=true" % server.address)
        assert "the AuthCode as sent" in text   # the default code is no secret


@pytest.mark.parametrize("line", [
    '{"Body": {"AuthCode": "s3cr3t-code", "SerialNumber": "cam"}}',       # a register's JSON
    "b'HTTP/1.1 400 s3cr3t-code is wrong\\r\\n'",                        # a peer echoing it
    "b'POST /PrivateData HTTP/1.1\\r\\nAuthCode: s3cr'... (205 bytes)",  # cut inside the code
])
def test_the_debug_transcript_hides_every_form_of_the_secret(line):
    from tpsharness.exporter.app import redact

    hidden = redact(line, "s3cr3t-code")
    assert "s3cr" not in hidden and "(not shown)" in hidden


@pytest.mark.parametrize("resolves", [True, False], ids=["resolves", "does-not-resolve"])
@pytest.mark.parametrize("rules", [["*.tps.test:6604"], ["*.tps.test:6604", "127.0.0.1:6604"]],
                         ids=["names-only", "names-and-networks"])
def test_a_name_the_allowlist_refuses_gets_the_same_403_whether_or_not_it_resolves(
        exporter_at, monkeypatch, caplog, rules, resolves):
    from tpsharness.exporter import AllowList

    real = socket.getaddrinfo
    looked_up = []

    def resolve(host, *args, **kwargs):
        looked_up.append(host)
        if host == "internal.corp":
            if not resolves:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return real("10.1.2.3", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    caplog.set_level("WARNING")
    base, _, _ = exporter_at(allowlist=AllowList(rules))
    status, text = get(f"{base}/probe?target=internal.corp:6604")
    assert (status, text) == (403, "target internal.corp:6604 is not allowed by any --allow-target\n")
    assert "10.1.2.3" not in text
    assert ("internal.corp" in looked_up) == (len(rules) > 1)     # names only: nothing to look up
    if resolves and len(rules) > 1:
        assert "10.1.2.3" in caplog.text             # the operator still sees it, in the log


def test_a_stop_closes_idle_and_half_sent_connections_at_once_instead_of_waiting_for_them(exporter_at):
    base, _, server = exporter_at(server_options={"request_timeout": 25.0, "shutdown_grace": 25.0})
    idle = socket.create_connection(server.server_address, timeout=10)
    half = socket.create_connection(server.server_address, timeout=10)
    half.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    try:
        assert wait_until(lambda: [(c.state, c.began) for c in server._connections.values()]
                          == [("reading", False), ("reading", True)])
        server.shutdown(wait=False)
        # Before, the loop waited for both (a 408 at the 25 s request timeout). 10 s is a
        # bound for a loaded machine, not a measurement: nothing is left to wait for.
        assert wait_until(server._stopped.is_set, timeout=10)
        assert idle.recv(4096) == b""                       # closed: no request began
        assert half.recv(4096).startswith(b"HTTP/1.1 503 Service Unavailable")
    finally:
        idle.close()
        half.close()


class _HeldAuth:
    """Basic auth whose password comparisons (bcrypt's, at a high cost) hold until released."""

    users = {"u": b"$2b$17$" + b"x" * 53}

    def __init__(self):
        self.release = threading.Event()
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def known(self, credentials):
        return None

    def verify(self, credentials):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.release.wait(20)
        with self.lock:
            self.running -= 1
        return False


def test_password_comparisons_left_running_past_their_request_still_hold_their_slot(exporter_at):
    from tpsharness.exporter.server import AUTH_THREADS

    auth = _HeldAuth()
    base, _, server = exporter_at(server_options={"auth": auth, "request_timeout": 0.3})
    wrong = {"Authorization": "Basic dTp3cm9uZw=="}         # u:wrong
    try:
        answers = [get(f"{base}/metrics", headers=wrong) for _ in range(AUTH_THREADS + 4)]
        assert [status for status, _ in answers[:AUTH_THREADS]] == [503] * AUTH_THREADS
        assert all("could not be checked in time" in text for _, text in answers[:AUTH_THREADS])
        assert all(status == 503 and "too many authentications" in text for status, text in answers[AUTH_THREADS:])
        assert auth.most == AUTH_THREADS            # before, each timed-out request freed its slot
    finally:
        auth.release.set()
    assert wait_until(lambda: auth.running == 0)
    assert wait_until(lambda: get(f"{base}/metrics", headers=wrong)[0] == 401)   # the slots came back


def test_a_thread_call_that_cannot_get_its_socketpair_gives_its_slot_back(monkeypatch):
    """Out of fds under a flood: the socketpair of a password comparison raised before
    its thread started, and the comparison's slot was never released (after 4, every
    request with credentials got 503 until a restart)."""
    from tpsharness.exporter import server as exporter_server
    from tpsharness.kernel import run

    def no_fds(call):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(exporter_server, "_Pending", no_fds)
    released = []

    async def attempt():
        with pytest.raises(OSError):
            await exporter_server._on_thread(lambda: True, 1.0, on_no_thread=lambda: released.append(1))

    run(attempt(), timeout=5)
    assert released == [1]
