"""docs/protocol.md section 2: acks, raw relay, 404, 400, replies back to the client."""

import pytest

from tpsharness.errors import UnknownDestination
from tpsharness.harness import Harness
from tpsharness.protocol import private_data_request, register_request


def test_private_data_is_acked_and_relayed_as_raw_bytes(tps: Harness) -> None:
    device = tps.device()
    raw = tps.raw()
    request = private_data_request("tpsharness-app-raw", device.uuid, b"exact bytes", host="tps.test")
    raw.send_raw(request)
    assert raw.next_reply().status == 200
    relayed = device.receive()
    assert relayed.raw == request, "the device got other bytes than the client sent"


def test_any_bytes_including_nul_are_relayed(tps: Harness) -> None:
    device = tps.device()
    payload = bytes(range(256)) + b"\r\n\r\n\x00"
    tps.client().send(device.uuid, payload)
    assert device.receive().body == payload


def test_unknown_dest_uuid_gets_404(tps: Harness) -> None:
    with pytest.raises(UnknownDestination):
        tps.client().send("tpsharness-never-registered", b"x")


def test_an_unknown_dest_uuid_claims_nothing_and_closes_nothing(tps: Harness) -> None:
    """docs/protocol.md section 1: the DestUuid is looked up first; a 404 changes nothing."""
    device = tps.device()
    raw = tps.raw()
    raw.send_raw(private_data_request(device.uuid, "tpsharness-never-registered", b"x"))
    assert raw.next_reply().status == 404
    assert not device.closed_by_server(timeout=0.5), "a 404 closed the device holding the SrcUuid"
    tps.client().send(device.uuid, b"still the device's")
    assert device.receive().body == b"still the device's", "the SrcUuid of a 404 was claimed"


def test_private_data_from_the_sender_to_itself_gets_400(tps: Harness) -> None:
    """docs/protocol.md section 1: SrcUuid and DestUuid both name the sending connection."""
    device = tps.device()
    device.send_raw(private_data_request(device.uuid, device.uuid, b"to myself"))
    reply = device.next_reply()
    assert reply.status == 400, f"answered {reply.status} {getattr(reply, 'reason', '')}"


BAD_REQUESTS = {
    "bad JSON": register_request("x", body=b"{this is not json"),
    "missing SerialNumber": register_request("x", body=(
        b'{"TransProxy": {"Header": {"MessageType": "MSG_TRANSPROXY_REGISTER_REQ", '
        b'"TerminalType": "Camera"}, "Body": {}}}')),
    "wrong MessageType": register_request("x", body=(
        b'{"TransProxy": {"Header": {"MessageType": "MSG_SOMETHING_ELSE", "TerminalType": "Camera"}, '
        b'"Body": {"SerialNumber": "x"}}}')),
    "a GET": b"GET / HTTP/1.1\r\nHost: tps\r\n\r\n",
    "PrivateData without DestUuid": b"POST /PrivateData HTTP/1.1\r\nSrcUuid: a\r\nContent-Length: 1\r\n\r\nx",
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_malformed_requests_get_400(tps: Harness, name: str) -> None:
    raw = tps.raw()
    raw.send_raw(BAD_REQUESTS[name])
    reply = raw.next_reply()
    assert reply.status == 400, f"{name}: answered {reply.status} {getattr(reply, 'reason', '')}"


def test_a_device_reply_reaches_the_client_by_its_srcuuid(tps: Harness) -> None:
    device = tps.device()
    client = tps.client()
    client.send(device.uuid, b"question")
    question = device.receive()
    assert question.src == client.uuid
    device.send(question.src, b"answer")
    assert client.receive().body == b"answer"
