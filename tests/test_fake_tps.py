"""fake_tps over loopback: the exact bytes of docs/protocol.md in, the exact bytes back."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Wire
from fake_tps import FakeTPS, Peer
from tpsharness.protocol import (PrivateData, RegisterReply, Reply, private_data_request,
                                 register_request, reply)

REPLY_RE = re.compile(
    rb'HTTP/1.1 200 OK\r\nContent-Encoding: UTF-8\r\nContent-Length: 305\r\nContent-Type: text/plain\r\n\r\n'
    rb'\{\n   "TransProxy" : \{\n      "Body" : \{\n         "KeepAliveIntervel" : "120",\n'
    rb'         "UtcTime" : "(\d{10})"\n      \},\n      "Header" : \{\n         "ErrorNum" : "200",\n'
    rb'         "ErrorString" : "Success OK",\n         "MessageType" : "MSG_TRANSPROXY_REGISTER_RSP",\n'
    rb'         "Version" : "1.0"\n      \}\n   \}\n\}\n$')

WireFactory = Callable[..., Wire]

OK = reply(200)
NOT_FOUND = reply(404)
BAD = reply(400)


def register(wire_connection: Wire, serial: str, **kwargs: Any) -> RegisterReply:
    wire_connection.send(register_request(serial, **kwargs))
    answer = wire_connection.message()
    assert isinstance(answer, RegisterReply), answer
    return answer


# -- register ----------------------------------------------------------------------------------

def test_register_reply_is_the_field_servers_byte_for_byte(fake: FakeTPS, wire: WireFactory) -> None:
    device = wire()
    device.send(register_request("cam-1", trailing_crlf=True))
    data = device.raw()
    match = REPLY_RE.match(data)
    assert match, data
    assert abs(int(match.group(1)) - time.time()) < 60
    assert fake.registered() == {"cam-1"}
    assert fake.stats.registrations == 1


def test_heartbeat_gets_the_same_reply_and_keeps_the_connection(fake: FakeTPS, wire: WireFactory) -> None:
    device = wire()
    first = register(device, "cam-1")
    second = register(device, "cam-1")
    assert isinstance(second, RegisterReply) and second.ok
    assert (first.keepalive_interval, first.error_string) == (second.keepalive_interval, second.error_string)
    assert fake.stats.heartbeats == 1 and fake.stats.registrations == 1


def test_newer_registration_closes_older_connection(fake: FakeTPS, wire: WireFactory) -> None:
    old, new = wire(), wire()
    register(old, "cam-1")
    assert register(new, "cam-1").ok
    assert old.closed_by_server() and old.reader.buffered == 0      # FIN, no bytes
    assert fake.stats.replaced == 1
    client = wire()
    client.send(private_data_request("app", "cam-1", b"to the new one"))
    assert client.message() == Reply(200, "OK")
    assert new.message().body == b"to the new one"


def test_client_taking_a_devices_uuid_closes_the_device(fake: FakeTPS, wire: WireFactory) -> None:
    device, destination, client = wire(), wire(), wire()
    register(device, "cam-1")
    register(destination, "cam-2")
    client.send(private_data_request("cam-1", "cam-2", b"x"))
    assert client.message().status == 200
    assert device.closed_by_server() and device.reader.buffered == 0
    assert destination.message().body == b"x"
    destination.send(private_data_request("cam-2", "cam-1", b"back"))
    assert destination.message().status == 200
    assert client.message().body == b"back"         # cam-1 is the client now


def test_an_unknown_dest_claims_nothing_and_closes_nothing(fake: FakeTPS, wire: WireFactory) -> None:
    """docs/protocol.md section 1: the DestUuid is looked up first."""
    device, client = wire(), wire()
    register(device, "cam-1")
    client.send(private_data_request("cam-1", "nobody", b"x"))
    assert client.raw() == NOT_FOUND
    assert device.silent(0.2)
    assert fake.registered() == {"cam-1"} and fake.stats.replaced == 0
    other = wire()
    other.send(private_data_request("app", "cam-1", b"still the device's"))
    assert other.message().status == 200
    assert device.message().body == b"still the device's"


@pytest.mark.parametrize("registered", [True, False])
def test_private_data_from_and_to_the_sender_itself_gets_400(fake: FakeTPS, wire: WireFactory, registered: bool) -> None:
    sender, device = wire(), wire()
    register(device, "cam-1")
    if registered:
        register(sender, "me")
    else:       # a client becomes "me" by sending with that SrcUuid
        sender.send(private_data_request("me", "cam-1", b"first"))
        assert sender.message().status == 200
        assert device.message().body == b"first"
    sender.send(private_data_request("me", "me", b"to myself"))
    assert sender.raw() == BAD
    assert fake.stats.bad_requests == 1 and "me" in fake.registered()
    sender.send(private_data_request("me", "cam-1", b"after the 400"))
    assert sender.message().status == 200
    assert device.message().body == b"after the 400"


FIELD_SIMULATOR_REGISTER = (
    b'{"TransProxy": {"Header": {"CSeq": 3, "MessageType": "MSG_TRANSPROXY_REGISTER_REQ", '
    b'"TerminalType": "Camera", "Version": "1.0"}, "Body": {"AuthCode": 4242, "SerialNumber": 4242}}}')


def test_a_register_with_numeric_fields_registers_the_numbers_text(fake: FakeTPS, wire: WireFactory) -> None:
    device, client = wire(), wire()
    reply_ = register(device, "unused", body=FIELD_SIMULATOR_REGISTER)
    assert isinstance(reply_, RegisterReply) and reply_.ok
    assert fake.registered() == {"4242"}
    client.send(private_data_request("app", "4242", b"to the simulator"))
    assert client.message().status == 200
    assert device.message().body == b"to the simulator"


def test_a_second_serial_held_by_another_connection_is_taken_over_and_the_first_stays(fake: FakeTPS, wire: WireFactory) -> None:
    first, holder, client = wire(), wire(), wire()
    register(first, "cam-1")
    register(holder, "cam-2")
    assert register(first, "cam-2").ok
    assert holder.closed_by_server() and holder.reader.buffered == 0
    assert fake.registered() == {"cam-1", "cam-2"} and fake.stats.replaced == 1
    for serial in ("cam-1", "cam-2"):
        client.send(private_data_request("app", serial, serial.encode()))
        assert client.message().status == 200
        assert first.message().body == serial.encode()
    assert register(first, "cam-2").ok and fake.stats.heartbeats == 1


def test_second_serial_on_one_connection_is_closed_without_reply_and_leaves_nothing_dangling(fake: FakeTPS, wire: WireFactory) -> None:
    device = wire()
    register(device, "cam-1")
    device.send(register_request("cam-2"))
    assert device.closed_by_server() and device.reader.buffered == 0    # no reply
    assert fake.registered() == set()
    client = wire()
    client.send(private_data_request("app", "cam-1", b"to the old serial"))
    assert client.message().status == 404       # the field server crashed here
    assert register(wire(), "cam-3").ok         # and we are still alive


def test_register_with_missing_fields_or_wrong_type_gets_400(fake: FakeTPS, wire: WireFactory) -> None:
    device = wire()
    for body in (b"{not json", b'{"TransProxy": {"Header": {"MessageType": "MSG_X", '
                 b'"TerminalType": "Camera"}, "Body": {"SerialNumber": "a"}}}',
                 b'{"TransProxy": {"Header": {"MessageType": "MSG_TRANSPROXY_REGISTER_REQ"}, "Body": {}}}'):
        device.send(register_request("x", body=body))
        assert device.raw() == BAD
    assert fake.registered() == set()
    assert fake.stats.bad_requests == 3


# -- private data ----------------------------------------------------------------------------

def test_private_data_is_acked_and_relayed_as_raw_bytes(fake: FakeTPS, wire: WireFactory) -> None:
    device, client = wire(), wire()
    register(device, "cam-1")
    request = private_data_request("app-1", "cam-1", b"\x00any\xffbytes\r\n\r\n")
    client.send(request)
    assert client.raw() == OK
    assert device.raw() == request
    assert fake.stats.relays == 1


def test_unknown_dest_gets_404(fake: FakeTPS, wire: WireFactory) -> None:
    client = wire()
    client.send(private_data_request("app", "nobody", b"x"))
    assert client.raw() == NOT_FOUND
    assert fake.stats.not_found == 1


def test_a_device_reply_reaches_the_client_by_its_srcuuid(fake: FakeTPS, wire: WireFactory) -> None:
    device, client = wire(), wire()
    register(device, "cam-1")
    client.send(private_data_request("app-1", "cam-1", b"question"))
    assert client.message().status == 200
    assert device.message().body == b"question"
    device.send(private_data_request("cam-1", "app-1", b"answer"))
    assert device.message().status == 200
    relayed = client.message()
    assert isinstance(relayed, PrivateData) and relayed.body == b"answer" and relayed.src == "cam-1"


@pytest.mark.parametrize("data", [
    b"POST /PrivateData HTTP/1.1\r\nSrcUuid: a\r\nContent-Length: 0\r\n\r\n",
    b"POST /PrivateData HTTP/1.1\r\nDestUuid: a\r\nContent-Length: 0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /Elsewhere HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"garbage\r\n\r\n",
])
def test_malformed_or_unknown_requests_get_400(fake: FakeTPS, wire: WireFactory, data: bytes) -> None:
    client = wire()
    client.send(data)
    assert client.raw() == BAD
    assert fake.stats.bad_requests == 1


UNRECOGNISED = {
    "garbage": b"\x16\x03\x01\x00\xa5 not a request",
    "a word": b"hello",
    "a GET": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "a lone CRLF": b"\r\n",
    "NUL bytes": b"\x00" * 10,
    "a malformed header line": b"POST /PrivateData HTTP/1.1\r\nno colon here\r\n\r\n",
    "a Content-Length that is no number": b"POST /PrivateData HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
}


@pytest.mark.parametrize("name", list(UNRECOGNISED))
def test_unrecognised_input_gets_400_at_once_and_the_connection_stays_usable(fake: FakeTPS, wire: WireFactory, name: str) -> None:
    """docs/protocol.md section 3: 400, what was read is discarded, the connection stays."""
    connection = wire()
    connection.send(UNRECOGNISED[name])
    assert connection.raw() == BAD
    assert fake.stats.bad_requests == 1 and fake.stats.protocol_errors == 0
    assert register(connection, "cam-after").ok
    assert fake.registered() == {"cam-after"}


def test_a_crlf_after_a_body_in_the_same_read_is_not_a_bad_request(fake: FakeTPS, wire: WireFactory) -> None:
    device = wire()
    device.send(register_request("cam-1", trailing_crlf=True))
    assert device.message().ok
    device.send(register_request("cam-1") + b"\r\n" + register_request("cam-1", trailing_crlf=True))
    assert device.message().ok and device.message().ok
    assert device.silent(0.1) and fake.stats.bad_requests == 0


def test_garbage_after_a_request_in_the_same_read_gets_the_reply_then_400(fake: FakeTPS, wire: WireFactory) -> None:
    device = wire()
    device.send(register_request("cam-1") + b"garbage")
    assert device.message().ok
    assert device.message() == Reply(400, "Bad Request")


def test_after_unrecognised_input_the_idle_timeout_drops(fake: FakeTPS, wire: WireFactory) -> None:
    fake.configure(bad_request_idle_timeout=0.3)
    client, quiet = wire(), wire()
    register(quiet, "cam-quiet")
    client.send(b"GET / HTTP/1.1\r\n\r\n")
    assert client.raw() == BAD
    assert client.closed_by_server(timeout=5)
    assert quiet.silent(0.2)            # the normal 300 s timeout still holds for the others
    assert fake.stats.idle_closed == 1


def test_idle_timeout_counts_from_the_last_byte_received(fake: FakeTPS, wire: WireFactory) -> None:
    fake.configure(idle_timeout=0.6)
    device, client = wire(), wire()
    register(device, "cam-1")
    start = time.monotonic()
    # The client keeps sending, so it stays; the device only receives, so it is dropped.
    while time.monotonic() - start < 1.5:
        client.send(private_data_request("app", "cam-1", b"tick"))
        assert client.message().status in (200, 404)
        time.sleep(0.05)        # pacing the traffic, not synchronisation
    assert device.closed_by_server(timeout=1)
    client.send(private_data_request("app", "cam-1", b"tick"))
    assert client.message().status == 404


# -- framing: better than the field server -----------------------------------------------------

def test_a_split_register_gets_one_reply(fake: FakeTPS, wire: WireFactory) -> None:
    device = wire()
    data = register_request("cam-1")
    device.send(data[:40])
    assert device.silent(0.1)
    device.send(data[40:])
    assert device.message().ok
    assert fake.registered() == {"cam-1"}


def test_pipelined_requests_get_one_reply_each_in_order(fake: FakeTPS, wire: WireFactory) -> None:
    device, client = wire(), wire()
    device.send(register_request("cam-1", trailing_crlf=True) + register_request("cam-1"))
    assert device.message().ok and device.message().ok
    client.send(private_data_request("app", "cam-1", b"one") + private_data_request("app", "nobody", b"x")
                + private_data_request("app", "cam-1", b"two"))
    assert [client.message().status for _ in range(3)] == [200, 404, 200]
    assert [device.message().body for _ in range(2)] == [b"one", b"two"]


def test_an_oversized_header_gets_413_and_close(fake: FakeTPS, wire: WireFactory) -> None:
    client = wire()
    client.send(b"POST /PrivateData HTTP/1.1\r\nX: " + b"a" * 20000)
    assert client.raw().startswith(b"HTTP/1.1 413 ")
    assert client.closed_by_server()
    assert fake.stats.protocol_errors == 1


def test_an_oversized_body_gets_413_and_close(fake: FakeTPS, wire: WireFactory) -> None:
    fake.configure(max_body=1000)
    client = wire()
    client.send(b"POST /PrivateData HTTP/1.1\r\nSrcUuid: a\r\nDestUuid: b\r\nContent-Length: 5000\r\n\r\n")
    assert client.raw().startswith(b"HTTP/1.1 413 ")
    assert client.closed_by_server()


def test_a_device_that_does_not_read_is_dropped_not_buffered(fake: FakeTPS, wire: WireFactory) -> None:
    fake.configure(max_output=64 * 1024)
    device = socket.socket()
    device.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    device.settimeout(5)
    device.connect(fake.address)
    try:
        device.sendall(register_request("cam-slow"))
        client = wire()
        payload = b"p" * 60000
        for _ in range(400):
            client.send(private_data_request("app", "cam-slow", payload))
            if client.message().status == 404:
                break
        assert fake.stats.dropped == 1
        assert "cam-slow" not in fake.registered()
    finally:
        device.close()


def test_nothing_a_peer_sends_stops_the_server(fake: FakeTPS, wire: WireFactory) -> None:
    for junk in (b"\x00" * 100, b"\xff\xfe\xfd\r\n\r\n", b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\n\r\n", b"\r\n" * 1000):
        connection = wire()
        connection.send(junk)
        connection.close()
    resetter = socket.create_connection(fake.address)
    resetter.sendall(register_request("cam-r")[:30])
    resetter.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    resetter.close()
    assert register(wire(), "cam-after").ok


def test_an_internal_error_serving_one_connection_closes_only_that_one(fake: FakeTPS, wire: WireFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake's own bugs must not stop it either: one read loop serves everyone."""
    served = fake._private_data

    def buggy(peer: Peer, request: PrivateData) -> None:
        if request.dest == "cam-boom":
            raise RuntimeError("a bug")
        served(peer, request)

    monkeypatch.setattr(fake, "_private_data", buggy)
    bystander = wire()
    assert register(bystander, "cam-bystander").ok
    victim = wire()
    victim.send(private_data_request("app-1", "cam-boom", b"x"))
    assert victim.closed_by_server()
    assert any("internal error" in text for text in fake.events_since(0))
    client = wire()
    client.send(private_data_request("app-2", "cam-bystander", b"still here"))
    assert client.message().status == 200
    assert bystander.message().body == b"still here"


# -- options -------------------------------------------------------------------------------------

def test_nul_replies_end_each_private_data_reply_with_a_nul() -> None:
    server = FakeTPS(nul_replies=True)
    with server.start_in_thread():
        client = socket.create_connection(server.address, timeout=5)
        client.sendall(private_data_request("app", "nobody", b"x"))
        assert client.recv(1000) == NOT_FOUND + b"\x00"
        client.close()


def test_strict_http_sends_content_length_and_refuses_the_stray_crlf() -> None:
    server = FakeTPS(strict_http=True)
    with server.start_in_thread():
        client = socket.create_connection(server.address, timeout=5)
        client.sendall(private_data_request("app", "nobody", b"x"))
        assert client.recv(1000) == reply(404, strict=True)
        client.sendall(b"\r\n" + private_data_request("app", "nobody", b"x"))
        assert client.recv(1000) == reply(400, strict=True)
        assert client.recv(1000) == b""
        client.close()


def test_check_auth_refuses_the_wrong_authcode(fake: FakeTPS, wire: WireFactory) -> None:
    fake.configure(check_auth="1234")
    device = wire()
    refused = register(device, "cam-1", auth_code="0000")
    assert isinstance(refused, RegisterReply) and refused.error_num == "401" and not refused.ok
    assert register(device, "cam-1", auth_code="1234").ok
    client = wire()
    client.send(private_data_request("app", "cam-1", b"x", auth_code="0000"))
    assert client.message().status == 401
    assert fake.stats.auth_failures == 2


def test_reply_delay_holds_every_answer_back(fake: FakeTPS) -> None:
    from tpsharness.checker import check
    fake.configure(reply_delay=0.3)
    too_quick = check(*fake.address, timeout=0.2)
    assert too_quick.stage == "register" and "sent no register reply" in too_quick.message
    patient = check(*fake.address, timeout=3)
    assert patient.ok and patient.timings["register"] >= 300


def test_unknown_options_and_faults_are_refused(fake: FakeTPS) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        FakeTPS(faults=["explode"])
    with pytest.raises(ValueError, match="unknown fault"):
        fake.configure(faults=["explode"])
    with pytest.raises(TypeError, match="'serve'"):
        fake.configure(serve=None)      # type: ignore[call-arg]  # the point: refused at run time too


@pytest.mark.parametrize("fault, check", [
    ("close-on-accept", lambda c: c.closed_by_server()),
    ("silent", lambda c: c.silent(0.2)),
    ("garbage-replies", lambda c: c.raw().startswith(b"\x16\x03")),
    ("half-reply", lambda c: len(c.raw()) < 200 and c.silent(0.2)),
    ("corrupt-register-replies", lambda c: isinstance(c.message(), Reply)),
])
def test_register_faults(fake: FakeTPS, wire: WireFactory, fault: str, check: Callable[[Wire], bool]) -> None:
    fake.configure(faults=[fault])
    device = wire()
    device.send(register_request("cam-1"))
    assert check(device)


def test_drop_relays_acks_but_never_relays(fake: FakeTPS, wire: WireFactory) -> None:
    device, client = wire(), wire()
    register(device, "cam-1")
    fake.configure(faults=["drop-relays"])
    client.send(private_data_request("app", "cam-1", b"lost"))
    assert client.message().status == 200
    assert device.silent(0.2)


def test_clear_closes_connections_and_zeroes_stats(fake: FakeTPS, wire: WireFactory) -> None:
    device = wire()
    register(device, "cam-1")
    fake.clear()
    assert device.closed_by_server()
    assert fake.registered() == set() and fake.stats.registrations == 0


# -- the command line ---------------------------------------------------------------------------

def test_python_m_fake_tps_prints_its_address_serves_and_prints_counters_on_sigterm() -> None:
    process = subprocess.Popen([sys.executable, "-m", "fake_tps", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    try:
        line = process.stdout.readline()
        match = re.fullmatch(r"fake TPS listening on 127\.0\.0\.1:(\d+)\n", line)
        assert match, line
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=5) as device:
            device.sendall(register_request("cam-cli"))
            assert REPLY_RE.match(device.recv(1000))
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "fake TPS stopped: connections=1" in out and "registrations=1" in out


def test_python_m_fake_tps_on_a_busy_port_says_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "fake_tps", "--port", str(port)],
                                capture_output=True, text=True, timeout=10)
    assert result.returncode == 1
    assert f"listen on 127.0.0.1:{port}" in result.stderr


@given(st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=4), st.booleans())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_bytes_from_a_peer_stop_the_server(fake: FakeTPS, wire: WireFactory, chunks: list[bytes], reset: bool) -> None:
    """Arbitrary bytes, then a close or a reset: the fake keeps serving everyone."""
    connection = wire()
    try:
        for chunk in chunks:
            connection.send(chunk)
    except OSError:
        pass            # the fake may close a connection that sent unframeable bytes
    if reset:
        connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    connection.close()
    probe = wire()
    assert register(probe, "cam-after-fuzz").ok
    probe.close()
