"""The field profile, rule by rule (docs/protocol.md section 3.1), with exact bytes.

Each rule has a test against ``FakeTPS(profile="field")``; where the default
profile differs, a second test shows the default's documented behaviour (section 4).
Every request goes out in one write, as field clients send them; a test that needs
two reads waits for the answer to the first before it writes the second.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from conftest import Wire
from fake_tps import FakeOptions, FakeTPS
from tpsharness.protocol import RegisterReply, private_data_request, register_request, reply

OK, NOT_FOUND, BAD = reply(200), reply(404), reply(400)
Connect = Callable[[], Wire]


@pytest.fixture
def field_fake() -> Iterator[FakeTPS]:
    server = FakeTPS(profile="field")
    with server.start_in_thread():
        yield server


@pytest.fixture
def field(field_fake: FakeTPS) -> Iterator[Connect]:
    opened: list[Wire] = []

    def connect() -> Wire:
        opened.append(Wire(field_fake.address))
        return opened[-1]

    yield connect
    for connection in opened:
        connection.close()


@pytest.fixture
def default(fake: FakeTPS, wire: Callable[..., Wire]) -> Connect:
    return wire


def registered(connect: Connect, serial: str) -> Wire:
    device = connect()
    device.send(register_request(serial))
    answer = device.message()
    assert isinstance(answer, RegisterReply) and answer.ok, answer
    return device


def received(device: Wire, size: int) -> bytes:
    """Exactly ``size`` bytes relayed to ``device`` (TimeoutError if they do not come)."""
    data = b""
    while len(data) < size:
        data += device.raw()
    return data


def register_with(body: bytes) -> bytes:
    return register_request("unused", body=body)


def register_json(serial: bytes = b'"cam-j"', header: bytes = b'"MessageType": "MSG_TRANSPROXY_REGISTER_REQ", '
                  b'"TerminalType": "Camera"') -> bytes:
    return b'{"TransProxy": {"Header": {' + header + b'}, "Body": {"SerialNumber": ' + serial + b'}}}'


# -- rule 1: the read is text up to its first NUL -----------------------------------------------

def test_rule_1_a_nul_before_destuuid_hides_it(field: Connect) -> None:
    registered(field, "cam-1")
    client = field()
    client.send(b"POST /PrivateData HTTP/1.1\r\nSrcUuid: app\r\n\x00DestUuid: cam-1\r\n\r\n")
    assert client.raw() == BAD


def test_rule_1_the_bytes_after_a_nul_are_still_relayed(field: Connect) -> None:
    device = registered(field, "cam-1")
    client = field()
    request = private_data_request("app", "cam-1", b"\x00hidden DestUuid: other\r\n\x00\xff")
    client.send(request)
    assert client.raw() == OK
    assert received(device, len(request)) == request


# -- rule 2: register or private data, by substring ----------------------------------------------

def test_rule_2_post_transproxy_inside_a_private_data_body_makes_it_a_register(field: Connect) -> None:
    device = registered(field, "cam-1")
    client = field()
    client.send(private_data_request("app", "cam-1", b"POST /TransProxy HTTP/1.1\r\n"))
    assert client.raw() == BAD          # a register whose body is no JSON
    assert device.silent(0.2)


def test_default_a_private_data_body_is_only_a_body(default: Connect) -> None:
    device = registered(default, "cam-1")
    client = default()
    request = private_data_request("app", "cam-1", b"POST /TransProxy HTTP/1.1\r\n")
    client.send(request)
    assert client.raw() == OK and received(device, len(request)) == request


def test_rule_2_the_request_line_is_not_checked_beyond_the_substring(field: Connect) -> None:
    device = registered(field, "cam-1")
    client = field()
    request = b"junk POST /PrivateDataXYZ HTTP/9.9\r\nSrcUuid: app\r\nDestUuid: cam-1\r\n\r\nhi"
    client.send(request)
    assert client.raw() == OK and received(device, len(request)) == request


def test_default_a_request_line_must_be_post_and_a_known_path(default: Connect) -> None:
    client = default()
    client.send(b"junk POST /PrivateDataXYZ HTTP/9.9\r\nSrcUuid: app\r\nDestUuid: cam-1\r\n\r\nhi")
    assert client.raw() == BAD


def test_rule_2_a_read_with_neither_is_unrecognised_and_cuts_the_idle_timeout(field_fake: FakeTPS,
                                                                              field: Connect) -> None:
    field_fake.configure(bad_request_idle_timeout=0.3)
    client = field()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert client.raw() == BAD
    assert client.closed_by_server(timeout=5)
    assert field_fake.stats.idle_closed == 1


# -- rule 3: the register ------------------------------------------------------------------------

WRONG_LENGTH = re.sub(rb"Content-Length: \d+", b"Content-Length: 5", register_request("cam-cl"))

def test_rule_3_content_length_is_ignored(field_fake: FakeTPS, field: Connect) -> None:
    device = field()
    device.send(WRONG_LENGTH)
    assert isinstance(device.message(), RegisterReply)
    assert field_fake.registered() == {"cam-cl"}


def test_default_content_length_frames_the_body(fake: FakeTPS, default: Connect) -> None:
    device = default()
    device.send(WRONG_LENGTH)
    assert device.message().status == 400
    assert fake.registered() == set()


def test_rule_3_what_follows_the_first_json_value_is_ignored(field_fake: FakeTPS, field: Connect) -> None:
    device = field()
    device.send(register_with(register_json() + b" trailing junk {"))
    assert isinstance(device.message(), RegisterReply)
    assert field_fake.registered() == {"cam-j"}


def test_default_a_register_body_must_be_json_and_nothing_more(default: Connect) -> None:
    device = default()
    device.send(register_with(register_json() + b" trailing junk {"))
    assert device.raw() == BAD


@pytest.mark.parametrize("serial, as_text", [(b"4242", "4242"), (b"-1.50", "-1.50"), (b"true", "true"),
                                             (b"false", "false")])
def test_rule_3_a_numeric_or_boolean_serial_is_read_as_its_text(field_fake: FakeTPS, field: Connect,
                                                                serial: bytes, as_text: str) -> None:
    device = field()
    device.send(register_with(register_json(serial)))
    assert isinstance(device.message(), RegisterReply)
    assert field_fake.registered() == {as_text}
    client = field()
    client.send(private_data_request("app", as_text, b"to " + serial))
    assert client.raw() == OK


@pytest.mark.parametrize("serial", [b"null", b'""'])
def test_rule_3_a_null_or_empty_serial_gets_200_and_is_not_entered(field_fake: FakeTPS, field: Connect,
                                                                    serial: bytes) -> None:
    device = field()
    device.send(register_with(register_json(serial)))
    answer = device.message()
    assert isinstance(answer, RegisterReply) and answer.ok
    assert field_fake.registered() == set()
    assert not device.closed_by_server(0.1)


def test_rule_3_an_empty_serial_on_a_registered_connection_is_a_second_unknown_serial(
        field_fake: FakeTPS, field: Connect) -> None:
    """As the field server does it: the table's rule comes first (it then crashed on
    the dangling first serial; the profile forgets it)."""
    device = registered(field, "cam-1")
    device.send(register_with(register_json(b'""')))
    assert device.closed_by_server() and device.reader.buffered == 0
    assert field_fake.registered() == set()


def test_default_a_null_serial_gets_400(default: Connect) -> None:
    device = default()
    device.send(register_with(register_json(b"null")))
    assert device.raw() == BAD


@pytest.mark.parametrize("body", [
    register_json(header=b'"MessageType": "MSG_TRANSPROXY_REGISTER_REQ"'),       # no TerminalType
    register_json(header=b'"TerminalType": "Camera"'),                           # no MessageType
    b'{"TransProxy": {"Header": {"MessageType": "MSG_TRANSPROXY_REGISTER_REQ", "TerminalType": "C"}, '
    b'"Body": {}}}',                                                              # no SerialNumber
    register_json(header=b'"MessageType": "MSG_TRANSPROXY_REGISTER_RSP", "TerminalType": "Camera"'),
    b"not json",
], ids=["no TerminalType", "no MessageType", "no SerialNumber", "another MessageType", "not JSON"])
def test_rule_3_a_register_without_what_it_needs_gets_400_and_keeps_the_idle_timeout(
        field_fake: FakeTPS, field: Connect, body: bytes) -> None:
    device = field()
    assert_keeps_the_idle_timeout(field_fake, field, device, register_with(body))
    assert field_fake.registered() == set()


def assert_keeps_the_idle_timeout(server: FakeTPS, connect: Connect, refused: Wire, data: bytes) -> None:
    """``data`` gets 400 on ``refused`` and leaves its idle timeout alone: a connection
    given unrecognised input at the same moment has its timeout cut and is closed, and
    ``refused`` is still open then (a cut would have closed it in the same sweep)."""
    server.configure(bad_request_idle_timeout=0.2)
    unrecognised = connect()
    refused.send(data)
    assert refused.raw() == BAD
    unrecognised.send(b"GET / HTTP/1.1\r\n\r\n")
    assert unrecognised.raw() == BAD
    assert unrecognised.closed_by_server(timeout=5)
    assert not refused.closed_by_server(0.1)      # only unrecognised input cuts it (rule 2)


def test_default_a_register_without_a_terminal_type_gets_400_too(default: Connect) -> None:
    device = default()
    device.send(register_with(register_json(header=b'"MessageType": "MSG_TRANSPROXY_REGISTER_REQ"')))
    assert device.raw() == BAD


@pytest.mark.parametrize("serial, as_text", [(b'"tab\there"', "tab\there"), (b'/* a comment */ "cam-c"', "cam-c"),
                                             (b'// to the end of the line\n "cam-l"', "cam-l")],
                         ids=["a raw tab", "a block comment", "a line comment"])
def test_rule_3_the_json_is_read_as_leniently_as_jsoncpp_does(field_fake: FakeTPS, field: Connect,
                                                             serial: bytes, as_text: str) -> None:
    """Control characters inside strings, and comments where a value begins: the public
    C++ field server (jsoncpp's reader) registers these; Python's json alone refuses them."""
    device = field()
    device.send(register_with(register_json(serial)))
    assert isinstance(device.message(), RegisterReply)
    assert field_fake.registered() == {as_text}


@pytest.mark.parametrize("serial", [b'"cam-a" /* after the value */', b'"cam-a" // after the value\n'])
def test_rule_3_a_comment_after_a_value_gets_400_as_jsoncpp_refuses_it(field_fake: FakeTPS, field: Connect,
                                                                     serial: bytes) -> None:
    device = field()
    device.send(register_with(register_json(serial)))
    assert device.raw() == BAD
    assert field_fake.registered() == set()


def test_default_a_comment_in_the_register_json_gets_400(default: Connect) -> None:
    device = default()
    device.send(register_with(register_json(b'/* a comment */ "cam-c"')))
    assert device.raw() == BAD


def test_default_a_refused_request_keeps_the_idle_timeout(fake: FakeTPS, default: Connect) -> None:
    """docs/protocol.md section 4: only unrecognised input cuts it, as on a field server."""
    device = default()
    assert_keeps_the_idle_timeout(fake, default, device, private_data_request("app", "", b"x"))


def test_rule_3_a_register_read_without_a_blank_line_gets_400(field: Connect) -> None:
    device = field()
    device.send(b"POST /TransProxy HTTP/1.1\r\nContent-Length: 10\r\n")
    assert device.raw() == BAD


@pytest.mark.parametrize("serial", [b'{"a": 1}', b"[1, 2]"])
def test_rule_3_where_the_field_server_asserts_an_object_or_array_serial_gets_400(
        field_fake: FakeTPS, field: Connect, serial: bytes) -> None:
    device = field()
    device.send(register_with(register_json(serial)))
    assert device.raw() == BAD
    assert field_fake.registered() == set()


def test_rule_3_the_table_rules_follow_a_second_unknown_serial_closes_and_forgets_both(
        field_fake: FakeTPS, field: Connect) -> None:
    device = registered(field, "cam-1")
    device.send(register_request("cam-2"))
    assert device.closed_by_server() and device.reader.buffered == 0
    assert field_fake.registered() == set()
    client = field()
    client.send(private_data_request("app", "cam-1", b"to the old serial"))
    assert client.raw() == NOT_FOUND


# -- rule 4: DestUuid and SrcUuid, found anywhere -------------------------------------------------

def test_rule_4_destuuid_in_the_body_counts_when_the_header_is_absent(field: Connect) -> None:
    device = registered(field, "cam-1")
    client = field()
    request = b"POST /PrivateData HTTP/1.1\r\nSrcUuid: app\r\nContent-Length: 17\r\n\r\nDestUuid: cam-1\r\n"
    client.send(request)
    assert client.raw() == OK and received(device, len(request)) == request


def test_default_destuuid_must_be_a_header(default: Connect) -> None:
    registered(default, "cam-1")
    client = default()
    client.send(b"POST /PrivateData HTTP/1.1\r\nSrcUuid: app\r\nContent-Length: 17\r\n\r\nDestUuid: cam-1\r\n")
    assert client.raw() == BAD


def test_rule_4_header_names_match_exactly(field: Connect) -> None:
    registered(field, "cam-1")
    client = field()
    client.send(b"POST /PrivateData HTTP/1.1\r\nsrcuuid: app\r\ndestuuid: cam-1\r\n\r\n")
    assert client.raw() == BAD


def test_default_header_names_match_in_any_case(default: Connect) -> None:
    device = registered(default, "cam-1")
    client = default()
    request = b"POST /PrivateData HTTP/1.1\r\nsrcuuid: app\r\ndestuuid: cam-1\r\ncontent-length: 0\r\n\r\n"
    client.send(request)
    assert client.raw() == OK and received(device, len(request)) == request


def test_rule_4_the_value_is_after_spaces_up_to_the_crlf(field: Connect) -> None:
    device = registered(field, "cam-1")
    client = field()
    request = b"POST /PrivateData HTTP/1.1\r\nSrcUuid:app\r\nDestUuid:    cam-1\r\n\r\n"
    client.send(request)
    assert client.raw() == OK and received(device, len(request)) == request
    client.send(b"POST /PrivateData HTTP/1.1\r\nSrcUuid: app\r\nDestUuid:\tcam-1\r\n\r\n")
    assert client.raw() == NOT_FOUND        # a tab is part of the value
    client.send(b"POST /PrivateData HTTP/1.1\r\nSrcUuid: app\r\nDestUuid: cam-1 \r\n\r\n")
    assert client.raw() == NOT_FOUND        # so is a trailing space


@pytest.mark.parametrize("data", [
    b"POST /PrivateData HTTP/1.1\r\nSrcUuid: app\r\nDestUuid: cam-1",     # no CRLF after it
    b"POST /PrivateData HTTP/1.1\r\nDestUuid: cam-1\r\n\r\n",              # no SrcUuid
    b"POST /PrivateData HTTP/1.1\r\nSrcUuid: app\r\n\r\n",                 # no DestUuid
], ids=["no CRLF after DestUuid", "no SrcUuid", "no DestUuid"])
def test_rule_4_a_missing_uuid_gets_400(field: Connect, data: bytes) -> None:
    registered(field, "cam-1")
    client = field()
    client.send(data)
    assert client.raw() == BAD


def test_rule_4_an_unknown_destination_gets_404_and_claims_nothing(field_fake: FakeTPS, field: Connect) -> None:
    device = registered(field, "cam-1")
    client = field()
    client.send(private_data_request("cam-1", "nobody", b"x"))
    assert client.raw() == NOT_FOUND
    assert field_fake.registered() == {"cam-1"} and device.silent(0.2)


def test_rule_4_a_message_to_its_own_connection_gets_400_and_keeps_the_idle_timeout(
        field_fake: FakeTPS, field: Connect) -> None:
    device = registered(field, "cam-1")
    assert_keeps_the_idle_timeout(field_fake, field, device, private_data_request("cam-1", "cam-1", b"x"))
    assert device.reader.buffered == 0


def test_rule_4_the_table_is_looked_at_before_the_sender_claims_its_srcuuid(field_fake: FakeTPS,
                                                                            field: Connect) -> None:
    """A registered device that writes to its own serial under a SrcUuid not yet its own:
    the message is not to itself as the table stood, so the claim, 200 and the relay
    back to it follow (as on the public C++ field server)."""
    device = registered(field, "cam-1")
    request = private_data_request("new-src", "cam-1", b"back to me")
    device.send(request)
    assert received(device, len(OK) + len(request)) == OK + request
    assert field_fake.registered() == {"cam-1", "new-src"}


@pytest.mark.parametrize("profile", ["field", "default"])
def test_a_claimed_srcuuid_is_the_serial_of_a_connection_that_had_none(profile: str) -> None:
    """Section 1's table, as the public C++ field server keeps it: a connection that
    sent private data under SrcUuid X then registering an unknown Y is a second,
    unknown serial (closed); registering X is its heartbeat."""
    server = FakeTPS(profile=profile)
    with server.start_in_thread():
        device = registered(lambda: Wire(server.address), "cam-1")
        for serial, closed in (("other-serial", True), ("app-x", False)):
            client = Wire(server.address)
            client.send(private_data_request("app-x", "cam-1", b"hi"))
            assert client.raw() == OK
            client.send(register_request(serial))
            if closed:
                assert client.closed_by_server() and client.reader.buffered == 0
            else:
                answer = client.message()
                assert isinstance(answer, RegisterReply) and answer.ok
            client.close()
        device.close()


# -- rule 5: the whole read goes to the first destination ----------------------------------------

def test_rule_5_the_whole_read_goes_to_the_first_destination(field: Connect) -> None:
    first, second = registered(field, "cam-1"), registered(field, "cam-2")
    client = field()
    data = private_data_request("app", "cam-1", b"one") + private_data_request("app", "cam-2", b"two")
    client.send(data)
    assert client.raw() == OK                        # one ack for the read
    assert received(first, len(data)) == data
    assert second.silent(0.2)


def test_default_pipelined_requests_go_each_to_its_own_destination(default: Connect) -> None:
    first, second = registered(default, "cam-1"), registered(default, "cam-2")
    client = default()
    one, two = private_data_request("app", "cam-1", b"one"), private_data_request("app", "cam-2", b"two")
    client.send(one + two)
    assert [client.message().status for _ in range(2)] == [200, 200]
    assert received(first, len(one)) == one and received(second, len(two)) == two


def test_rule_5_a_private_data_split_after_its_headers_relays_the_header_part_alone(field: Connect) -> None:
    device = registered(field, "cam-1")
    client = field()
    request = private_data_request("app", "cam-1", b"the body")
    head = request[:request.index(b"\r\n\r\n") + 4]
    client.send(head)
    assert client.raw() == OK and received(device, len(head)) == head
    client.send(b"the body")
    assert client.raw() == BAD                       # the body's read is unrecognised
    assert device.silent(0.2)


def test_rule_5_a_4097_byte_private_data_to_an_unknown_uuid_is_a_404_then_a_400(field: Connect) -> None:
    client = field()
    head = len(private_data_request("app", "nobody", b"p" * 4000)) - 4000
    request = private_data_request("app", "nobody", b"p" * (4097 - head))
    assert len(request) == 4097
    client.send(request)
    assert received(client, len(NOT_FOUND) + len(BAD)) == NOT_FOUND + BAD


# -- rule 6: anything else is discarded; the connection stays ------------------------------------

def test_rule_6_a_refused_read_is_discarded_and_the_connection_stays(field_fake: FakeTPS, field: Connect) -> None:
    device = field()
    device.send(b"POST /TransProxy HTTP/1.1\r\n\r\n{broken")
    assert device.raw() == BAD
    device.send(register_request("cam-after"))
    assert isinstance(device.message(), RegisterReply)
    assert field_fake.registered() == {"cam-after"}


# -- the faces ---------------------------------------------------------------------------------

def test_the_old_fault_name_selects_the_profile() -> None:
    options = FakeOptions(faults=["one-read-one-message", "silent"])
    assert options.profile == "field" and options.faults == {"silent"}
    server = FakeTPS(faults=["one-read-one-message"])
    try:
        assert server.profile == "field" and server.faults == frozenset()
    finally:
        server.close()


def test_the_profile_and_strict_http_are_refused_together() -> None:
    with pytest.raises(ValueError, match="strict_http"):
        FakeTPS(profile="field", strict_http=True)
    with pytest.raises(ValueError, match="profile must be one of default, field"):
        FakeTPS(profile="fieldish")


def test_python_m_fake_tps_has_the_profile_and_notes_the_old_name() -> None:
    shown = subprocess.run([sys.executable, "-m", "fake_tps", "--help"], capture_output=True, text=True,
                           timeout=30).stdout
    assert "--profile {default,field}" in shown
    assert "one-read-one-message     the old name of --profile field" in shown
    process = subprocess.Popen([sys.executable, "-m", "fake_tps", "--port", "0", "--fault",
                                "one-read-one-message"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(b"POST /PrivateData HTTP/1.1\r\nSrcUuid: app\r\nContent-Length: 20\r\n\r\n"
                           b"DestUuid: nobody\r\n")
            assert client.recv(1000) == NOT_FOUND     # the field rules: found in the body
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.slow
def test_the_fuzz_benchmark_row_fuzzes_the_profile_against_the_field_model_and_finds_nothing() -> None:
    from pathlib import Path
    bench = Path(__file__).parent / "bench" / "bench_fuzz.py"
    done = subprocess.run([sys.executable, str(bench), "--field-profile", "--seconds", "2", "--seeds", "1"],
                          capture_output=True, text=True, timeout=25)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^field profile seed 1: +\d+ programs .* 0 findings", done.stdout, re.M), done.stdout


def test_the_field_model_compares_a_relay_longer_than_one_read_by_that_read() -> None:
    """A cut field read is completed, on the device's side, by whatever arrives next
    (here a register reply, whose UtcTime differs between the model's run and the
    server's): only its first 4096 bytes are the server's doing."""
    from tpsharness.fuzz.compare import first_difference
    from tpsharness.fuzz.observations import Relay, Seen

    cut = private_data_request("app", "cam-1", b"p" * 5000)[:4096]
    model = Seen([Relay(cut + b"UtcTime 1795545036" + b"x" * 900)])
    server = Seen([Relay(cut + b"UtcTime 1795545037" + b"x" * 900)])
    assert first_difference([{"cam1": model}], [{"cam1": server}], "cam1", exact_tails=False) is None
    assert first_difference([{"cam1": model}], [{"cam1": server}], "cam1") is not None
    other = Seen([Relay(cut[:-1] + b"?" + b"UtcTime 1795545036" + b"x" * 900)])
    assert first_difference([{"cam1": model}], [{"cam1": other}], "cam1", exact_tails=False) is not None
