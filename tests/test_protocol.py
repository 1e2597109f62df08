"""The protocol layer without sockets: exact bytes, framing, and h11 as the oracle."""

import json

import h11
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tpsharness.errors import MessageTooLarge, ProtocolError
from tpsharness.protocol import (NEED_DATA, BadRequest, PrivateData, PrivateDataTemplate, Reader,
                                 RegisterReply, RegisterRequest, Reply, StrictReader,
                                 private_data_request, register_reply, register_request, reply)

# -- exact bytes of docs/protocol.md ---------------------------------------------------------

REGISTER_SERIAL_PLACEHOLDER = (
    b'POST /TransProxy HTTP/1.1\r\nHost: 127.0.0.1:6604\r\nConnection: keep-alive\r\n'
    b'Content-Length: 189\r\n\r\n'
    b'{"TransProxy": {"Header": {"CSeq": "1", "MessageType": "MSG_TRANSPROXY_REGISTER_REQ", '
    b'"TerminalType": "Camera", "Version": "1.0"}, "Body": {"AuthCode": "0000", '
    b'"SerialNumber": "<serial>"}}}')

REGISTER_REPLY = (
    b'HTTP/1.1 200 OK\r\nContent-Encoding: UTF-8\r\nContent-Length: 305\r\nContent-Type: text/plain\r\n\r\n'
    b'{\n   "TransProxy" : {\n      "Body" : {\n         "KeepAliveIntervel" : "120",\n'
    b'         "UtcTime" : "1795545036"\n      },\n      "Header" : {\n         "ErrorNum" : "200",\n'
    b'         "ErrorString" : "Success OK",\n         "MessageType" : "MSG_TRANSPROXY_REGISTER_RSP",\n'
    b'         "Version" : "1.0"\n      }\n   }\n}\n')


def test_register_request_is_byte_for_byte_the_field_devices():
    assert register_request("<serial>") == REGISTER_SERIAL_PLACEHOLDER


def test_register_request_may_carry_the_field_devices_extra_crlf():
    assert register_request("<serial>", trailing_crlf=True) == REGISTER_SERIAL_PLACEHOLDER + b"\r\n"


def test_register_reply_is_byte_for_byte_the_field_servers():
    assert register_reply(utc_time=1795545036, keepalive_interval=120) == REGISTER_REPLY


@pytest.mark.parametrize("status, nul, strict, expected", [
    (200, False, False, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"),
    (404, False, False, b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\n"),
    (400, False, False, b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n"),
    (200, True, False, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n\x00"),
    (200, False, True, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"),
])
def test_private_data_replies_in_field_and_strict_form(status, nul, strict, expected):
    assert reply(status, nul=nul, strict=strict) == expected


def test_private_data_request_has_the_field_header_order_and_any_body_bytes():
    data = private_data_request("app", "cam", b"a\x00b")
    assert data == (b"POST /PrivateData HTTP/1.1\r\nHost: 127.0.0.1:6604\r\nAuthCode: 0000\r\n"
                    b"SrcUuid: app\r\nDestUuid: cam\r\nConnection: keep-alive\r\n"
                    b"Content-Length: 3\r\n\r\na\x00b")


def test_template_builds_the_same_bytes_as_the_builder():
    template = PrivateDataTemplate("app", "cam")
    assert template.build(b"payload") == private_data_request("app", "cam", b"payload")


def test_builders_refuse_header_values_with_line_breaks():
    with pytest.raises(ValueError, match="must not contain CR or LF"):
        private_data_request("app\r\nEvil: 1", "cam", b"")


# -- reading ---------------------------------------------------------------------------------

def read_all(data, reader=None):
    reader = reader or Reader()
    reader.feed(data)
    return list(reader)


def test_reader_reads_a_register_request():
    [message] = read_all(register_request("cam-1", cseq="7"))
    assert message == RegisterRequest("cam-1", "Camera", "0000", "7")


def test_reader_reads_a_register_reply_with_its_misspelled_keepalive():
    [message] = read_all(REGISTER_REPLY)
    assert message == RegisterReply("200", "Success OK", "120", "1795545036", 200)
    assert message.ok


def test_reader_reads_field_replies_as_ending_at_the_header_block():
    data = reply(200) + reply(404)
    assert [(m.status, m.reason) for m in read_all(data)] == [(200, "OK"), (404, "Not Found")]


def test_reader_consumes_the_older_builds_nul_after_a_field_reply():
    messages = read_all(reply(200, nul=True) + reply(400, nul=True))
    assert [m.status for m in messages] == [200, 400]


def test_reader_accepts_a_relayed_request_where_replies_were_expected():
    relayed = private_data_request("app", "cam", b"\x00binary\xff")
    messages = read_all(reply(200) + relayed)
    assert isinstance(messages[0], Reply)
    assert messages[1] == PrivateData("app", "cam", "0000", b"\x00binary\xff")
    assert messages[1].raw == relayed


def test_reader_accepts_headers_without_a_space_after_the_colon():
    data = (b"POST /PrivateData HTTP/1.1\r\nSrcUuid:app\r\nDestUuid:0000\r\nContent-Length:2\r\n"
            b"Port: 6604\r\n\r\nhi")
    assert read_all(data) == [PrivateData("app", "0000", "", b"hi")]


@pytest.mark.parametrize("data, reason", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "unsupported method GET"),
    (b"hello\r\n\r\n", "not an HTTP request line"),
    (b"POST /Other HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "unknown path"),
    (b"POST /PrivateData HTTP/1.1\r\nSrcUuid: a\r\nContent-Length: 0\r\n\r\n", "without DestUuid"),
    (b"POST /PrivateData HTTP/1.1\r\nDestUuid: a\r\nContent-Length: 0\r\n\r\n", "without SrcUuid"),
    (register_request("x", body=b"{not json"), "not the TransProxy JSON"),
    (register_request("x", body=json.dumps({"TransProxy": {"Header": {
        "MessageType": "MSG_OTHER", "TerminalType": "Camera"}, "Body": {"SerialNumber": "x"}}}).encode()),
     "MessageType is 'MSG_OTHER'"),
    (register_request("x", body=json.dumps({"TransProxy": {"Header": {
        "MessageType": "MSG_TRANSPROXY_REGISTER_REQ", "TerminalType": "Camera"}, "Body": {}}}).encode()),
     "without a SerialNumber"),
    (register_request("x", body=json.dumps({"TransProxy": {"Header": {
        "MessageType": "MSG_TRANSPROXY_REGISTER_REQ"}, "Body": {"SerialNumber": "x"}}}).encode()),
     "without a TerminalType"),
    *[(register_request("x", body=b'{"TransProxy": {"Header": {"MessageType": '
                                  b'"MSG_TRANSPROXY_REGISTER_REQ", "TerminalType": "Camera"}, '
                                  b'"Body": {"SerialNumber": %s}}}' % value),
       "without a SerialNumber string or number") for value in (b"true", b"null", b"{}", b"[]", b'""')],
])
def test_reader_classifies_unacceptable_requests_as_bad_requests(data, reason):
    [message] = read_all(data)
    assert isinstance(message, BadRequest)
    assert reason in message.reason


def test_a_bad_request_does_not_disturb_the_next_message():
    data = b"GET / HTTP/1.1\r\n\r\n" + register_request("cam")
    messages = read_all(data)
    assert isinstance(messages[0], BadRequest) and messages[1].serial == "cam"


def test_reader_skips_stray_crlf_between_messages():
    data = register_request("a", trailing_crlf=True) + b"\r\n" + register_request("b", trailing_crlf=True)
    assert [m.serial for m in read_all(data)] == ["a", "b"]


def test_reader_needs_more_data_for_a_partial_message():
    reader = Reader()
    reader.feed(register_request("cam")[:50])
    assert reader.next() is NEED_DATA


@pytest.mark.parametrize("data, match", [
    (b"POST /PrivateData HTTP/1.1\r\nContent-Length: ten\r\n\r\n", "is not a number"),
    (b"POST /PrivateData HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting"),
    (b"POST /PrivateData HTTP/1.1\r\nno colon here\r\n\r\n", "malformed header line"),
    (b"HTTP/1.1 2x0 OK\r\n\r\n", "malformed status line"),
    (b"\xff\xfe\r\n\r\n", "not ASCII"),
])
def test_unframeable_bytes_raise_protocolerror_quoting_them(data, match):
    with pytest.raises(ProtocolError, match=match) as caught:
        read_all(data)
    assert caught.value.data


def test_a_header_block_over_16_kib_is_refused():
    reader = Reader()
    reader.feed(b"POST /PrivateData HTTP/1.1\r\nX: " + b"a" * 17000)
    with pytest.raises(MessageTooLarge, match="no end of header block within 16384"):
        reader.next()


def test_a_body_over_the_maximum_is_refused_before_it_arrives():
    reader = Reader(max_body=1000)
    reader.feed(b"POST /PrivateData HTTP/1.1\r\nSrcUuid: a\r\nDestUuid: b\r\nContent-Length: 1001\r\n\r\n")
    with pytest.raises(MessageTooLarge, match="1001 bytes exceeds the limit of 1000"):
        reader.next()


def test_eof_in_the_middle_of_a_message_is_a_protocolerror():
    reader = Reader()
    reader.feed(register_request("cam")[:-5])
    assert reader.next() is NEED_DATA
    with pytest.raises(ProtocolError, match="closed in the middle of a message"):
        reader.eof()


def test_eof_after_whole_messages_and_filler_is_fine():
    reader = Reader()
    reader.feed(reply(200, nul=True) + b"\r\n")
    assert len(list(reader)) == 1
    reader.eof()


# -- the cache of parsed header blocks ----------------------------------------------------------

def test_a_reader_applies_its_own_body_limit_to_a_header_block_another_reader_cached():
    block = b"POST /PrivateData HTTP/1.1\r\nSrcUuid: a\r\nDestUuid: b\r\nContent-Length: 1001\r\n\r\n"
    roomy = Reader()
    roomy.feed(block + b"x" * 1001)
    assert roomy.next().body == b"x" * 1001
    strict = Reader(max_body=1000)
    strict.feed(block)
    with pytest.raises(MessageTooLarge, match="1001 bytes exceeds the limit of 1000"):
        strict.next()


def test_changing_a_replys_headers_does_not_change_the_next_identical_reply():
    reader = Reader()
    reader.feed(reply(200) * 2)
    first, second = list(reader)
    first.headers["content-type"] = "changed"
    assert second.headers == {"content-type": "text/plain"}


def test_the_header_cache_stays_bounded():
    from tpsharness import protocol
    reader = Reader()
    for n in range(protocol.HEAD_CACHE_SIZE * 3):
        reader.feed(b"HTTP/1.1 200 OK\r\nX-Count: %d\r\n\r\n" % n)
        assert reader.next().headers["x-count"] == str(n)
    reader.feed(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * protocol.HEAD_CACHE_BLOCK + b"\r\n\r\n")
    big = reader.next()
    assert len(protocol._HEAD_CACHE) <= protocol.HEAD_CACHE_SIZE
    assert all(len(block) <= protocol.HEAD_CACHE_BLOCK for block in protocol._HEAD_CACHE)
    assert big.headers["x-big"] == "a" * protocol.HEAD_CACHE_BLOCK


# -- the strict reader ------------------------------------------------------------------------

def test_strict_reader_reads_pipelined_requests():
    reader = StrictReader("server")
    reader.feed(register_request("a") + private_data_request("app", "a", b"xyz"))
    messages = list(reader)
    assert messages[0].serial == "a" and messages[1].body == b"xyz"


def test_strict_reader_rejects_the_stray_crlf_that_strict_http_forbids():
    reader = StrictReader("server")
    reader.feed(register_request("a", trailing_crlf=True) + register_request("b"))
    assert reader.next().serial == "a"
    with pytest.raises(ProtocolError, match="not strict HTTP/1.1"):
        reader.next()


def test_strict_reader_refuses_a_field_reply_it_cannot_frame():
    reader = StrictReader("client")
    reader.feed(reply(200))
    with pytest.raises(ProtocolError, match="no Content-Length"):
        reader.next()


def test_strict_reader_reads_strict_replies():
    reader = StrictReader("client")
    reader.feed(reply(200, strict=True) + REGISTER_REPLY)
    messages = list(reader)
    assert messages[0].status == 200 and messages[1].ok


def test_strict_reader_turns_h11_errors_into_protocolerror():
    reader = StrictReader("server")
    reader.feed(b"POST / HTTP/1.1\r\nbad header\r\n\r\n")
    with pytest.raises(ProtocolError):
        reader.next()


# -- properties ----------------------------------------------------------------------------------

uuids = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=24)
payloads = st.binary(max_size=3000)


@st.composite
def messages(draw):
    kind = draw(st.sampled_from(["register", "private", "reply", "nul_reply", "register_reply"]))
    if kind == "register":
        return register_request(draw(uuids), trailing_crlf=draw(st.booleans()))
    if kind == "private":
        return private_data_request(draw(uuids), draw(uuids), draw(payloads))
    if kind == "register_reply":
        return register_reply(utc_time=draw(st.integers(0, 2**32)))
    return reply(draw(st.sampled_from([200, 400, 404])), nul=kind == "nul_reply")


def split_points(data, draw_cuts):
    cuts = sorted(set(c for c in draw_cuts if 0 < c < len(data)))
    pieces, last = [], 0
    for cut in cuts:
        pieces.append(data[last:cut])
        last = cut
    pieces.append(data[last:])
    return pieces


@given(st.lists(messages(), min_size=1, max_size=6), st.lists(st.integers(0, 20000), max_size=12))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_any_split_or_batching_gives_the_same_messages_once_and_in_order(stream, cuts):
    whole = b"".join(stream)
    expected = read_all(whole)
    assert len(expected) == len(stream)
    reader = Reader()
    got = []
    for piece in split_points(whole, cuts):
        got.extend(read_all(piece, reader))
    assert got == expected
    assert [m.raw for m in got] == [m.raw for m in expected]
    reader.eof()


@given(st.binary(max_size=2000))
@settings(max_examples=300)
def test_garbage_gives_messages_protocolerror_or_need_data_never_another_exception(data):
    reader = Reader(max_body=10_000)
    reader.feed(data)
    try:
        for _ in reader:
            pass
    except ProtocolError:
        pass
    assert reader.buffered <= len(data)


@given(st.lists(st.binary(min_size=1, max_size=5000), max_size=10))
@settings(max_examples=50)
def test_buffering_is_bounded_for_a_peer_that_never_ends_its_headers(chunks):
    reader = Reader()
    try:
        reader.feed(b"POST /PrivateData HTTP/1.1\r\nX: ")
        for chunk in chunks:
            reader.feed(chunk.replace(b"\r", b"x").replace(b"\n", b"x"))     # never ends
            assert reader.next() is NEED_DATA
    except ProtocolError:
        return
    assert reader.buffered <= 16 * 1024 + 5000 + 64


token_chars = st.characters(whitelist_categories=(), whitelist_characters="abcdefghijklmnopqrstuvwxyz-")
header_names = st.text(alphabet=token_chars, min_size=1, max_size=12).filter(
    lambda n: n not in ("content-length", "transfer-encoding", "connection", "host", "srcuuid",
                        "destuuid", "authcode", "expect", "upgrade"))
header_values = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20)


@given(st.lists(st.tuples(header_names, header_values), max_size=5), uuids, uuids, payloads)
@settings(max_examples=200)
def test_fast_reader_agrees_with_h11_on_well_formed_requests(extra, src, dest, body):
    names = [n for n, _ in extra]
    assume(len(set(names)) == len(names))
    head = ["POST /PrivateData HTTP/1.1", "Host: tps", f"SrcUuid: {src}", f"DestUuid: {dest}"]
    head += [f"{n}: {v}" for n, v in extra] + [f"Content-Length: {len(body)}"]
    data = ("\r\n".join(head) + "\r\n\r\n").encode() + body

    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    event = conn.next_event()
    h11_body = b""
    while True:
        part = conn.next_event()
        if isinstance(part, h11.EndOfMessage):
            break
        h11_body += part.data
    h11_headers = {k.decode(): v.decode() for k, v in event.headers}

    [ours] = read_all(data)
    assert ours.src == h11_headers["srcuuid"] and ours.dest == h11_headers["destuuid"]
    assert ours.body == h11_body
    assert ours.raw == data
    [strict] = read_all(data, StrictReader("server"))
    assert strict == ours


@given(st.sampled_from([200, 400, 404]), st.binary(max_size=500),
       st.lists(st.tuples(header_names, header_values), max_size=4))
@settings(max_examples=200)
def test_fast_reader_agrees_with_h11_on_well_formed_replies(status, body, extra):
    names = [n for n, _ in extra]
    assume(len(set(names)) == len(names))
    head = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Nope'}"]
    head += [f"{n}: {v}" for n, v in extra] + [f"Content-Length: {len(body)}"]
    data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    [ours] = read_all(data)
    [theirs] = read_all(data, StrictReader("client"))
    assert (ours.status, ours.reason, ours.body) == (theirs.status, theirs.reason, theirs.body)
    assert ours.headers == theirs.headers


# -- field-faithful parsing and hostile input ---------------------------------------------------

FIELD_SIMULATOR_REGISTER = (
    b'{"TransProxy": {"Header": {"CSeq": 3, "MessageType": "MSG_TRANSPROXY_REGISTER_REQ", '
    b'"TerminalType": "Camera", "Version": "1.0"}, "Body": {"AuthCode": 4242, "SerialNumber": 4242}}}')


def test_a_register_with_numeric_fields_takes_their_decimal_text():
    [message] = read_all(register_request("unused", body=FIELD_SIMULATOR_REGISTER))
    assert message == RegisterRequest("4242", "Camera", "4242", "3")


@pytest.mark.parametrize("digits", [19, 4301, 10000])
def test_a_content_length_of_too_many_digits_is_too_large_not_a_valueerror(digits):
    reader = Reader()
    reader.feed(b"POST /PrivateData HTTP/1.1\r\nContent-Length: " + b"9" * digits + b"\r\n\r\n")
    with pytest.raises(MessageTooLarge, match=f"Content-Length of {digits} digits"):
        reader.next()


def test_leading_zeros_do_not_count_as_digits_of_a_content_length():
    data = b"POST /PrivateData HTTP/1.1\r\nSrcUuid: a\r\nDestUuid: b\r\nContent-Length: " + b"0" * 40 + b"2\r\n\r\nhi"
    assert read_all(data) == [PrivateData("a", "b", "", b"hi")]


HUGE = "M" * 1_000_000


@pytest.mark.parametrize("data", [
    register_request("x", body=json.dumps({"TransProxy": {"Header": {
        "MessageType": HUGE, "TerminalType": "Camera"}, "Body": {"SerialNumber": "x"}}}).encode()),
    b"POST /" + HUGE[:15000].encode() + b" HTTP/1.1\r\n\r\n",
    b"GET /" + HUGE[:15000].encode() + b" HTTP/1.1\r\n\r\n",
    b"POST" + HUGE[:15000].encode() + b"\r\n\r\n",
])
def test_a_bad_requests_reason_quotes_a_huge_field_by_a_short_prefix(data):
    [message] = read_all(data, Reader(max_body=2_000_000))
    assert isinstance(message, BadRequest)
    assert len(message.reason) < 200, message.reason[:300]


def test_a_content_length_that_is_not_a_number_is_quoted_short():
    reader = Reader()
    reader.feed(b"POST /PrivateData HTTP/1.1\r\nContent-Length: " + b"x" * 15000 + b"\r\n\r\n")
    with pytest.raises(ProtocolError, match="is not a number") as caught:
        reader.next()
    assert len(str(caught.value)) < 400


@pytest.mark.parametrize("data", [b"\x16\x03\x01\x02", b"GET", b"hello", b"\x00", b"\r\nPOSX", b"post "])
def test_requests_only_refuses_at_once_what_cannot_begin_a_request(data):
    reader = Reader(requests_only=True)
    reader.feed(data)
    with pytest.raises(ProtocolError, match="not an HTTP request line a TPS accepts"):
        reader.next()


@pytest.mark.parametrize("data", [b"P", b"POST", b"POST /Trans", b"\r\n\r\nPOS"])
def test_requests_only_waits_for_what_may_still_become_a_request(data):
    reader = Reader(requests_only=True)
    reader.feed(data)
    assert reader.next() is NEED_DATA


def test_requests_only_tolerates_the_crlf_after_a_body_and_checks_the_next_request():
    reader = Reader(requests_only=True)
    reader.feed(register_request("a", trailing_crlf=True) + register_request("b", trailing_crlf=True))
    assert [m.serial for m in reader] == ["a", "b"]
    assert reader.buffered == 0
    reader.feed(register_request("c") + b"GARBAGE")
    assert reader.next().serial == "c"
    with pytest.raises(ProtocolError):
        reader.next()
